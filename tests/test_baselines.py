"""Uniform BERT baselines: closest in parameters, closest in measured latency, and the refusal naming the closest."""

from __future__ import annotations

import pytest

from nas_bert.encoder import StudentEncoder, encoder_params
from nas_bert.modeling.students import uniform_arch
from nas_bert.nas.baselines import (
    BaselineError,
    arch_latency_ms,
    blocks_for,
    closest_in_latency,
    closest_in_params,
    relative_latency,
    uniform_grid,
)

VOCAB, POSITIONS = 30522, 512
GRID = uniform_grid(range(2, 13), range(32, 385, 32), teacher_layers=6, teacher_blocks=3, vocab_size=VOCAB,
                    max_positions=POSITIONS, ffn_ratio=4)


def test_depths_keep_the_teachers_block_boundaries():
    assert [blocks_for(depth, 6, 3) for depth in (2, 3, 5, 12)] == [2, 3, 3, 3]
    assert blocks_for(4, 12, 4) == 4 and blocks_for(3, 12, 4) == 3 and blocks_for(5, 10, 5) == 5
    model = next(m for m in GRID if (m.layers, m.hidden) == (5, 128))
    assert [b.depth // 2 for b in model.arch.blocks] == [2, 2, 1]
    assert model.params == encoder_params(model.arch, VOCAB, POSITIONS) == sum(
        p.numel() for p in StudentEncoder(model.arch, VOCAB, POSITIONS, head_dim=32).parameters())


def test_closest_in_parameters_searches_every_depth():
    target = encoder_params(uniform_arch(9, 96, 3), VOCAB, POSITIONS)
    found = closest_in_params(target, GRID)
    assert (found.layers, found.hidden, found.params) == (9, 96, target)
    assert all(abs(m.params - target) >= abs(found.params - target) for m in GRID)
    with pytest.raises(BaselineError, match=r"within 25%.*closest is L2 H32"):
        closest_in_params(100_000, GRID)


def test_closest_in_latency_bisects_the_widths_of_each_depth():
    """A latency model that grows with depth and width: the bisection finds the exact match, timing fewer models."""
    timed = []

    def measure(arch) -> float:
        timed.append(arch)
        return 0.1 * len(arch.layers) + 0.002 * arch.blocks[0].hidden

    target = 0.1 * 8 + 0.002 * 160  # L4 H160 (8 ops)
    found = closest_in_latency(target, GRID, measure)
    assert (found.layers, found.hidden) == (4, 160) and found.latency_ms == pytest.approx(target)
    assert len(timed) < len(GRID) / 2
    with pytest.raises(BaselineError, match=r"latency.*closest is L12 H384"):
        closest_in_latency(100.0, GRID, measure)


def test_latency_is_measured_on_a_built_encoder():
    assert 0 < arch_latency_ms(uniform_arch(2, 32, 1), 1000, 64, head_dim=16, ffn_ratio=4, seq_len=16,
                               min_run_time=0.01) < 1000


def test_relative_latency_times_the_two_side_by_side():
    small, large = uniform_arch(1, 32, 1), uniform_arch(8, 256, 2)  # ~100x the work: a margin no load can close
    sizes = dict(vocab_size=1000, max_positions=64, head_dim=16, ffn_ratio=4, seq_len=32, min_run_time=0.02)
    assert relative_latency(large, small, **sizes) > 2 > 0.5 > relative_latency(small, large, **sizes) > 0
