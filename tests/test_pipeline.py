"""`python search.py +pipeline=cpu_demo debug=fast`: every stage chained on a tiny teacher as separate processes (the
process boundary is the point), the summary, skipping on re-run, and the steps it plans."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from helpers.runs import GLUE, TINY_BUDGETS, compose_config, run_script

from nas_bert.stages.pipeline import PipelineError, pretrain_steps, run_pipeline


def overrides(*items: str) -> str:
    """A Hydra list of override strings, quoted (they contain '=' and '/')."""
    return "[" + ",".join(f"'{item}'" for item in items) + "]"


def pipeline_args(tmp_path: Path, teacher: Path, *common: str) -> list[str]:
    """On the tiny teacher, one budget, one GLUE task, no SQuAD, no baseline (`pretrain_steps` is tested below)."""
    return [f"teacher.name_or_path={teacher}",
            "pipeline.common=" + overrides(f"teacher.name_or_path={teacher}", f"paths.cache_dir={tmp_path / 'cache'}",
                                           "space=tiny", "logger=csv", *common),
            "pipeline.search=" + overrides(TINY_BUDGETS), "pipeline.budgets=[debug_40pct]", "pipeline.baseline=null",
            "pipeline.glue_tasks=[rte]", "pipeline.glue=" + overrides("data/glue=local", f"data.data_dir={GLUE}"),
            "pipeline.squad=[]", "pipeline.latency.min_run_time=0.01"]


@pytest.mark.slow
def test_pipeline_chains_every_stage_and_skips_finished_steps(tmp_path, tiny_teacher_dir, caplog):
    pipe = tmp_path / "pipe"
    first = run_script("search.py", tmp_path, "+pipeline=cpu_demo", "debug=fast", f"hydra.run.dir={pipe}",
                       *pipeline_args(tmp_path, tiny_teacher_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    rows = {r["model"]: r for r in csv.DictReader(open(pipe / "summary.csv"))}
    assert set(rows) == {"teacher", "nas-bert-debug_40pct"}
    for row in rows.values():
        assert float(row["latency ms (b1, t128)"]) > 0 and float(row["params (M)"]) > 0 and row["rte"] != "-"
    assert float(rows["nas-bert-debug_40pct"]["params (M)"]) < float(rows["teacher"]["params (M)"])
    assert list(pipe.glob("wandb/offline-run-*"))  # the summary table's W&B run
    assert "debug=fast" in (pipe / "search" / ".hydra" / "overrides.yaml").read_text()  # every step ran under it

    # the same pipeline again (in process: its steps are processes anyway) runs nothing but the summary
    again = compose_config("search", pipe, "+pipeline=cpu_demo", "logger=csv",
                           *pipeline_args(tmp_path, tiny_teacher_dir, "debug=fast"))
    with caplog.at_level(logging.INFO, logger="nas_bert.stages.pipeline"):
        run_pipeline(again)
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 4  # search, pre-training, 2 fine-tunings

    again.pipeline.budgets = ["no_such_budget"]
    with pytest.raises(PipelineError, match=r"no_such_budget.*debug_90pct"):
        run_pipeline(again)
    assert (pipe / "search" / "candidates.csv").is_file() and (pipe / "summary.md").is_file()  # nothing lost


def test_each_budget_is_pretrained_with_its_equal_size_baseline(tmp_path):
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_demo")
    steps = pretrain_steps(cfg, tmp_path, ["a", "b"])
    assert list(steps) == ["nas-bert-a", "baseline-a", "nas-bert-b", "baseline-b"]
    baseline = steps["baseline-b"]
    assert "student.baseline={layers: 6, hidden: null, blocks: 3}" in baseline.overrides
    assert f"student.search_run={tmp_path / 'search'}" in baseline.overrides and "student.budget=b" in baseline.overrides
    assert baseline.output == tmp_path / "pretrain" / "baseline-b" / "model" / "config.json"
    cfg.pipeline.baseline = None
    assert list(pretrain_steps(cfg, tmp_path, ["a"])) == ["nas-bert-a"]
