"""Module-level work for `step_pool` tests: spawned workers import it by name."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def note_worker(path: Path) -> None:
    """Writes which process ran it and the threads it had; fails for a file named `fail`."""
    if path.name == "fail":
        raise ValueError(f"asked to fail: {path}")
    path.write_text(f"{os.getpid()} {torch.get_num_threads()} {os.environ.get('OMP_NUM_THREADS')}")
