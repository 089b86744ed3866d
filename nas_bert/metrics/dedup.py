"""A torchmetrics base that keeps per-example rows and counts each example index exactly once.

Under DDP, Lightning's `DistributedSampler` pads the eval set so every rank gets the same number of samples,
i.e. some examples are evaluated twice. Sum-style metric states would count them twice; here every row keeps
its example index (`idx`) in a `cat` state, and after torchmetrics' own gather at `compute()` the rows are
de-duplicated by index (first occurrence kept, sorted by index).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def first_occurrence(idx: Tensor) -> Tensor:
    """Positions of the first occurrence of each distinct value in `idx` (N,), ordered by that value."""
    order = torch.argsort(idx, stable=True)  # stable: ties keep their original order, so the first wins
    ordered = idx[order]
    new = torch.ones_like(ordered, dtype=torch.bool)
    new[1:] = ordered[1:] != ordered[:-1]
    return order[new]


def _cat(state: list[Tensor] | Tensor) -> Tensor | None:
    """A `cat` state as one tensor (a list before sync, a tensor after it); None if nothing was stored."""
    if isinstance(state, Tensor):
        return state if state.numel() else None
    return dim_zero_cat(state) if state else None


class DedupMetric(Metric):
    """Stores rows `idx` (N,) plus one tensor (N, ...) per field; `rows()` returns them once per index.

    `compute()` returns the de-duplicated rows themselves (e.g. SQuAD start/end logits by `feature_idx`, to
    post-process on the full eval set); subclasses compute their metric from `self.rows()`. A field may be left
    out (None) on every update or on none of them. Rows of a field must have the same trailing shape on every
    rank (torchmetrics gathers them), so pad sequences to a fixed length. Floating rows are stored as float32.
    Under DDP, call `compute()` on every rank (it gathers); call `reset()` after each eval epoch.
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, fields: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if "idx" in fields:
            raise ValueError("'idx' is reserved for the example index")
        self.fields = tuple(fields)
        self.add_state("idx", default=[], dist_reduce_fx="cat")
        for name in self.fields:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, idx: Tensor, **rows: Tensor | None) -> None:
        """Appends a batch: `idx` (B,) int64 example indices and, per field, a tensor (B, ...) or None."""
        unknown = set(rows) - set(self.fields)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; this metric stores {self.fields}")
        idx = idx.detach().reshape(-1).long()
        for name in self.fields:  # check everything before storing anything
            value = rows.get(name)
            if self.idx and (value is not None) != bool(getattr(self, name)):
                raise ValueError(f"field {name!r} must be given on every update or on none")
            if value is not None and value.shape[0] != idx.numel():
                raise ValueError(f"field {name!r} has {value.shape[0]} rows for {idx.numel()} indices")
        for name, value in rows.items():
            if value is not None:
                value = value.detach()
                getattr(self, name).append(value.float() if value.is_floating_point() else value)
        self.idx.append(idx)

    def rows(self) -> dict[str, Tensor]:
        """`idx` (M,) sorted, each index once, and every stored field (M, ...) in the same order.

        Fields never given are left out. Call it from `compute()`, i.e. after torchmetrics' DDP sync.
        """
        idx = _cat(self.idx)
        if idx is None:
            raise RuntimeError(f"{type(self).__name__}.compute() called before any update")
        keep = first_occurrence(idx)
        out = {"idx": idx[keep]}
        for name in self.fields:
            value = _cat(getattr(self, name))
            if value is None:
                continue
            if value.shape[0] != idx.numel():
                raise RuntimeError(f"field {name!r} has {value.shape[0]} rows for {idx.numel()} indices")
            out[name] = value[keep]
        return out

    def compute(self) -> dict[str, Tensor]:
        return self.rows()
