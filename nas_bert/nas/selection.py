"""The selection's inputs and outputs: per-block candidate tables, the coupling costs between blocks, budgets,
the selected models, and their checks.

After the space is shrunk, every block keeps M candidates, each with a block loss and costs (`BlockTable`). A
whole model is one candidate per block; its approximate loss is the sum of its block losses and its cost is the
sum of its blocks' costs plus the width projections between consecutive blocks of different widths and the
embeddings, which depend on the first block's width (`CouplingCosts`). `nas_bert.nas.top_k` finds, per
`Budget`, the k best whole models (`Selection`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# ------------------------------------------------------------------------------------------------
# Inputs and outputs
# ------------------------------------------------------------------------------------------------
def _as_1d(name: str, values, dtype) -> np.ndarray:
    """`values` as a 1-D array of `dtype`; integer columns must hold whole numbers."""
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {raw.shape}")
    arr = raw.astype(dtype)
    if np.issubdtype(dtype, np.integer) and raw.size and not np.array_equal(arr, raw):
        raise ValueError(f"{name} must hold whole numbers")
    if np.issubdtype(dtype, np.floating) and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


@dataclass
class BlockTable:
    """The M surviving candidates of one block; every field has shape (M,)."""

    index: np.ndarray  # candidate index in the space enumeration (carried through)
    width: np.ndarray  # index into the space's hidden sizes, 0..H-1
    params: np.ndarray
    flops: np.ndarray
    latency: np.ndarray  # seconds
    loss: np.ndarray

    def __post_init__(self) -> None:
        for name in ("index", "width", "params", "flops"):
            setattr(self, name, _as_1d(name, getattr(self, name), np.int64))
        for name in ("latency", "loss"):
            setattr(self, name, _as_1d(name, getattr(self, name), np.float64))
        lengths = {name: len(getattr(self, name)) for name in self._fields()}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"BlockTable fields must have equal lengths, got {lengths}")
        if lengths["index"] == 0:
            raise ValueError("BlockTable is empty: a block needs at least one surviving candidate")

    @staticmethod
    def _fields() -> tuple[str, ...]:
        return ("index", "width", "params", "flops", "latency", "loss")

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class CouplingCosts:
    """Costs that depend on block widths, not on the candidates themselves.

    `params`, `flops`, `latency`: (H, H), the projection from width i to width j (0 on the
    diagonal). `first_*`: (H,), costs set by the first block's width alone (e.g. embeddings).
    """

    params: np.ndarray
    flops: np.ndarray
    latency: np.ndarray
    first_params: np.ndarray
    first_flops: np.ndarray
    first_latency: np.ndarray

    def __post_init__(self) -> None:
        self.params = np.asarray(self.params, dtype=np.int64)
        self.flops = np.asarray(self.flops, dtype=np.int64)
        self.latency = np.asarray(self.latency, dtype=np.float64)
        self.first_params = np.asarray(self.first_params, dtype=np.int64)
        self.first_flops = np.asarray(self.first_flops, dtype=np.int64)
        self.first_latency = np.asarray(self.first_latency, dtype=np.float64)
        h = self.num_widths
        for name in ("params", "flops", "latency"):
            if getattr(self, name).shape != (h, h):
                raise ValueError(f"coupling {name} must be ({h}, {h}), got {getattr(self, name).shape}")
            if getattr(self, f"first_{name}").shape != (h,):
                raise ValueError(
                    f"coupling first_{name} must be ({h},), got {getattr(self, f'first_{name}').shape}"
                )
        if not (np.all(np.isfinite(self.latency)) and np.all(np.isfinite(self.first_latency))):
            raise ValueError("coupling latencies must be finite")

    @property
    def num_widths(self) -> int:
        return int(self.params.shape[0]) if self.params.ndim == 2 else 0

    @classmethod
    def zeros(cls, num_widths: int) -> CouplingCosts:
        """No coupling at all: a model's cost is the sum of its blocks' costs."""
        square, line = np.zeros((num_widths, num_widths)), np.zeros(num_widths)
        return cls(square, square, square, line, line, line)


@dataclass(frozen=True)
class Budget:
    """A named limit on parameters and/or latency (seconds); at least one must be set."""

    name: str
    max_params: float | None = None
    max_latency: float | None = None

    def __post_init__(self) -> None:
        if self.max_params is None and self.max_latency is None:
            raise ValueError(f"budget {self.name!r} sets neither max_params nor max_latency")
        if any(v is not None and math.isnan(v) for v in (self.max_params, self.max_latency)):
            raise ValueError(f"budget {self.name!r} has a NaN limit")

    def describe(self) -> str:
        limits = []
        if self.max_params is not None:
            limits.append(f"max_params={_fmt_params(self.max_params)}")
        if self.max_latency is not None:
            limits.append(f"max_latency={_fmt_latency(self.max_latency)}")
        return f"budget {self.name!r} ({', '.join(limits)})"


@dataclass
class Selection:
    """The best T' = min(k, num_feasible) models of one budget, by loss, then params, then choice."""

    choice: np.ndarray  # (T', N) int64, row of each block's BlockTable
    index: np.ndarray  # (T', N) int64, candidate index in the space enumeration of each block
    loss: np.ndarray  # (T',) float64
    params: np.ndarray  # (T',) int64
    flops: np.ndarray  # (T',) int64
    latency: np.ndarray  # (T',) float64, seconds
    num_feasible: int
    budget: Budget

    def __len__(self) -> int:
        return len(self.loss)


