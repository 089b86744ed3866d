"""Multi-budget model selection: the T best whole models under each budget, exactly, from per-block tables.

One algorithm, kept in one file (about 400 lines): its halves, tiles, bounds and running top-k only make sense
together. `top_k_per_budget` finds, for several budgets at once, the k lowest-loss models among all M^N
combinations exactly, without a Python loop over combinations: the blocks are split into two
halves, each half is enumerated with numpy (10^4 rows for two blocks of 100), and the left x right
cross join is scanned in tiles. Both halves are sorted by parameters, so a tile's cost and loss
bounds (exact, from the sorted ends and per-tile minima) let whole tiles be skipped or counted as
wholly feasible; only tiles across a budget's boundary are masked elementwise. Each budget keeps a
running top-k whose k-th loss filters later tiles. The pure-Python reference every combination is
checked against lives with the tests (`tests/helpers/selection_oracle.py`).

Summation order: the fast path sums (left half) + (right half), the reference sums block by block,
so with arbitrary floats the two can differ in the last bit; with values whose sums are exact
(integers, dyadic fractions) they agree exactly, ties included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nas_bert.nas.selection import (
    BlockTable,
    Budget,
    BudgetError,
    CouplingCosts,
    Selection,
    candidate_indices,
    check_limits_alone,
    validate_inputs,
)

# Tiles are kept at most this large whatever `chunk_elements` allows: a tile's float64 arrays
# (512 KiB each) then stay in cache, and small tiles bound the cost and loss more tightly.
_MAX_TILE_ELEMENTS = 2**16


# ------------------------------------------------------------------------------------------------
# Fast path: two enumerated halves, tiled cross join
# ------------------------------------------------------------------------------------------------
@dataclass
class _Half:
    """Every combination of a run of consecutive blocks, in lexicographic order of their rows."""

    sizes: tuple[int, ...]  # M of each block in the half
    loss: np.ndarray  # (R,)
    params: np.ndarray  # (R,) int64, coupling inside the half (and embeddings on the left) included
    flops: np.ndarray  # (R,) int64
    latency: np.ndarray  # (R,)
    first_w: np.ndarray  # (R,) width of the half's first block; -1 for the empty half
    last_w: np.ndarray  # (R,) width of the half's last block

    def __len__(self) -> int:
        return len(self.loss)


def _enumerate_half(blocks: list[BlockTable], coupling: CouplingCosts, with_first: bool) -> _Half:
    """All combinations of `blocks` with their summed loss and costs; the empty half is one zero row."""
    if not blocks:
        zero_i, zero_f, none = np.zeros(1, np.int64), np.zeros(1), np.full(1, -1, np.int64)
        return _Half((), zero_f, zero_i, zero_i, zero_f, none, none)
    head = blocks[0]
    loss, params, flops, latency = head.loss, head.params, head.flops, head.latency
    if with_first:
        params = coupling.first_params[head.width] + params
        flops = coupling.first_flops[head.width] + flops
        latency = coupling.first_latency[head.width] + latency
    first_w, last_w = head.width, head.width
    for block in blocks[1:]:  # (R,) x (M,) -> (R * M,), row-major keeps the lexicographic order
        pair = (last_w[:, None], block.width[None, :])
        loss = (loss[:, None] + block.loss[None, :]).ravel()
        params = (params[:, None] + coupling.params[pair] + block.params[None, :]).ravel()
        flops = (flops[:, None] + coupling.flops[pair] + block.flops[None, :]).ravel()
        latency = (latency[:, None] + coupling.latency[pair] + block.latency[None, :]).ravel()
        first_w, last_w = np.repeat(first_w, len(block)), np.tile(block.width, len(first_w))
    return _Half(tuple(len(b) for b in blocks), loss, params, flops, latency, first_w, last_w)


def _cross(matrix: np.ndarray, last_w: np.ndarray, first_w: np.ndarray | int) -> np.ndarray:
    """matrix[last_w, first_w] with 0 where the right half is empty (first_w == -1)."""
    first = np.broadcast_to(first_w, np.shape(last_w))
    return np.where(first >= 0, matrix[last_w, np.maximum(first, 0)], 0).astype(matrix.dtype)


@dataclass
class _Group:
    """Left half x the right rows whose first width is `width`, both sorted by params.

    The coupling between the halves is then a per-left-row constant, folded into `lp`/`lt`.
    """

    rows: np.ndarray  # (nL,) left indices in params order
    cols: np.ndarray  # (nC,) right indices in params order
    lp: np.ndarray  # (nL,) left params + coupling into `width`
    lt: np.ndarray  # (nL,) left latency + coupling into `width`
    ll: np.ndarray  # (nL,) left loss
    rp: np.ndarray  # (nC,)
    rt: np.ndarray  # (nC,)
    rl: np.ndarray  # (nC,)


def _groups(left: _Half, right: _Half, coupling: CouplingCosts) -> list[_Group]:
    groups = []
    for width in np.unique(right.first_w):
        cols = np.flatnonzero(right.first_w == width)
        cols = cols[np.argsort(right.params[cols], kind="stable")]
        lp = left.params + _cross(coupling.params, left.last_w, width)
        lt = left.latency + _cross(coupling.latency, left.last_w, width)
        rows = np.argsort(lp, kind="stable")
        groups.append(
            _Group(
                rows,
                cols,
                lp[rows],
                lt[rows],
                left.loss[rows],
                right.params[cols],
                right.latency[cols],
                right.loss[cols],
            )
        )
    return groups


def _smallest_costs(groups: list[_Group]) -> tuple[int, float]:
    """Exact min over all combinations of total params and of total latency.

    min_ij (a_i + b_j) = min a + min b, also for rounded float sums (rounding is monotone).
    """
    min_params = min(int(g.lp[0]) + int(g.rp[0]) for g in groups)
    min_latency = min(float(g.lt.min() + g.rt.min()) for g in groups)
    return min_params, min_latency


@dataclass
class _Tiles:
    """Tiles of every group with exact bounds; every field has shape (num_tiles,)."""

    group: np.ndarray
    r0: np.ndarray
    r1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    p_lo: np.ndarray
    p_hi: np.ndarray
    t_lo: np.ndarray
    t_hi: np.ndarray
    loss_lo: np.ndarray


def _spans(n: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    starts = np.arange(0, n, step)
    return starts, np.minimum(starts + step, n)


def _tile(groups: list[_Group], tile_elements: int) -> _Tiles:
    """Cut each group's (nL, nC) cross join into near-square tiles of <= tile_elements."""
    parts = []
    for gi, g in enumerate(groups):
        n_rows, n_cols = len(g.rows), len(g.cols)
        tc = min(n_cols, max(1, math.isqrt(tile_elements)))
        tr = min(n_rows, max(1, tile_elements // tc))
        (rs, re), (cs, ce) = _spans(n_rows, tr), _spans(n_cols, tc)
        # bounds per row span and per column span, (row spans,) and (column spans,); params are sorted
        row_b = (
            g.lp[rs],
            g.lp[re - 1],
            np.minimum.reduceat(g.lt, rs),
            np.maximum.reduceat(g.lt, rs),
            np.minimum.reduceat(g.ll, rs),
        )
        col_b = (
            g.rp[cs],
            g.rp[ce - 1],
            np.minimum.reduceat(g.rt, cs),
            np.maximum.reduceat(g.rt, cs),
            np.minimum.reduceat(g.rl, cs),
        )
        grid = np.meshgrid(np.arange(len(rs)), np.arange(len(cs)), indexing="ij")
        ri, ci = (x.ravel() for x in grid)
        bounds = [a[ri] + b[ci] for a, b in zip(row_b, col_b)]
        parts.append((np.full(len(ri), gi), rs[ri], re[ri], cs[ci], ce[ci], *bounds))
    return _Tiles(*(np.concatenate(column) for column in zip(*parts)))


@dataclass
class _TopK:
    """Running top-k of one budget under (loss, params, key); `key` is the flat combination index.

    Pushed candidates wait in `pending` until there are k of them, so a large k costs
    O(n log k) in all rather than a full sort per push; `threshold` only uses the merged part
    (a valid, if looser, filter).
    """

    k: int
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (<= k,) sorted
    params: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    key: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)
    num_pending: int = 0
    num_feasible: int = 0

    @property
    def threshold(self) -> float:
        """Loss a new combination must not exceed to enter (ties may still win on params/key)."""
        return float(self.loss[-1]) if len(self.loss) >= self.k else math.inf

    def push(self, loss: np.ndarray, params: np.ndarray, key: np.ndarray) -> None:
        self.pending.append((loss, params, key))
        self.num_pending += len(loss)
        if self.num_pending >= self.k:
            self.merge()

    def merge(self) -> None:
        """Fold the pending candidates into the sorted top-k."""
        if not self.pending:
            return
        loss, params, key = (
            np.concatenate([mine, *parts])
            for mine, *parts in zip((self.loss, self.params, self.key), *self.pending)
        )
        self.pending, self.num_pending = [], 0
        if len(loss) > self.k:  # keep the k smallest losses and their ties before sorting
            keep = loss <= np.partition(loss, self.k - 1)[self.k - 1]
            loss, params, key = loss[keep], params[keep], key[keep]
        order = np.lexsort((key, params, loss))[: self.k]
        self.loss, self.params, self.key = loss[order], params[order], key[order]


@dataclass
class _Limits:
    """A budget's limits in the dtypes they are compared in; None for an unset limit."""

    params: int | None
    latency: float | None

    @classmethod
    def of(cls, budget: Budget) -> _Limits:
        p, params = budget.max_params, None
        if p is not None:  # an integer is <= p iff it is <= floor(p); clipped to stay an int64
            params = 2**62 if p >= 2**62 else -(2**62) if p <= -(2**62) else math.floor(p)
        return cls(params, None if budget.max_latency is None else float(budget.max_latency))


class _TileSums:
    """Lazy (r, c) outer sums of one tile (loss, params, latency) written into reused buffers."""

    def __init__(self, g: _Group, rows: slice, cols: slice, buffers: dict[str, np.ndarray]) -> None:
        self.g, self.rows, self.cols, self.buffers = g, rows, cols, buffers
        self.shape = (rows.stop - rows.start, cols.stop - cols.start)
        self.size = self.shape[0] * self.shape[1]
        self._cache: dict[str, np.ndarray] = {}

    def buffer(self, name: str) -> np.ndarray:
        """The named scratch buffer viewed as (r, c)."""
        return self.buffers[name][: self.size].reshape(self.shape)

    def _sum(self, name: str, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = np.add(left[self.rows, None], right[None, self.cols], out=self.buffer(name))
        return self._cache[name]

    @property
    def loss(self) -> np.ndarray:
        return self._sum("loss", self.g.ll, self.g.rl)

    @property
    def params(self) -> np.ndarray:
        return self._sum("params", self.g.lp, self.g.rp)

    @property
    def latency(self) -> np.ndarray:
        return self._sum("latency", self.g.lt, self.g.rt)


def _classify(tiles: _Tiles, limits: list[_Limits]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tiles, budgets) masks from the exact bounds: no combination feasible; params / latency to check."""
    shape = (len(tiles.group), len(limits))
    none_ok, p_some, t_some = np.zeros(shape, bool), np.zeros(shape, bool), np.zeros(shape, bool)
    for b, lim in enumerate(limits):
        if lim.params is not None:
            none_ok[:, b] |= tiles.p_lo > lim.params
            p_some[:, b] = tiles.p_hi > lim.params
        if lim.latency is not None:
            none_ok[:, b] |= tiles.t_lo > lim.latency
            t_some[:, b] = tiles.t_hi > lim.latency
    return none_ok, p_some, t_some


def _feasible(sums: _TileSums, lim: _Limits, check_params: bool, check_latency: bool) -> np.ndarray | None:
    """(r, c) mask of the tile's combinations within `lim`; None when the bounds say all are."""
    mask = None
    if check_params:
        mask = np.less_equal(sums.params, lim.params, out=sums.buffer("mask"))
    if check_latency:
        if mask is None:
            mask = np.less_equal(sums.latency, lim.latency, out=sums.buffer("mask"))
        else:
            np.logical_and(mask, np.less_equal(sums.latency, lim.latency, out=sums.buffer("sel")), out=mask)
    return mask


def _push_candidates(sums: _TileSums, mask: np.ndarray | None, state: _TopK, n_right: int) -> None:
    """Push the tile's feasible combinations whose loss does not exceed the budget's threshold."""
    tau, sel = state.threshold, mask
    if tau < math.inf:
        sel = np.less_equal(sums.loss, tau, out=sums.buffer("sel"))
        if mask is not None:
            np.logical_and(sel, mask, out=sel)
    flat = np.arange(sums.size) if sel is None else np.flatnonzero(sel)
    if len(flat):
        g = sums.g
        i, j = sums.rows.start + flat // sums.shape[1], sums.cols.start + flat % sums.shape[1]
        state.push(g.ll[i] + g.rl[j], g.lp[i] + g.rp[j], g.rows[i] * n_right + g.cols[j])


def _scan(
    groups: list[_Group], tiles: _Tiles, limits: list[_Limits], states: list[_TopK], n_right: int
) -> None:
    """Visit the tiles (lowest loss bound first), counting feasible combinations and pushing candidates."""
    none_ok, p_some, t_some = _classify(tiles, limits)
    biggest = int(((tiles.r1 - tiles.r0) * (tiles.c1 - tiles.c0)).max())
    dtypes = {"loss": np.float64, "params": np.int64, "latency": np.float64, "mask": bool, "sel": bool}
    buffers = {name: np.empty(biggest, dtype) for name, dtype in dtypes.items()}
    for t in np.argsort(tiles.loss_lo, kind="stable"):
        active = np.flatnonzero(~none_ok[t])
        if not len(active):
            continue
        rows, cols = slice(int(tiles.r0[t]), int(tiles.r1[t])), slice(int(tiles.c0[t]), int(tiles.c1[t]))
        sums = _TileSums(groups[tiles.group[t]], rows, cols, buffers)
        for b in active:
            state = states[b]
            mask = _feasible(sums, limits[b], p_some[t, b], t_some[t, b])
            state.num_feasible += sums.size if mask is None else int(np.count_nonzero(mask))
            if tiles.loss_lo[t] <= state.threshold:
                _push_candidates(sums, mask, state, n_right)


def _selection(
    blocks: list[BlockTable], left: _Half, right: _Half, coupling: CouplingCosts, state: _TopK, budget: Budget
) -> Selection:
    """Decode the kept keys into block rows and recompute their costs in the scan's summation order."""
    i, j = np.divmod(state.key, len(right))
    lw, rw = left.last_w[i], right.first_w[j]
    choice = np.concatenate(
        [
            np.stack(np.unravel_index(i, left.sizes), axis=1),
            np.stack(np.unravel_index(j, right.sizes), axis=1)
            if right.sizes
            else np.zeros((len(i), 0), np.int64),
        ],
        axis=1,
    ).astype(np.int64)
    return Selection(
        choice=choice,
        index=candidate_indices(blocks, choice),
        loss=state.loss,
        params=state.params,
        flops=(left.flops[i] + _cross(coupling.flops, lw, rw)) + right.flops[j],
        latency=(left.latency[i] + _cross(coupling.latency, lw, rw)) + right.latency[j],
        num_feasible=state.num_feasible,
        budget=budget,
    )


def top_k_per_budget(
    blocks: list[BlockTable],
    coupling: CouplingCosts,
    budgets: list[Budget],
    k: int = 100,
    chunk_elements: int = 2**24,
) -> dict[str, Selection]:
    """For each budget, the k lowest-loss whole models (one candidate per block) that meet it.

    Exact over all prod(M_n) combinations. Results are sorted by loss, then params, then the
    lexicographic order of the choice. `chunk_elements` bounds the elements of one cross-join tile
    (memory); tiles are also kept <= 2^16 elements for cache locality and tighter pruning.

    Raises BudgetError for the first budget (in order) that one of its limits alone puts out of
    reach, else for the first budget no combination meets; ValueError for bad arguments.
    """
    validate_inputs(blocks, coupling, budgets, k)
    if chunk_elements < 1:
        raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
    split = max(1, len(blocks) // 2)
    left = _enumerate_half(blocks[:split], coupling, with_first=True)
    right = _enumerate_half(blocks[split:], coupling, with_first=False)
    groups = _groups(left, right, coupling)
    min_params, min_latency = _smallest_costs(groups)
    check_limits_alone(budgets, min_params, min_latency)

    tiles = _tile(groups, min(chunk_elements, _MAX_TILE_ELEMENTS))
    states = [_TopK(k) for _ in budgets]
    _scan(groups, tiles, [_Limits.of(b) for b in budgets], states, len(right))
    for budget, state in zip(budgets, states):
        state.merge()
        if state.num_feasible == 0:
            raise BudgetError(budget, min_params, min_latency)
    return {b.name: _selection(blocks, left, right, coupling, s, b) for b, s in zip(budgets, states)}
