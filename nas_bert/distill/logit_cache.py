"""The teacher's logits of a fine-tuning run, kept by example index so that each example runs through the teacher
once, and saved complete for later runs on the same data (every seed and student of a study)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch


class TeacherLogitCache:
    """Teacher logits by example index (rows of NaN until computed): each example runs through the teacher once.

    Once every training example has its row (`full`: after the first epoch, or read from a file), a look-up is
    plain indexing on the batch's device, with no check that would synchronise host and device."""

    def __init__(self) -> None:
        self.rows: torch.Tensor | None = None  # (N, ...) float32: on the CPU, once full on the batches' device
        self.full = False

    def lookup(self, idx: torch.Tensor, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Cached rows for idx (B,), computing the batch (B, ...) when any row is missing."""
        if self.full:
            self.rows = self.rows.to(idx.device, non_blocking=True)  # moved once (a no-op after)
            return self.rows[idx]
        if self.rows is not None and int(idx.max()) < len(self.rows):
            rows = self.rows[idx.cpu()]
            if not torch.isnan(rows).any():
                return rows.to(idx.device)
        fresh = compute().float()
        size = max(int(idx.max()) + 1, 0 if self.rows is None else len(self.rows))
        if self.rows is None or size > len(self.rows):
            grown = torch.full((size, *fresh.shape[1:]), float("nan"))
            if self.rows is not None:
                grown[: len(self.rows)] = self.rows
            self.rows = grown
        self.rows[idx.cpu()] = fresh.detach().cpu()
        return fresh

    def complete(self, indices: torch.Tensor) -> bool:
        """Whether every example of `indices` (N,) has its logits; if so, later look-ups skip the check."""
        self.full = (self.rows is not None and int(indices.max()) < len(self.rows)
                     and not torch.isnan(self.rows[indices]).any())
        return self.full


def save_teacher_logits(path: Path, caches: dict[str, TeacherLogitCache]) -> None:
    """{split: rows (N, ...)} of complete caches in one file (a run killed while saving leaves no partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")  # runs side by side never write into one file
    torch.save({split: cache.rows for split, cache in caches.items()}, temporary)
    temporary.replace(path)


def load_teacher_logits(path: Path, caches: dict[str, TeacherLogitCache]) -> list[str]:
    """Fills `caches` from a file of `save_teacher_logits` (its splits were saved complete); the splits read."""
    saved = torch.load(path, weights_only=True)
    for split in saved.keys() & caches.keys():
        caches[split].rows, caches[split].full = saved[split], True
    return sorted(saved.keys() & caches.keys())
