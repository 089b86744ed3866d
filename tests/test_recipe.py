"""The run's recipe: resolver calls frozen, links kept, the run folder open; local inputs checked by key."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from nas_bert.stages.recipe import check_local_inputs, recipe_text, save_recipe


def config(tmp_path, monkeypatch) -> OmegaConf:
    monkeypatch.setenv("NAS_BERT_TEST_ROOT", str(tmp_path))
    return OmegaConf.create({
        "paths": {"root_dir": "${oc.env:NAS_BERT_TEST_ROOT}", "cache_dir": "${paths.root_dir}/.cache",
                  "output_dir": str(tmp_path / "run")},
        "teacher": {"name_or_path": "${paths.root_dir}/teacher", "tokenizer": "${teacher.name_or_path}"},
        "model": {"teacher": "${teacher}", "steps": [1, "${oc.env:NAS_BERT_TEST_ROOT}"]},
        "data": {"tokenizer": "${teacher.tokenizer}", "cache": "${paths.output_dir}/datasets"},
    })


def test_the_recipe_freezes_resolver_calls_and_keeps_links(tmp_path, monkeypatch):
    saved = yaml.safe_load(recipe_text(config(tmp_path, monkeypatch)))
    assert saved["paths"]["root_dir"] == str(tmp_path) and saved["model"]["steps"] == [1, str(tmp_path)]
    assert saved["paths"]["output_dir"] == "${hydra:runtime.output_dir}"
    assert saved["model"]["teacher"] == "${teacher}" and saved["data"]["tokenizer"] == "${teacher.tokenizer}"
    assert saved["data"]["cache"] == "${paths.output_dir}/datasets"


def test_one_override_of_a_saved_recipe_reaches_every_use(tmp_path, monkeypatch):
    (path,) = save_recipe(config(tmp_path, monkeypatch), tmp_path / "run")
    monkeypatch.delenv("NAS_BERT_TEST_ROOT")  # the re-run does not need the environment of the first run
    rerun = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(
        ["teacher.name_or_path=/elsewhere/teacher", f"paths.output_dir={tmp_path / 'rerun'}"]))
    assert rerun.model.teacher.name_or_path == rerun.data.tokenizer == "/elsewhere/teacher"
    assert rerun.paths.cache_dir == f"{tmp_path}/.cache"


def test_missing_local_inputs_are_named_by_key_and_hub_ids_pass(tmp_path, monkeypatch):
    cfg = config(tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError) as err:
        check_local_inputs(cfg)
    named = {line.split("=")[0].strip() for line in str(err.value).splitlines() if line.startswith("  ")}
    assert named == {"teacher.name_or_path", "teacher.tokenizer", "model.teacher.name_or_path",
                     "model.teacher.tokenizer", "data.tokenizer"}
    (tmp_path / "teacher").mkdir()
    check_local_inputs(cfg)
    cfg.teacher.name_or_path = "sentence-transformers/all-MiniLM-L6-v2"  # a hub id is not checked here
    check_local_inputs(cfg)
