"""The training stages in process (what `python train.py` calls) on a tiny teacher: pre-training KD of a searched
architecture and of its equal-size baseline, `stage=fit`, GLUE / SQuAD fine-tuning with KD, and their errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from helpers.runs import GLUE, SQUAD, TINY_BUDGETS, run_stage, tiny
from huggingface_hub import ModelCard
from transformers import AutoModelForMaskedLM, AutoTokenizer

from nas_bert.arch import Arch
from nas_bert.encoder import encoder_params
from nas_bert.modeling.students import build_student, uniform_arch
from nas_bert.reports.model_card import read_record, update_card
from nas_bert.stages.finetune import run_finetune
from nas_bert.stages.fit import run_fit
from nas_bert.stages.pretrain import run_pretrain
from nas_bert.stages.search import run_search

pytestmark = pytest.mark.slow  # whole stages, end to end


@pytest.fixture(scope="module")
def outputs(tmp_path_factory, tiny_teacher_dir, cache_dir) -> Path:
    """A tiny search (outputs/search/latest) for the pre-training runs to read."""
    root = tmp_path_factory.mktemp("outputs")
    run_stage(run_search, "search", root / "search" / "runs" / "a", *tiny(tiny_teacher_dir, cache_dir, TINY_BUDGETS),
              log_dir=root)
    return root


def pretrain(outputs: Path, name: str, teacher: Path, cache: Path, *overrides: str) -> Path:
    run = outputs / "train" / "runs" / name
    run_stage(run_pretrain, "train", run, *tiny(teacher, cache, "student.budget=debug_40pct",
                                                "student.max_positions=128", *overrides), log_dir=outputs)
    return run


@pytest.fixture(scope="module")
def student(outputs, tiny_teacher_dir, cache_dir) -> Path:
    """Stage 3 on stage 2's output (`student.search_run` = outputs/search/latest) with the paper's objective, ONNX
    export and W&B; the teacher's MLM head is fitted anew (and cached for the runs after it)."""
    return pretrain(outputs, "student", tiny_teacher_dir, cache_dir, "export_onnx=true", "logger=default",
                    "mlm_head.refit=true", "model.objective=prediction", "student.init=scratch")


def test_pretraining_exports_a_model_that_loads_with_from_pretrained(outputs, student):
    run = student
    assert json.loads((run / "mlm_head.json").read_text())["mlm_head"] == "fitted"  # the tiny teacher has none
    assert (run / "model" / "model.onnx").is_file() and list((run / "wandb").glob("offline-run-*"))
    model = AutoModelForMaskedLM.from_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    arch = Arch.load(outputs / "search" / "latest" / "architectures" / "debug_40pct.yaml")
    params = sum(p.numel() for p in model.nas_bert.parameters())
    assert params == encoder_params(arch, 30522, 128) == arch.meta["params"]
    assert model(**tokenizer(["a compressed model"], return_tensors="pt")).logits.shape[-1] == len(tokenizer)
    card = ModelCard.load(run / "model" / "README.md")  # written from the run's records
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "fill-mask"
    record = read_record(run / "model")
    assert record["size"]["params"] == arch.meta["params"] and record["latency"]["measured_ms"] > 0
    assert record["latency"]["predicted_ms"] == arch.meta["predicted_latency_ms"]
    assert record["architecture"]["blocks"] == [b.to_dict() for b in arch.blocks]
    assert record["recipe"]["steps"] > 0 and record["recipe"]["objective"] in card.text
    (log,) = (run / "wandb").glob("offline-run-*/run-*.wandb")  # the export went to W&B as a model artifact
    assert b"model-student" in log.read_bytes() and b"model.safetensors" in log.read_bytes()


