"""The search stage in process (`run_search`, what `python search.py` calls) on a tiny teacher: its outputs, the
saved recipe, re-selection, `latest`, and its errors on bad input."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from helpers.runs import TINY_BUDGETS, compose_config, run_stage, tiny
from omegaconf import OmegaConf

from nas_bert.arch import Arch, ArchitectureError
from nas_bert.encoder import encoder_params
from nas_bert.nas.latency import LatencyTableError
from nas_bert.stages.recipe import RESOLVER_CALL
from nas_bert.stages.search import SearchBudgetError, run_search
from nas_bert.teacher import TeacherError

pytestmark = pytest.mark.slow  # whole stages, end to end


@pytest.fixture(scope="module")
def own_teacher(tmp_path_factory, tiny_teacher_dir) -> Path:
    """A copy of the tiny teacher that this module's search uses (and one test moves away and back)."""
    own = tmp_path_factory.mktemp("own_teacher") / "teacher"
    shutil.copytree(tiny_teacher_dir, own)
    return own


@pytest.fixture(scope="module")
def searched(tmp_path_factory, own_teacher, cache_dir) -> Path:
    """One finished tiny search (outputs/search/runs/first), shared by the tests below; W&B on."""
    root = tmp_path_factory.mktemp("outputs")
    run_stage(run_search, "search", root / "search" / "runs" / "first",
              *tiny(own_teacher, cache_dir, TINY_BUDGETS, "logger=default"), log_dir=root)
    return root


def test_search_writes_checkpoint_logs_config_and_architectures(searched, own_teacher):
    run = searched / "search" / "runs" / "first"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["state_dict"] and all(k.startswith("supernet.") for k in ckpt["state_dict"])  # no teacher weights
    config = yaml.safe_load((run / "checkpoints" / "config.yaml").read_text())
    assert config["teacher"]["name_or_path"] == str(own_teacher) and config["space"]["name"] == "tiny"
    assert config["paths"]["root_dir"] == os.environ["PROJECT_ROOT"]  # resolver calls are frozen ...
    assert config["model"]["teacher"] == "${teacher}" and config["data"]["tokenizer"] == "${teacher.tokenizer}"
    text = (run / "config.yaml").read_text()
    assert "output_dir: ${hydra:runtime.output_dir}" in text  # ... links and the run folder stay variables
    assert [line for line in text.splitlines() if RESOLVER_CALL.search(line)] == [
        "  output_dir: ${hydra:runtime.output_dir}"]
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    assert any(r.get("val/block2_mse") for r in rows) and any(r.get("train/loss") for r in rows)
    assert list((run / "wandb").glob("offline-run-*"))

    # stage 2: one architecture per budget, each within its budget, priced like the real model
    budgets = {b["name"]: b for b in config["search"]["selection"]["budgets"]}
    files = sorted((run / "architectures").glob("*.yaml"))
    assert [f.stem for f in files] == sorted(budgets)
    for f in files:
        arch = Arch.load(f)
        assert arch.meta["params"] == encoder_params(arch, 30522, 128) <= arch.meta["budget"]["max_params"]
        assert arch.meta["space"]["name"] == "tiny" and arch.meta["model_loss"] > 0
    shrinking = json.loads((run / "shrinking.json").read_text())
    assert shrinking["rounds"] >= 1 and len(shrinking["alive"]) == 3
    assert (run / "pareto.png").stat().st_size > 10_000 and (run / "latency_table.json").is_file()
    assert sum(1 for _ in open(run / "candidates.csv")) > len(files)
    ranking = (run / "ranking.md").read_text()  # the diagnostics of every block and budget
    assert all(f"## Block {n}" in ranking for n in range(3)) and all(name in ranking for name in budgets)
    numbers = json.loads((run / "ranking.json").read_text())
    assert len(numbers["blocks"]) == 3 and {b["budget"] for b in numbers["budgets"]} == set(budgets)
    assert (searched / "search" / "latest").resolve() == run.resolve()


