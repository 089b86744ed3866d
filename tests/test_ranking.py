"""The search's ranking diagnostics: the correlations, the probes spread over every width and depth, and the
warning for a block whose losses do not follow its depths."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from nas_bert.nas.ranking import block_ranking, probe_candidates, scored_candidates, spearman, top_spread
from nas_bert.reports.ranking import ranking_markdown, warnings_of
from nas_bert.space import SearchSpace

SPACE = SearchSpace(hidden_sizes=(16, 32), ops=("mha", "ffn", "sepconv3"), num_blocks=2, slots_per_block=3,
                    head_dim=8, name="t")


def test_spearman_is_scipys_with_ties_and_nan_when_a_side_is_constant():
    x, y = [1, 2, 2, 3, 5, 4], [0.3, 0.1, 0.2, 0.9, 0.5, 0.5]
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1, 2], [2, 1]))


def test_probes_cover_every_width_and_depth_and_are_seeded():
    probes = probe_candidates(SPACE, 12, seed=0)
    cells = {(int(SPACE.candidate_hidden[i]), int(SPACE.candidate_depth[i])) for i in probes}
    assert cells == {(w, d) for w in (16, 32) for d in (1, 2, 3)}
    assert (probes == probe_candidates(SPACE, 12, seed=0)).all() and (np.diff(probes) > 0).all()
    alive = [np.array([5, 1]), np.array([2])]
    scored = scored_candidates(SPACE, alive, 12, seed=0)
    assert all(set(a) <= set(s) for a, s in zip(alive, scored)) and all((np.diff(s) > 0).all() for s in scored)


def test_a_block_whose_loss_follows_capacity_tells_its_depths_apart_and_one_that_does_not_is_named():
    index = np.arange(SPACE.num_candidates)
    width, depth = SPACE.candidate_hidden[index], SPACE.candidate_depth[index]
    rng = np.random.default_rng(0)
    ranks = block_ranking(SPACE, 0, index, 1.0 / width + 0.1 / depth + 1e-3 * rng.random(len(index)))
    assert ranks.params_spearman < -0.5 and ranks.tells_depths_apart
    assert ranks.by_width[16].best > ranks.by_width[32].best and ranks.by_depth[1].mean > ranks.by_depth[3].mean
    assert ranks.by_width[16].count == SPACE.num_candidates // 2
    by_width_only = block_ranking(SPACE, 1, index, 1.0 / width + 1e-3 * rng.random(len(index)))  # ops do nothing
    assert not by_width_only.tells_depths_apart and abs(by_width_only.depth_signal) < 0.2
    warnings = warnings_of([ranks, by_width_only])
    assert len(warnings) == 1 and warnings[0].startswith("block 1 cannot tell its depths apart")
    spread = top_spread("small", [1.0, 1.0002, 1.01], [0.9, 0.95, 0.91], first_rank=2)
    assert spread.approx_range == pytest.approx(0.01) and spread.approx_relative == pytest.approx(0.01)
    text = ranking_markdown([ranks, by_width_only], [spread])
    assert "## Block 0" in text and "## Block 1" in text and "| small | 3 |" in text and "**Warnings**" in text