def test_a_student_inherits_the_supernet_and_distils_representations_for_a_token_budget(
        outputs, tiny_teacher_dir, cache_dir):
    """A teacher without its own MLM head: objective auto = representation (no head fitted); init supernet = the
    supernet's weights; `tokens` sets the steps (32 sequences x 128 tokens per step: 4), over the 64 sequences
    read twice: the teacher's states are computed in the first pass and read from the cache in the second."""
    budget = ("tokens=16384", "data.batch_size=32", "trainer.max_steps=100", "student.init=supernet")
    run = pretrain(outputs, "inherit", tiny_teacher_dir, cache_dir, *budget)
    assert json.loads((run / "mlm_head.json").read_text())["mlm_head"].startswith("not used")
    init = json.loads((run / "student_init.json").read_text())
    arch = Arch.load(outputs / "search" / "latest" / "architectures" / "debug_40pct.yaml")
    assert init["init"] == "supernet" and init["ops"] == sum(b.depth for b in arch.blocks)
    supernet = outputs / "search" / "runs" / "a" / "checkpoints" / "last.ckpt"
    assert Path(init["checkpoint"]).resolve() == supernet.resolve()
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert max(steps) == 3 and any(r.get("train/embedding") for r in rows) and not any(r.get("train/mlm") for r in rows)
    rates = [float(r["train/teacher_cache_hit_rate"]) for r in rows if r.get("train/teacher_cache_hit_rate")]
    assert rates[-1] >= 0.5  # (at least) the second pass over the 64 sequences read them all from the cache


def test_equal_size_baseline_pretrains_with_the_same_recipe(outputs, tiny_teacher_dir, cache_dir):
    run = pretrain(outputs, "baseline", tiny_teacher_dir, cache_dir, "student.baseline={layers: 2, hidden: null}")
    config = json.loads((run / "model" / "config.json").read_text())
    target = Arch.load(outputs / "search" / "latest" / "architectures" / "debug_40pct.yaml").meta["params"]
    ours = encoder_params(Arch.from_dict(config["arch"]), 30522, 128)
    assert config["layers"] == [f"{op}_{config['hidden_size']}" for op in ("mha", "ffn")] * 2
    for other in (config["hidden_size"] - 8, config["hidden_size"] + 8):  # the closest width (head_dim 8)
        alt = encoder_params(Arch.from_dict({"blocks": [{"hidden": other, "ops": ["mha", "ffn"] * 2}]}), 30522, 128)
        assert abs(ours - target) <= abs(alt - target)


def test_a_missing_architecture_or_budget_names_the_fix(outputs, tiny_teacher_dir, cache_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="python search.py"):
        pretrain(tmp_path, "x", tiny_teacher_dir, cache_dir, "student.arch_file=/no/arch.yaml")
    with pytest.raises(FileNotFoundError, match="budget 'nope'.*debug_40pct, debug_90pct"):
        pretrain(outputs, "y", tiny_teacher_dir, cache_dir, "student.budget=nope")
    with pytest.raises(ValueError, match="student.init"):
        pretrain(outputs, "z", tiny_teacher_dir, cache_dir, "student.init=pretrained")


def test_stage_fit_fits_the_configured_module(tmp_path, tiny_teacher_dir, cache_dir):
    run = tmp_path / "fit"
    run_stage(run_fit, "train", run, *tiny(tiny_teacher_dir, cache_dir), "stage=fit", "model=supernet",
              "callbacks=supernet")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["stage"] == "fit"


def finetune(root: Path, name: str, teacher: Path, cache: Path, *overrides: str) -> dict:
    run = root / "finetune" / "runs" / name
    run_stage(run_finetune, "train", run, *tiny(teacher, cache, *overrides), log_dir=root)
    return json.loads((run / "results.json").read_text())


@pytest.fixture(scope="module")
def glue_teacher(tmp_path_factory, tiny_teacher_dir, cache_dir) -> Path:
    """The teacher fine-tuned on RTE (GLUE-server predictions on), kept where glue_students looks for it."""
    root = tmp_path_factory.mktemp("glue")
    finetune(root, "teacher_rte", tiny_teacher_dir, cache_dir, "experiment=glue_teacher", "data/glue=local",
             f"data.data_dir={GLUE}", "data.task=rte", "finetune.predict_test=true", "logger=default")
    return root


def test_teacher_fine_tuning_exports_it_and_writes_glue_server_files(glue_teacher):
    assert (glue_teacher / "finetune" / "teachers" / "rte" / "model" / "config.json").is_file()
    run = glue_teacher / "finetune" / "runs" / "teacher_rte"
    assert (run / "glue_submission" / "RTE.tsv").read_text().startswith("index\tprediction\n")
    assert list((run / "wandb").glob("offline-run-*"))


