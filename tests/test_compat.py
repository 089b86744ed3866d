"""What nas-bert 0.1.0 wrote still loads: a search run (architectures, supernet checkpoint, saved recipe) and
exported models, from tests/fixtures/v0_1_0 (written by commit 3128a70; see its README)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.runs import TINY_BUDGETS, run_stage
from omegaconf import OmegaConf
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification

from nas_bert.arch import Arch
from nas_bert.encoder import encoder_params
from nas_bert.inherit import inherit_from_supernet, load_supernet_checkpoint
from nas_bert.modeling.students import build_student, load_searched_arch
from nas_bert.stages.recipe import check_local_inputs
from nas_bert.stages.search import run_search
from nas_bert.stages.upgrade import upgrade_config

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "tests" / "fixtures" / "v0_1_0"


def test_old_architecture_files_load_in_their_space(tiny_space):
    for path in sorted((OLD / "search_run" / "architectures").glob("*.yaml")):
        arch = load_searched_arch(path, tiny_space)
        assert arch.meta["params"] == encoder_params(arch, 30522, 128)


def test_old_exported_models_load_and_compute_what_they_computed():
    reference = json.loads((OLD / "reference_outputs.json").read_text())
    inputs = {k: torch.tensor(reference[k]) for k in ("input_ids", "attention_mask")}
    mlm = AutoModelForMaskedLM.from_pretrained(OLD / "student_model").eval()
    classifier = AutoModelForSequenceClassification.from_pretrained(OLD / "finetuned_model").eval()
    with torch.no_grad():
        torch.testing.assert_close(mlm(**inputs).logits.sum(-1), torch.tensor(reference["mlm_logits_sum"]),
                                   rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(classifier(**inputs).logits, torch.tensor(reference["cls_logits"]))


def test_an_old_supernet_checkpoint_is_inherited_from():
    supernet = load_supernet_checkpoint(OLD / "search_run" / "checkpoints" / "last.ckpt")
    arch = Arch.load(OLD / "search_run" / "architectures" / "debug_40pct.yaml")
    student = build_student(arch, vocab_size=128, max_positions=32, head_dim=8)
    report = inherit_from_supernet(student, supernet)
    assert report["ops"] == sum(block.depth for block in arch.blocks)


def test_an_old_search_run_is_selected_from_and_its_recipe_reruns(tmp_path, tiny_teacher_dir, cache_dir):
    old = tmp_path / "old_run"
    shutil.copytree(OLD / "search_run", old)
    # 0.1 saved its recipe fully resolved, with the writer's paths (/tmp/compat, /tmp/base): each is overridden,
    # and its copy of the teacher at model.teacher follows teacher.* (relinked on upgrade)
    sample = ROOT / "data" / "corpus" / "wikitext-2-raw"
    moved = [f"teacher.name_or_path={tiny_teacher_dir}", f"teacher.tokenizer={tiny_teacher_dir}",
             f"data.tokenizer={tiny_teacher_dir}", f"paths.cache_dir={cache_dir}",
             f"search.latency.dir={cache_dir}/latency", f"data.cache_dir={cache_dir}/datasets",
             f"data.train_files={sample}/wiki.test.raw.gz", f"data.validation_files={sample}/wiki.valid.raw.gz"]
    run_stage(run_search, "config", tmp_path / "rerun", *moved, config_dir=old)
    rerun = sorted(p.stem for p in (tmp_path / "rerun" / "architectures").glob("*.yaml"))
    assert rerun == ["debug_40pct", "debug_90pct"]
    # the new code selects from the old supernet checkpoint
    run_stage(run_search, "search", tmp_path / "reselect", "space=tiny", "debug=fast", "logger=csv", TINY_BUDGETS,
              f"teacher.name_or_path={tiny_teacher_dir}", f"paths.cache_dir={cache_dir}", f"search.select_from={old}")
    assert sorted(p.stem for p in (tmp_path / "reselect" / "architectures").glob("*.yaml")) == [
        "debug_40pct", "debug_90pct"]


def test_an_old_recipe_whose_teacher_moved_names_every_setting_to_override(tmp_path, tiny_teacher_dir):
    cfg = OmegaConf.load(OLD / "search_run" / "config.yaml")
    cfg.paths.output_dir, cfg.teacher.name_or_path = str(tmp_path), str(tiny_teacher_dir)
    upgrade_config(cfg)
    assert cfg.model.teacher.name_or_path == str(tiny_teacher_dir)  # the copy follows the override
    with pytest.raises(FileNotFoundError) as err:
        check_local_inputs(cfg)
    named = {line.split("=")[0].strip() for line in str(err.value).splitlines() if line.startswith("  ")}
    assert named == {"teacher.tokenizer", "data.tokenizer", "model.teacher.tokenizer"}


def test_an_old_pretraining_recipe_keeps_its_loss():
    def objective(**model) -> str | None:
        cfg = OmegaConf.create({"model": {"_target_": "nas_bert.lit.PretrainDistillation", **model}})
        return upgrade_config(cfg).model.get("objective")

    assert objective(intermediate={"hidden_weight": 1.0}) == "both"
    assert objective(intermediate={"hidden_weight": 0.0}) == "prediction" and objective() == "prediction"
    assert objective(objective="representation") == "representation"  # a new recipe is left alone
    old = OmegaConf.create({"model": {"_target_": "nas_bert.lit.PretrainDistillation",
                                      "intermediate": {"hidden_weight": 1.0}}})
    intermediate = upgrade_config(old).model.intermediate  # 0.1's hidden term, not today's defaults
    assert intermediate.hidden_loss == "mse" and intermediate.embedding_weight == 0.0
