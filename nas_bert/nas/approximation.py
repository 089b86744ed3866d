"""Performance approximation (NAS-BERT section 4): the loss table, the cost tables, and re-ranking.

Every surviving block candidate gets its block loss on dev data (the loss table) and its
parameters, FLOPs and predicted latency (the cost tables). The costs that couple neighbouring
blocks (width projections) or depend on the first width (embeddings) go into `CouplingCosts`, so
that `selection.top_k_per_budget` prices a whole model exactly as `StudentEncoder` builds it.
The top-T models of a budget by summed block loss are then re-ranked by their whole-model loss:
the path's blocks chained from the teacher's embedding output Y_0, against its last state Y_N.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nas_bert.arch import Arch
from nas_bert.nas.latency import (
    LatencyTable,
    candidate_latency,
    embedding_latency,
    projection_latency_matrix,
)
from nas_bert.nas.selection import (
    BlockTable,
    Budget,
    BudgetError,
    CouplingCosts,
    Selection,
)
from nas_bert.nas.top_k import top_k_per_budget
from nas_bert.space import SearchSpace, projection_flops, projection_params
from nas_bert.utils.modes import eval_mode


@dataclass(frozen=True)
class VocabSpec:
    """What the embeddings of a final model hold (taken from the teacher's config)."""

    vocab_size: int
    max_positions: int = 512
    type_vocab_size: int = 2

    def embedding_params(self, width: int) -> int:
        return (self.vocab_size + self.max_positions + self.type_vocab_size) * width + 2 * width


def budgets_from_config(items: Sequence[dict[str, Any]], teacher_params: int) -> list[Budget]:
    """Budgets from config entries: `name` plus `max_params` (absolute), `max_params_fraction`
    (of the teacher's parameters) and/or `max_latency_ms`."""
    budgets = []
    for item in items:
        item = dict(item)
        unknown = set(item) - {"name", "max_params", "max_params_fraction", "max_latency_ms"}
        if unknown or "name" not in item:
            raise ValueError(f"budget {item}: expected name and max_params / max_params_fraction / max_latency_ms"
                             f"{f'; unknown keys {sorted(unknown)}' if unknown else ''}")
        if item.get("max_params") is not None and item.get("max_params_fraction") is not None:
            raise ValueError(f"budget {item['name']!r}: give max_params or max_params_fraction, not both")
        max_params = item.get("max_params")
        if item.get("max_params_fraction") is not None:
            max_params = float(item["max_params_fraction"]) * teacher_params
        latency_ms = item.get("max_latency_ms")
        budgets.append(Budget(str(item["name"]), None if max_params is None else float(max_params),
                              None if latency_ms is None else float(latency_ms) / 1e3))
    return budgets


def loss_table(module, alive: Sequence[np.ndarray], states, masks) -> list[np.ndarray]:
    """Block loss of every alive candidate of every block on fixed dev batches."""
    space: SearchSpace = module.space
    with eval_mode(module):
        return [np.array([module.score_block(n, space.candidate(int(i)), states, masks) for i in alive[n]])
                for n in range(space.num_blocks)]


def block_tables(space: SearchSpace, alive: Sequence[np.ndarray], losses: Sequence[np.ndarray],
                 table: LatencyTable, seq_len: int) -> list[BlockTable]:
    """Per block: the alive candidates with their width, costs and loss."""
    latency, flops = candidate_latency(space, table), space.candidate_flops(seq_len)
    width = np.searchsorted(space.hidden_sizes, space.candidate_hidden)
    return [BlockTable(index=idx, width=width[idx], params=space.candidate_params[idx], flops=flops[idx],
                       latency=latency[idx], loss=loss)
            for idx, loss in zip((np.asarray(a, dtype=np.int64) for a in alive), losses)]


def coupling_costs(space: SearchSpace, table: LatencyTable, vocab: VocabSpec, seq_len: int) -> CouplingCosts:
    """Projection costs between widths (H, H) and embedding costs per first width (H,)."""
    widths = space.hidden_sizes
    params = np.array([[projection_params(a, b) for b in widths] for a in widths], dtype=np.int64)
    flops = np.array([[projection_flops(a, b, seq_len) for b in widths] for a in widths], dtype=np.int64)
    return CouplingCosts(
        params=params, flops=flops, latency=projection_latency_matrix(space, table),
        first_params=np.array([vocab.embedding_params(w) for w in widths], dtype=np.int64),
        first_flops=np.zeros(len(widths), dtype=np.int64),  # lookups: no matmul FLOPs
        first_latency=embedding_latency(space, table),
    )


def select_feasible(blocks: list[BlockTable], coupling: CouplingCosts, budgets: list[Budget],
                    k: int) -> tuple[dict[str, Selection], list[BudgetError]]:
    """Top-k per budget for every budget that some model meets; the others come back as errors."""
    errors: list[BudgetError] = []
    remaining = list(budgets)
    while remaining:
        try:
            return top_k_per_budget(blocks, coupling, remaining, k=k), errors
        except BudgetError as err:
            errors.append(err)
            remaining = [b for b in remaining if b.name != err.budget.name]
    return {}, errors


def arch_of(space: SearchSpace, indices: Sequence[int]) -> Arch:
    return Arch(blocks=tuple(space.candidate(int(i)) for i in indices))


@dataclass
class Ranked:
    """One model of a budget's top-T: its architecture, costs and both losses."""

    arch: Arch
    params: int
    flops: int
    latency: float  # seconds, predicted
    approx_loss: float  # sum of block losses
    model_loss: float  # whole-model loss after re-ranking
    approx_rank: int  # rank by approx_loss within the budget (0 = best; -1: a contender, not of the top-T)
    origin: str = "search"  # search | bert-L<l>-H<h> (a uniform BERT) | pick of <budget> (nas_bert.nas.contenders)


@torch.no_grad()
def rerank(module, space: SearchSpace, selection: Selection, states, masks) -> list[Ranked]:
    """The budget's top-T re-ranked by whole-model loss (best first; ties keep the approximate order)."""
    archs = [arch_of(space, indices) for indices in selection.index]
    with eval_mode(module):
        ranked = [
            Ranked(arch=arch, params=int(selection.params[r]), flops=int(selection.flops[r]),
                   latency=float(selection.latency[r]), approx_loss=float(selection.loss[r]),
                   model_loss=module.score_model(arch, states, masks), approx_rank=r)
            for r, arch in enumerate(archs)
        ]
    return sorted(ranked, key=lambda m: (m.model_loss, m.approx_rank))
