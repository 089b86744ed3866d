"""Independent steps side by side (`pipeline.workers`) and the compute time of a run whose steps overlapped."""

from __future__ import annotations

import os

import pytest
from helpers.workers import note_worker

from nas_bert.pipeline.step_pool import run_side_by_side, usable_cores
from nas_bert.pipeline.step_times import STEP_TIMES, record_step_time, time_by_part, union_minutes
from nas_bert.reports.study import time_markdown


def test_steps_run_on_spawned_workers_sharing_the_cores_until_one_fails(tmp_path):
    paths = [tmp_path / f"step{i}" for i in range(3)]
    with pytest.raises(ValueError, match="asked to fail"):  # submitted last: every step before it has started
        run_side_by_side([*paths, tmp_path / "fail"], note_worker, workers=2)
    notes = [p.read_text().split() for p in paths]  # steps running at the failure finish and are kept
    share = str(max(1, usable_cores() // 2))
    assert all(threads == share and omp == share for _, threads, omp in notes)
    pids = {int(pid) for pid, _, _ in notes}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2


def test_a_single_worker_runs_the_steps_here_in_order():
    ran = []
    run_side_by_side(["a", "b"], ran.append, workers=1)
    assert ran == ["a", "b"]


def test_overlapping_steps_count_once_in_the_wall_time(tmp_path):
    assert union_minutes([(0, 60), (30, 120), (300, 360)]) == pytest.approx(3.0)  # [0, 120] and [300, 360]
    (tmp_path / STEP_TIMES).write_text(
        "step,seconds,finished\n"
        "search,600.0,2026-11-30T10:10:00Z\n"
        "finetune/teacher_rte_s0,120.0,2026-11-30T10:12:00Z\n"  # the two teacher runs side by side
        "finetune/teacher_mrpc_s0,60.0,2026-11-30T10:11:30Z\n"
        "finetune/teacher_rte_s0,240.0,2026-11-30T12:04:00Z\n")  # ran again in a later sitting: the last one counts
    record_step_time(tmp_path, "baselines/quarter/equal_params", 6.0)
    times = time_by_part(tmp_path)
    assert list(times) == ["search", "finetune (teacher)", "baselines", "total"]
    assert times["finetune (teacher)"].steps == 2 and times["finetune (teacher)"].step_minutes == pytest.approx(5.0)
    assert times["finetune (teacher)"].wall_minutes == pytest.approx(5.0)  # 12:00-12:04 and 10:10:30-10:11:30
    assert times["total"].steps == 4 and times["total"].wall_minutes == pytest.approx(10 + 5 + 0.1)
    assert "| total | 4 | 15.10 | 15.10 |" in time_markdown(times)
    assert time_by_part(tmp_path / "nothing") == {}
