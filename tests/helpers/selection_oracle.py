"""The reference of the multi-budget selection: every combination enumerated in Python, block by block.

`nas_bert.nas.selection.top_k_per_budget` must return exactly what this returns (tests/test_selection.py).
"""

from __future__ import annotations

import itertools

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


def brute_force_top_k(
    blocks: list[BlockTable],
    coupling: CouplingCosts,
    budgets: list[Budget],
    k: int = 100,
    chunk_elements: int = 2**24,
) -> dict[str, Selection]:
    """Same contract as `top_k_per_budget`, by itertools.product; sums block by block. For tests."""
    del chunk_elements  # same signature as the fast path; nothing to bound here
    validate_inputs(blocks, coupling, budgets, k)
    rows = []  # (loss, params, choice, flops, latency)
    for choice in itertools.product(*(range(len(b)) for b in blocks)):
        widths = [int(b.width[c]) for b, c in zip(blocks, choice)]
        loss = params = flops = latency = 0
        for b, c in zip(blocks, choice):
            loss += float(b.loss[c])
            params += int(b.params[c])
            flops += int(b.flops[c])
            latency += float(b.latency[c])
        for wi, wj in itertools.pairwise(widths):
            params += int(coupling.params[wi, wj])
            flops += int(coupling.flops[wi, wj])
            latency += float(coupling.latency[wi, wj])
        params += int(coupling.first_params[widths[0]])
        flops += int(coupling.first_flops[widths[0]])
        latency += float(coupling.first_latency[widths[0]])
        rows.append((float(loss), params, choice, flops, float(latency)))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    min_params, min_latency = min(r[1] for r in rows), min(r[4] for r in rows)
    check_limits_alone(budgets, min_params, min_latency)

    out = {}
    for budget in budgets:
        feasible = [
            r
            for r in rows
            if (budget.max_params is None or r[1] <= budget.max_params)
            and (budget.max_latency is None or r[4] <= budget.max_latency)
        ]
        if not feasible:
            raise BudgetError(budget, min_params, min_latency)
        top = feasible[:k]
        choice = np.array([r[2] for r in top], dtype=np.int64).reshape(len(top), len(blocks))
        out[budget.name] = Selection(
            choice=choice,
            index=candidate_indices(blocks, choice),
            loss=np.array([r[0] for r in top], dtype=np.float64),
            params=np.array([r[1] for r in top], dtype=np.int64),
            flops=np.array([r[3] for r in top], dtype=np.int64),
            latency=np.array([r[4] for r in top], dtype=np.float64),
            num_feasible=len(feasible),
            budget=budget,
        )
    return out