def test_students_with_kd_fill_the_summary(glue_teacher, tiny_teacher_dir, cache_dir):
    student_dir = glue_teacher / "nas-bert-1m" / "model"
    build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16).save_pretrained(student_dir)
    update_card(student_dir, model_name="nas-bert-1m", base_model="org/teacher")  # as pre-training leaves it
    result = finetune(glue_teacher, "student_rte", tiny_teacher_dir, cache_dir, "experiment=glue_students",
                      "data/glue=local", f"data.data_dir={GLUE}", "data.task=rte", f"finetune.model_path={student_dir}")
    scored = {(r["task"], r["metric"]) for r in read_record(student_dir)["results"]}  # the source's card gains it
    assert ("rte", "accuracy") in scored and not any("loyalty" in metric for _, metric in scored)
    card = ModelCard.load(glue_teacher / "finetune" / "runs" / "student_rte" / "model" / "README.md")
    assert card.data.base_model == "org/teacher" and card.data.pipeline_tag == "text-classification"
    tuned = read_record(glue_teacher / "finetune" / "runs" / "student_rte" / "model")
    assert tuned["architecture"]["blocks"][0]["hidden"] == 32 and tuned["size"]["params"] == result["params"]
    assert {r.metric_type for r in card.data.eval_results} >= {"accuracy"}
    assert result["model"] == "nas-bert-1m" and result["kd"] and result["params"] < 1.2e6
    assert "glue/rte/label_loyalty" in result["best"]
    summary = (glue_teacher / "finetune" / "summary.md").read_text().splitlines()
    assert summary[0].split(" | ")[:4] == ["| model", "params (M)", "rte", "GLUE avg"] and len(summary) == 4


def test_a_fine_tuned_student_is_scored_quantized_and_trained_quantization_aware(glue_teacher, tiny_teacher_dir,
                                                                                    cache_dir):
    """The pipeline's chain: fp32 fine-tuning, post-training quantized scores (stage ptq), then QAT with KD."""
    import onnx
    import torch

    from nas_bert.modeling.lsq import LsqLinear
    from nas_bert.modeling.onnx_export import check_onnx, export_onnx, load_pretrained
    from nas_bert.stages.ptq import run_ptq

    student_dir = glue_teacher / "nas-bert-qat" / "model"
    build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16).save_pretrained(student_dir)
    update_card(student_dir, model_name="nas-bert-qat")
    glue = ("experiment=glue_students", "data/glue=local", f"data.data_dir={GLUE}", "data.task=rte")
    fp32 = finetune(glue_teacher, "fp32", tiny_teacher_dir, cache_dir, *glue, f"finetune.model_path={student_dir}")
    tuned = glue_teacher / "finetune" / "runs" / "fp32" / "model"

    ptq_run = glue_teacher / "ptq" / "fp32"
    run_stage(run_ptq, "train", ptq_run, *tiny(tiny_teacher_dir, cache_dir, "experiment=ptq_glue", *glue[1:],
                                                  f"finetune.model_path={tuned}", "finetune.model_name=s"))
    rows = {row["form"]: row for row in json.loads((ptq_run / "ptq.json").read_text())}
    assert set(rows) == {"fp32", "int8_torch", "int8_onnx", "w4a8_ptq"}
    assert rows["fp32"]["score"] == pytest.approx(100 * fp32["final"]["val/glue/rte/combined_score"])  # re-scored
    assert all(0 <= row["score"] <= 100 and row["model"] == "s" for row in rows.values())

    qat = ("finetune.qat={weight_bits: 4}", f"finetune.init_from={tuned}", f"finetune.model_path={student_dir}")
    with pytest.raises(ValueError, match=r"weight_bits in \(4, 8\)"):
        finetune(glue_teacher, "w2", tiny_teacher_dir, cache_dir, *glue, "finetune.qat={weight_bits: 2}")
    scores = read_record(tuned)["results"]
    result = finetune(glue_teacher, "w4", tiny_teacher_dir, cache_dir, *glue, *qat)
    assert result["kd"] and read_record(tuned)["results"] == scores  # the fp32 model's card keeps its own scores
    model = load_pretrained(glue_teacher / "finetune" / "runs" / "w4" / "model")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert model.config.lsq == {"weight_bits": 4, "act_bits": 8} and all(isinstance(m, LsqLinear) for m in linears)
    assert all(bool(m.weight_quantizer.initialized) and bool(m.input_quantizer.initialized) for m in linears)
    path = export_onnx(model, glue_teacher / "w4.onnx", seq_len=16)
    assert check_onnx(model, path) < 1e-4
    assert [node.op_type for node in onnx.load(path).graph.node].count("QuantizeLinear") >= len(linears)
    assert read_record(glue_teacher / "finetune" / "runs" / "w4" / "model")["model_name"] == "nas-bert-qat-w4a8-rte"


