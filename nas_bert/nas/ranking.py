"""Ranking diagnostics of a search: does each block's loss follow what its candidates can do?

A supernet that ranks gives a wider or deeper block a lower block loss. Per block, over the scored candidates
(the survivors of shrinking plus `probes` drawn evenly over every (width, depth)): the loss by width and by
depth, Spearman(params, loss), and Spearman(depth, loss) within each width; per budget, how far apart its top-T
lie. A block whose deeper candidates are not clearly better within its widths cannot tell its depths apart: the
search then picks its ops by chance, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef

from nas_bert.arch import IDENTITY, BlockArch
from nas_bert.space import SearchSpace

DEPTH_SIGNAL = -0.2  # the mean within-width Spearman(depth, loss) a block needs to tell its depths apart


@dataclass(frozen=True)
class GroupLoss:
    """The block losses of one group of candidates (one width, or one depth)."""

    count: int
    best: float
    mean: float


@dataclass(frozen=True)
class BlockRanking:
    """What one block's losses follow."""

    block: int
    by_width: dict[int, GroupLoss]
    by_depth: dict[int, GroupLoss]
    params_spearman: float  # over every scored candidate; < 0: more parameters, lower loss
    depth_spearman: dict[int, float]  # width -> Spearman(depth, loss) among its candidates (nan: one depth)

    @property
    def depth_signal(self) -> float:
        """The mean of the within-width Spearman(depth, loss) (nan when no width has two depths)."""
        values = [v for v in self.depth_spearman.values() if not math.isnan(v)]
        return sum(values) / len(values) if values else math.nan

    @property
    def tells_depths_apart(self) -> bool:
        return self.depth_signal <= DEPTH_SIGNAL


@dataclass(frozen=True)
class TopSpread:
    """How far apart a budget's top-T lie, by the summed block loss and by the whole-model loss."""

    budget: str
    count: int
    approx_range: float  # max - min of the approximate (summed block) loss
    approx_relative: float  # that range over the best approximate loss
    model_range: float
    reranked_first: int  # the approximate rank of the whole-model winner (0: re-ranking kept the first)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); nan when either side is constant or n < 3."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearman_corrcoef(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b; nan when either side is constant or n < 3."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(kendall_rank_corrcoef(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))


def groups(keys: np.ndarray, loss: np.ndarray) -> dict[int, GroupLoss]:
    return {int(k): GroupLoss(int((keys == k).sum()), float(loss[keys == k].min()), float(loss[keys == k].mean()))
            for k in np.unique(keys)}


def block_ranking(space: SearchSpace, block: int, index: np.ndarray, loss: np.ndarray) -> BlockRanking:
    """The diagnostics of one block from its scored candidates (`index`, shape (n,)) and their losses (n,)."""
    width, depth = space.candidate_hidden[index], space.candidate_depth[index]
    params = space.candidate_params[index]
    within = {int(w): spearman(depth[width == w].tolist(), loss[width == w].tolist()) for w in np.unique(width)}
    return BlockRanking(block, groups(width, loss), groups(depth, loss), spearman(params.tolist(), loss.tolist()),
                        within)


def probe_candidates(space: SearchSpace, count: int, seed: int) -> np.ndarray:
    """`count` candidate indices spread evenly over every (width, depth) of a block, ops drawn at random; shape
    (count,), sorted, without repeats."""
    rng = np.random.default_rng(seed)
    cells = [(w, d) for w in space.hidden_sizes for d in range(1, space.slots_per_block + 1)]
    picked: set[int] = set()
    for i in range(count):
        hidden, depth = cells[i % len(cells)]
        ops = tuple(space.ops[int(c)] for c in rng.integers(len(space.ops), size=depth))
        picked.add(space.index_of(BlockArch(hidden, ops + (IDENTITY,) * (space.slots_per_block - depth))))
    return np.array(sorted(picked), dtype=np.int64)


def scored_candidates(space: SearchSpace, alive: Sequence[np.ndarray], probes: int,
                      seed: int) -> list[np.ndarray]:
    """Per block: its survivors and `probes` more (`probe_candidates`, seeded per block), without repeats."""
    return [np.union1d(np.asarray(a, dtype=np.int64), probe_candidates(space, probes, seed + n))
            for n, a in enumerate(alive)]


def top_spread(budget: str, approx: Sequence[float], model: Sequence[float], first_rank: int) -> TopSpread:
    """A budget's spread from its top-T's approximate and whole-model losses."""
    low = min(approx)
    return TopSpread(budget, len(approx), max(approx) - low, (max(approx) - low) / low if low else math.nan,
                     max(model) - min(model), first_rank)
