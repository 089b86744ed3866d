"""Exact resume: a run killed with SIGKILL and resumed from its last checkpoint ends exactly where the
uninterrupted run ends (weights, optimizer, data order, surviving candidates, selection), in the same W&B run.
The process boundary is the point here, so the killed runs are the entry scripts in subprocesses."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from helpers.runs import ROOT, TINY_BUDGETS, run_script, run_stage, tiny

from nas_bert.stages.pretrain import run_pretrain
from nas_bert.stages.search import run_search

# 3 batches per epoch, a checkpoint every step, written after the kill callback ran: a kill at step 5 resumes from
# step 4 (mid-epoch), one at step 7 from step 6 (the last batch of an epoch). Each test kills once: the supernet at
# an epoch's end, the student mid-epoch.
MID_EPOCH, EPOCH_END = 5, 7  # the steps the kills come after
ARCH = ROOT / "tests" / "fixtures" / "v0_1_0" / "search_run" / "architectures" / "debug_40pct.yaml"


def record(path: Path) -> str:
    return f"+callbacks.record={{_target_: helpers.faults.RecordSteps, path: {path}}}"


def kill_at(step: int) -> str:
    return f"+callbacks.kill={{_target_: helpers.faults.KillAfterStep, step: {step}}}"


def run_killed_and_full(tmp_path: Path, stage: Callable, config: str, common: list[str],
                        kills: tuple[int, ...]) -> tuple[Path, Path]:
    """The run uninterrupted, and the same run as its entry script killed at `kills`, resumed with ckpt_path=last
    after each kill, the last time to its end. Only the killed runs need a process of their own."""
    run_stage(stage, config, tmp_path / "full", *common, record(tmp_path / "full.jsonl"))
    killed = tmp_path / "killed"
    for n, step in enumerate(kills):
        result = run_script(f"{config}.py", tmp_path, f"hydra.run.dir={killed}", *common,
                            record(tmp_path / "killed.jsonl"), *(["ckpt_path=last"] if n else []), kill_at(step))
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    run_stage(stage, config, killed, *common, record(tmp_path / "killed.jsonl"), "ckpt_path=last")
    return tmp_path / "full", killed


def assert_same_end(tmp_path: Path, full: Path, killed: Path, steps: int, kills: tuple[int, ...]) -> None:
    """Equal weights, optimizer state and step counts; each step trained on the same batch with the same loss."""
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (full, killed))
    assert a["global_step"] == b["global_step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    records = {name: [json.loads(line) for line in open(tmp_path / f"{name}.jsonl")] for name in ("full", "killed")}
    assert len(records["killed"]) == steps + len(kills)  # the steps of the kills ran twice ...
    redone = {r["step"]: r for r in records["killed"]}
    assert [redone[r["step"]] for r in records["full"]] == records["full"]  # ... and all equal the full run's
    assert len({json.dumps(r) for r in records["killed"]}) == steps  # the re-run steps saw the same batch


def wandb_ids(run_dir: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}


@pytest.mark.slow
def test_supernet_killed_at_an_epoch_end_resumes_exactly(tmp_path, tiny_teacher_dir):
    """Dropout on (the RNG state must be restored too), a shrinking round at each epoch end, W&B on."""
    common = [*tiny(tiny_teacher_dir, tmp_path / "cache", TINY_BUDGETS, "logger=default"), "trainer.max_steps=9",
              "callbacks.model_checkpoint.every_n_train_steps=1", "model.dropout=0.1", "search.shrinking.min_per_bin=1"]
    full, killed = run_killed_and_full(tmp_path, run_search, "search", common, kills=(EPOCH_END,))
    assert_same_end(tmp_path, full, killed, steps=9, kills=(EPOCH_END,))
    shrink_a, shrink_b = (json.loads((r / "shrinking.json").read_text()) for r in (full, killed))
    assert shrink_a["rounds"] == shrink_b["rounds"] == 3 and shrink_a["alive"] == shrink_b["alive"]
    for arch in (full / "architectures").glob("*.yaml"):
        assert arch.read_text() == (killed / "architectures" / arch.name).read_text()
    ids = wandb_ids(killed)
    assert len(ids) == 1 and len(list((killed / "wandb").glob("offline-run-*"))) == 2
    assert (killed / "wandb_run_id").read_text() in ids


@pytest.mark.slow
def test_student_pretraining_killed_mid_epoch_resumes_exactly(tmp_path, tiny_teacher_dir):
    """Dropout on, MLM masks drawn in the step, the representation terms' projections trained too."""
    common = [*tiny(tiny_teacher_dir, tmp_path / "cache", f"student.arch_file={ARCH}", "student.max_positions=128",
                    "model.objective=both", "model.intermediate.hidden_weight=1.0",
                    "model.intermediate.hidden_loss=mse"),
              "trainer.max_steps=7", "callbacks.model_checkpoint.every_n_train_steps=1"]
    full, killed = run_killed_and_full(tmp_path, run_pretrain, "train", common, kills=(MID_EPOCH,))
    assert_same_end(tmp_path, full, killed, steps=7, kills=(MID_EPOCH,))
    assert any(k.startswith("intermediate.projections") for k in torch.load(
        killed / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
