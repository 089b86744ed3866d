"""`python search.py +pipeline=...`: every stage chained on a tiny teacher, the summary, and skipping on re-run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "tests" / "fixtures" / "glue"


def overrides(*items: str) -> str:
    """A Hydra list of override strings, quoted (they contain '=' and '/')."""
    return "[" + ",".join(f"'{item}'" for item in items) + "]"


def run_pipeline(tmp_path: Path, tiny_teacher_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(ROOT / "search.py"), "+pipeline=cpu_demo", f"hydra.run.dir={tmp_path / 'pipe'}",
           f"teacher.name_or_path={tiny_teacher_dir}",
           "pipeline.common=" + overrides(f"teacher.name_or_path={tiny_teacher_dir}",
                                           f"paths.cache_dir={tmp_path / 'cache'}"),
           "pipeline.search=" + overrides("debug=fast", "space=tiny"), "pipeline.budgets=[debug_40pct]",
           "pipeline.pretrain=" + overrides("debug=fast", "space=tiny"), "pipeline.glue_tasks=[rte]",
           "pipeline.glue=" + overrides("data/glue=local", f"data.data_dir={GLUE}"), "pipeline.squad=[]",
           "pipeline.finetune=" + overrides("trainer.max_epochs=1", "data.batch_size=4", "data.num_workers=0"),
           "pipeline.latency.min_run_time=0.01", *extra]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_pipeline_chains_every_stage_and_skips_finished_steps(tmp_path, tiny_teacher_dir):
    first = run_pipeline(tmp_path, tiny_teacher_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    pipe = tmp_path / "pipe"
    rows = {r["model"]: r for r in csv.DictReader(open(pipe / "summary.csv"))}
    assert set(rows) == {"teacher", "nas-bert-debug_40pct", "baseline-debug_40pct"}
    for row in rows.values():
        assert float(row["latency ms (b1, t128)"]) > 0 and float(row["params (M)"]) > 0 and row["rte"] != "-"
    assert float(rows["nas-bert-debug_40pct"]["params (M)"]) < float(rows["teacher"]["params (M)"])
    assert (pipe / "pretrain" / "baseline-debug_40pct" / "model" / "config.json").is_file()
    assert list(pipe.glob("wandb/offline-run-*"))  # the summary table's W&B run

    again = run_pipeline(tmp_path, tiny_teacher_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped") + again.stdout.count("skipped") == 6  # search, 2 pre-trainings, 3 runs

    wrong = run_pipeline(tmp_path, tiny_teacher_dir, "pipeline.budgets=[no_such_budget]")
    assert wrong.returncode != 0
    assert "selected no architecture for ['no_such_budget'] (it wrote ['debug_40pct', 'debug_90pct']" in wrong.stderr
    assert (pipe / "search" / "candidates.csv").is_file() and (pipe / "summary.md").is_file()  # nothing lost