def test_a_teacher_of_another_task_and_an_unknown_task_are_refused(glue_teacher, tiny_teacher_dir, cache_dir):
    teacher = glue_teacher / "finetune" / "teachers" / "rte" / "model"
    glue = ("experiment=finetune_glue", "data/glue=local", f"data.data_dir={GLUE}")
    with pytest.raises(ValueError, match="2 labels, task mnli has 3"):
        finetune(glue_teacher, "wrong", tiny_teacher_dir, cache_dir, *glue, "data.task=mnli",
                 f"finetune.teacher_path={teacher}")
    with pytest.raises(ValueError, match="'qqq'"):
        finetune(glue_teacher, "unknown", tiny_teacher_dir, cache_dir, *glue, "data.task=qqq")


def test_squad_fine_tuning_with_kd_joins_the_summary(glue_teacher, tiny_teacher_dir, cache_dir):
    squad = ("experiment=finetune_squad", "data/squad=local_dev_split", f"data.validation_file={SQUAD}",
             "data.max_seq_length=96", "data.doc_stride=32")
    finetune(glue_teacher, "teacher_squad", tiny_teacher_dir, cache_dir, *squad)
    teacher = glue_teacher / "finetune" / "runs" / "teacher_squad" / "model"
    result = finetune(glue_teacher, "student_squad", tiny_teacher_dir, cache_dir, *squad,
                      f"finetune.teacher_path={teacher}", "finetune.model_name=student")
    assert result["task"] == "squad_v1.1" and result["kd"] and "squad/f1_loyalty" in result["best"]
    assert "squad_v1.1" in (glue_teacher / "finetune" / "summary.md").read_text().splitlines()[0]


def test_auto_starts_every_student_from_the_teachers_embeddings_and_an_old_recipe_keeps_its_rule(
        outputs, tiny_teacher_dir, cache_dir, tmp_path):
    """`student.init=auto` (recipe version 2): teacher_embeddings, searched or uniform; a recipe saved without
    `recipe_version` (nas-bert 0.2) keeps its rule: the supernet when the search kept one."""
    from helpers.runs import compose_config
    from omegaconf import open_dict

    from nas_bert.stages.pretrain import student_arch, student_init
    from nas_bert.stages.upgrade import upgrade_config

    def init_of(*overrides: str, old: bool = False) -> tuple[str, Path | None]:
        cfg = compose_config("train", tmp_path / "run", *tiny(tiny_teacher_dir, cache_dir, "student.budget=debug_40pct",
                                                              "student.max_positions=128", *overrides), log_dir=outputs)
        if old:  # as a recipe saved before the key existed
            with open_dict(cfg):
                del cfg["recipe_version"]
            upgrade_config(cfg)
        return student_init(cfg, student_arch(cfg, 30522))

    baseline = "student.baseline={layers: 2, hidden: 16, blocks: 1}"
    assert init_of() == init_of(baseline) == init_of(baseline, old=True) == ("teacher_embeddings", None)
    init, checkpoint = init_of(old=True)
    assert init == "supernet" and checkpoint.resolve() == (outputs / "search" / "runs" / "a" / "checkpoints"
                                                           / "last.ckpt").resolve()
    with pytest.raises(ValueError, match="recipe_version 3 is newer"):
        init_of("recipe_version=3")