def test_the_saved_recipe_reruns_elsewhere_with_its_teacher_moved_by_one_override(searched, own_teacher, tmp_path):
    run = tmp_path / "copied_run"
    shutil.copytree(searched / "search" / "runs" / "first", run)
    moved, rerun = tmp_path / "moved_teacher", tmp_path / "rerun"
    shutil.move(own_teacher, moved)
    try:
        with pytest.raises(FileNotFoundError, match=r"teacher\.name_or_path="):  # names the key, before any step
            run_search(compose_config("config", tmp_path / "refused", config_dir=run, log_dir=tmp_path))
        assert not (tmp_path / "refused" / "config.yaml").exists()
        run_stage(run_search, "config", rerun, f"teacher.name_or_path={moved}", config_dir=run, log_dir=tmp_path)
    finally:
        shutil.move(moved, own_teacher)
    recipe = OmegaConf.load(rerun / "config.yaml")
    recipe.paths.output_dir = str(rerun)
    assert recipe.model.teacher.name_or_path == recipe.data.tokenizer == recipe.model.teacher.tokenizer == str(moved)
    assert (rerun / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (rerun / "architectures").iterdir()) == sorted(
        p.name for p in (run / "architectures").iterdir())


def test_select_from_a_finished_run_without_training(searched, tiny_teacher_dir, cache_dir):
    again = searched / "search" / "runs" / "reselect"
    run_stage(run_search, "search", again, *tiny(tiny_teacher_dir, cache_dir),
              f"search.select_from={searched / 'search' / 'runs' / 'first'}",
              "search.selection.budgets=[{name: half, max_params_fraction: 0.5}]", log_dir=searched)
    assert [f.stem for f in (again / "architectures").glob("*.yaml")] == ["half"]
    assert not (again / "checkpoints" / "last.ckpt").exists()  # no training happened
    assert (searched / "search" / "latest").resolve() == again.resolve()


def test_a_budget_no_model_meets_names_the_smallest_keeps_the_rest_and_latest(searched, tiny_teacher_dir, cache_dir):
    latest = (searched / "search" / "latest").resolve()
    failed = searched / "search" / "runs" / "impossible"
    budgets = "search.selection.budgets=[{name: nothing, max_params: 1000},{name: plenty, max_params_fraction: 0.9}]"
    with pytest.raises(SearchBudgetError, match=r"budget 'nothing' \(max_params=0.001M\).*smallest has"):
        run_stage(run_search, "search", failed, *tiny(tiny_teacher_dir, cache_dir),
                  f"search.select_from={searched / 'search' / 'runs' / 'first'}", budgets, log_dir=searched)
    assert (failed / "architectures" / "plenty.yaml").is_file()  # nothing already found is lost
    assert (searched / "search" / "latest").resolve() == latest  # a failed search does not become `latest`


def test_a_latency_table_of_another_space_is_refused(searched, tiny_teacher_dir, cache_dir, tmp_path):
    with pytest.raises(LatencyTableError, match="hidden_sizes") as err:
        run_stage(run_search, "search", tmp_path / "other", *tiny(tiny_teacher_dir, cache_dir),
                  f"search.select_from={searched / 'search' / 'runs' / 'first'}", "space.hidden_sizes=[16,48]")
    assert "remeasure" in str(err.value)


@pytest.mark.parametrize(
    ("override", "error", "fact"),
    [
        ("teacher.name_or_path=/no/such/teacher", FileNotFoundError, "/no/such/teacher"),
        ("space.num_blocks=4", TeacherError, "space.num_blocks"),
        ("data.train_files=/no/such/corpus.txt", FileNotFoundError, "/no/such/corpus.txt"),
        ("space.ops=[mha,attention]", ArchitectureError, "'attention'"),
    ],
)
def test_bad_input_fails_with_the_fix(tmp_path, tiny_teacher_dir, cache_dir, override, error, fact):
    with pytest.raises(error, match=fact):
        run_search(compose_config("search", tmp_path / "run", *tiny(tiny_teacher_dir, cache_dir), override))
