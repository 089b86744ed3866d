"""The search stage's pieces fit together: selection prices a model exactly as StudentEncoder builds it,
budgets resolve from config, infeasible budgets are reported without losing the others."""

from __future__ import annotations

import numpy as np
import pytest

from nas_bert.encoder import StudentEncoder, encoder_flops, encoder_params
from nas_bert.nas.approximation import (
    VocabSpec,
    arch_of,
    block_tables,
    budgets_from_config,
    coupling_costs,
    select_feasible,
)
from nas_bert.nas.latency import LatencyTable, predict_latency
from nas_bert.nas.selection import Budget

VOCAB = VocabSpec(vocab_size=1000, max_positions=64, type_vocab_size=2)


def synthetic_table(space) -> LatencyTable:
    """A latency table with distinct made-up timings (no measuring: exact sums are what is tested)."""
    rng = np.random.default_rng(0)
    widths = space.hidden_sizes
    return LatencyTable(
        device={"type": "cpu", "name": "test", "num_threads": 1, "torch": "2.13"}, space=space.to_dict(),
        batch_size=1, seq_len=16, vocab_size=VOCAB.vocab_size, max_positions=VOCAB.max_positions,
        ops={f"{op}_{h}": float(rng.uniform(1e-4, 1e-3)) for op in space.ops for h in widths},
        projections={f"{a}->{b}": float(rng.uniform(1e-5, 1e-4)) for a in widths for b in widths if a != b},
        embeddings={str(h): float(rng.uniform(1e-5, 1e-4)) for h in widths},
    )


def all_candidates_tables(space, table, seed=0):
    rng = np.random.default_rng(seed)
    alive = [np.arange(space.num_candidates)] * space.num_blocks
    losses = [rng.uniform(0.1, 1.0, space.num_candidates) for _ in range(space.num_blocks)]
    return block_tables(space, alive, losses, table, seq_len=16)


def test_selected_models_cost_what_the_student_encoder_costs(tiny_space):
    table = synthetic_table(tiny_space)
    blocks = all_candidates_tables(tiny_space, table)
    coupling = coupling_costs(tiny_space, table, VOCAB, seq_len=16)
    selections, errors = select_feasible(blocks, coupling, [Budget("all", max_params=1e9)], k=40)
    assert not errors and len(selections["all"]) == 40
    sel = selections["all"]
    for r in range(len(sel)):
        arch = arch_of(tiny_space, sel.index[r])
        model = StudentEncoder(arch, VOCAB.vocab_size, VOCAB.max_positions, head_dim=tiny_space.head_dim)
        assert sel.params[r] == encoder_params(arch, VOCAB.vocab_size, VOCAB.max_positions) == sum(
            p.numel() for p in model.parameters())
        assert sel.flops[r] == encoder_flops(arch, seq_len=16)
        assert sel.latency[r] == pytest.approx(predict_latency(arch, table, tiny_space), rel=1e-12)
        assert sel.loss[r] == pytest.approx(sum(b.loss[c] for b, c in zip(blocks, sel.choice[r])))
    assert np.all(np.diff(sel.loss) >= 0)


def test_budgets_resolve_fractions_absolutes_and_latency():
    budgets = budgets_from_config([{"name": "a", "max_params_fraction": 0.25},
                                   {"name": "b", "max_params": 5e6, "max_latency_ms": 2.0}], teacher_params=20_000_000)
    assert budgets == [Budget("a", max_params=5e6), Budget("b", max_params=5e6, max_latency=2e-3)]
    with pytest.raises(ValueError, match="not both"):
        budgets_from_config([{"name": "x", "max_params": 1, "max_params_fraction": 0.1}], 10)
    with pytest.raises(ValueError, match="unknown keys \\['max_parms'\\]"):
        budgets_from_config([{"name": "x", "max_parms": 1}], 10)
    with pytest.raises(ValueError, match="sets neither"):
        budgets_from_config([{"name": "x"}], 10)


def test_an_impossible_budget_is_reported_and_the_others_still_selected(tiny_space):
    table = synthetic_table(tiny_space)
    blocks = all_candidates_tables(tiny_space, table)
    coupling = coupling_costs(tiny_space, table, VOCAB, seq_len=16)
    smallest = min(encoder_params(arch_of(tiny_space, [i, i, i]), VOCAB.vocab_size, VOCAB.max_positions)
                   for i in range(tiny_space.num_candidates))
    budgets = [Budget("impossible", max_params=1000), Budget("fine", max_params=1e9)]
    selections, errors = select_feasible(blocks, coupling, budgets, k=5)
    assert list(selections) == ["fine"] and len(errors) == 1
    assert errors[0].budget.name == "impossible" and errors[0].min_params <= smallest
    assert "is met by no architecture: the smallest has" in str(errors[0])
