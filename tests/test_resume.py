"""Exact resume: a run killed with SIGKILL and resumed from its last checkpoint ends exactly where the
uninterrupted run ends (weights, optimizer, surviving candidates, selection), in the same W&B run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_entry(tmp_path: Path, run: str, *overrides: str, script: str = "search.py") -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / script), f"hydra.run.dir={tmp_path / run}",
           f"paths.cache_dir={tmp_path / 'cache'}", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def kill_at(step: int) -> list[str]:
    return [f"+callbacks.kill={{_target_: helpers.faults.KillAfterStep, step: {step}}}"]


def wandb_ids(run_dir: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}


@pytest.mark.slow
def test_supernet_killed_twice_resumes_exactly(tmp_path, tiny_teacher_dir):
    # 3 batches per epoch, a shrinking round at each epoch end, a checkpoint every step (written after the
    # kill callback ran): the first kill resumes from step 4 (mid-epoch), the second from step 6 (the last
    # batch of an epoch, before its round). Dropout is on, so the RNG state must be restored too.
    common = ["debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}", "trainer.max_steps=9",
              "callbacks.model_checkpoint.every_n_train_steps=1", "model.dropout=0.1",
              "search.shrinking.min_per_bin=1"]
    full = run_entry(tmp_path, "full", *common)
    assert full.returncode == 0, full.stderr[-3000:]

    first = run_entry(tmp_path, "killed", *common, *kill_at(5))
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    second = run_entry(tmp_path, "killed", *common, "ckpt_path=last", *kill_at(7))
    assert second.returncode == -signal.SIGKILL, second.stderr[-3000:]
    third = run_entry(tmp_path, "killed", *common, "ckpt_path=last")
    assert third.returncode == 0, third.stderr[-3000:]

    a, b = (torch.load(tmp_path / r / "checkpoints" / "last.ckpt", weights_only=True) for r in ("full", "killed"))
    assert a["global_step"] == b["global_step"] == 9
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    shrink_a, shrink_b = (json.loads((tmp_path / r / "shrinking.json").read_text()) for r in ("full", "killed"))
    assert shrink_a["rounds"] == shrink_b["rounds"] == 3 and shrink_a["alive"] == shrink_b["alive"]
    for arch in (tmp_path / "full" / "architectures").glob("*.yaml"):
        assert arch.read_text() == (tmp_path / "killed" / "architectures" / arch.name).read_text()
    ids = wandb_ids(tmp_path / "killed")
    assert len(ids) == 1 and len(list((tmp_path / "killed" / "wandb").glob("offline-run-*"))) == 3
    assert (tmp_path / "killed" / "wandb_run_id").read_text() in ids