class BudgetError(ValueError):
    """No architecture meets a budget; carries the smallest achievable costs over all of them."""

    def __init__(self, budget: Budget, min_params: int, min_latency: float) -> None:
        self.budget, self.min_params, self.min_latency = budget, int(min_params), float(min_latency)
        too_small = (budget.max_params is not None and min_params > budget.max_params) or (
            budget.max_latency is not None and min_latency > budget.max_latency
        )
        jointly = "" if too_small else " (each limit alone is met, but never both together)"
        super().__init__(
            f"{budget.describe()} is met by no architecture{jointly}: the smallest has "
            f"{_fmt_params(min_params)} parameters and the fastest takes {_fmt_latency(min_latency)}; "
            f"raise the budget or add smaller candidates to the space"
        )


def _fmt_params(p: float) -> str:
    return f"{p / 1e6:.3g}M"


def _fmt_latency(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


# ------------------------------------------------------------------------------------------------
# Validation shared with the reference of the tests
# ------------------------------------------------------------------------------------------------
def validate_inputs(blocks: list[BlockTable], coupling: CouplingCosts, budgets: list[Budget], k: int) -> None:
    """ValueError for a bad k, no blocks or budgets, duplicate budget names or widths outside the coupling tables
    (each `Budget` checks its own limits when it is made)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not blocks:
        raise ValueError("no blocks: a model needs at least one block")
    if not budgets:
        raise ValueError("no budgets given")
    names = [b.name for b in budgets]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"duplicate budget names: {duplicates}")
    h = coupling.num_widths
    for n, block in enumerate(blocks):
        if block.width.min() < 0 or block.width.max() >= h:
            raise ValueError(f"block {n}: widths must lie in [0, {h}) (the coupling tables' size)")
    if math.prod(len(b) for b in blocks) >= 2**62:
        raise ValueError("too many combinations to index with int64")


def check_limits_alone(budgets: list[Budget], min_params: int, min_latency: float) -> None:
    """Raise for the first budget that one of its limits alone makes unmeetable."""
    for b in budgets:
        if (b.max_params is not None and min_params > b.max_params) or (
            b.max_latency is not None and min_latency > b.max_latency
        ):
            raise BudgetError(b, min_params, min_latency)


def candidate_indices(blocks: list[BlockTable], choice: np.ndarray) -> np.ndarray:
    """(T, N) space indices of the chosen rows."""
    cols = [b.index[choice[:, n]] for n, b in enumerate(blocks)]
    return np.stack(cols, axis=1) if len(choice) else np.zeros((0, len(blocks)), dtype=np.int64)
