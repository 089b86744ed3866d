"""Multi-budget selection: the tiled numpy search equals brute force exactly, errors and validation."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.selection_oracle import brute_force_top_k

from nas_bert.nas.selection import (
    BlockTable,
    Budget,
    BudgetError,
    CouplingCosts,
    Selection,
)
from nas_bert.nas.top_k import top_k_per_budget
from nas_bert.reports.search import frontier, sample_cloud

FIELDS = ("choice", "index", "loss", "params", "flops", "latency")


def random_instance(
    rng: np.random.Generator, n_blocks: int, n_widths: int, dyadic: bool = True
) -> tuple[list[BlockTable], CouplingCosts]:
    """Small random blocks and couplings. Dyadic losses/latencies sum exactly in any order and,
    drawn from few values, tie often; integer params from few values tie too."""

    def real(low: int, high: int, size, scale: float) -> np.ndarray:
        if dyadic:
            return rng.integers(low, high, size) * scale
        return rng.uniform(low, high, size) * scale

    blocks = []
    for _ in range(n_blocks):
        m = int(rng.integers(3, 13))
        blocks.append(
            BlockTable(
                index=rng.choice(10_000, m, replace=False),
                width=rng.integers(0, n_widths, m),
                params=rng.integers(1, 15, m) * 100,
                flops=rng.integers(1, 10**6, m),
                latency=real(1, 16, m, 2**-10),
                loss=real(0, 10, m, 0.125),
            )
        )

    def square(high: int, scale: float, integer: bool) -> np.ndarray:
        values = rng.integers(0, high, (n_widths, n_widths)) * (1 if integer else scale)
        np.fill_diagonal(values, 0)
        return values

    coupling = CouplingCosts(
        params=square(400, 1, True),
        flops=square(10**5, 1, True),
        latency=square(8, 2**-10, False),
        first_params=rng.integers(0, 500, n_widths),
        first_flops=rng.integers(0, 10**5, n_widths),
        first_latency=rng.integers(0, 8, n_widths) * 2**-10,
    )
    return blocks, coupling


def everything(blocks: list[BlockTable], coupling: CouplingCosts) -> Selection:
    """Every combination, by brute force."""
    return brute_force_top_k(blocks, coupling, [Budget("all", max_params=float("inf"))], k=10**9)["all"]


def assert_same(got: dict[str, Selection], want: dict[str, Selection], exact: bool = True) -> None:
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        assert g.budget == w.budget and g.num_feasible == w.num_feasible, name
        assert g.choice.shape == w.choice.shape and g.choice.dtype == np.int64, name
        for f in FIELDS:
            if exact or f in ("choice", "index", "params", "flops"):
                np.testing.assert_array_equal(getattr(g, f), getattr(w, f), err_msg=f"{name}.{f}")
            else:
                np.testing.assert_allclose(getattr(g, f), getattr(w, f), rtol=1e-12, err_msg=f"{name}.{f}")


def quantile_budgets(all_models: Selection, rng: np.random.Generator) -> list[Budget]:
    """Params-only, latency-only and both-limit budgets whose limits equal some model's cost exactly."""
    p, t = np.sort(all_models.params), np.sort(all_models.latency)

    def at(values: np.ndarray, q: float) -> float:
        return float(values[int(q * (len(values) - 1))])

    return [
        Budget("params_low", max_params=at(p, rng.uniform(0.0, 0.2))),
        Budget("params_mid", max_params=at(p, 0.5)),
        Budget("latency", max_latency=at(t, rng.uniform(0.2, 0.7))),
        Budget("both", max_params=at(p, 0.7), max_latency=at(t, 0.5)),
        Budget("loose", max_params=at(p, 1.0) + 0.5, max_latency=at(t, 1.0)),
    ]


@pytest.mark.parametrize("n_blocks", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_exactly(n_blocks: int, seed: int) -> None:
    rng = np.random.default_rng(100 * n_blocks + seed)
    blocks, coupling = random_instance(rng, n_blocks, n_widths=int(rng.integers(2, 5)))
    budgets = quantile_budgets(everything(blocks, coupling), rng)
    k = int(rng.choice([1, 5, 37]))
    want = brute_force_top_k(blocks, coupling, budgets, k)
    for chunk in (1, 7, 64, 2**24):
        assert_same(top_k_per_budget(blocks, coupling, budgets, k, chunk_elements=chunk), want)


def test_ties_are_broken_by_params_then_choice_order() -> None:
    rng = np.random.default_rng(7)
    blocks, coupling = random_instance(rng, 3, n_widths=2)
    for b in blocks:  # every model has the same loss; params tie between many models
        b.loss[:] = 0.5
        b.params[:] = rng.integers(1, 3, len(b)) * 100
    coupling.params[:] = 0
    coupling.first_params[:] = 0
    budgets = [Budget("all", max_params=1e9)]
    want = brute_force_top_k(blocks, coupling, budgets, k=50)
    got = top_k_per_budget(blocks, coupling, budgets, k=50, chunk_elements=5)
    assert_same(got, want)
    sel = got["all"]
    assert np.all(sel.loss == 1.5) and np.all(np.diff(sel.params) >= 0)
    same_params = sel.params[1:] == sel.params[:-1]
    assert same_params.any()
    rows = [tuple(c) for c in sel.choice]
    assert all(a < b for a, b, same in zip(rows, rows[1:], same_params) if same)


def test_non_dyadic_floats_agree_up_to_rounding() -> None:
    rng = np.random.default_rng(3)
    blocks, coupling = random_instance(rng, 4, n_widths=3, dyadic=False)
    t = np.unique(everything(blocks, coupling).latency)
    # limits half-way between two achievable latencies: no total lies within rounding of them
    budgets = [Budget("latency", max_latency=float(t[len(t) // 3] + t[len(t) // 3 + 1]) / 2)]
    want = brute_force_top_k(blocks, coupling, budgets, k=20)
    assert_same(top_k_per_budget(blocks, coupling, budgets, k=20, chunk_elements=16), want, exact=False)


def test_single_block_and_k_beyond_the_feasible_count() -> None:
    rng = np.random.default_rng(11)
    blocks, coupling = random_instance(rng, 1, n_widths=3)
    budgets = [
        Budget("p", max_params=float(np.median(blocks[0].params + coupling.first_params[blocks[0].width])))
    ]
    assert_same(
        top_k_per_budget(blocks, coupling, budgets, k=1000),
        brute_force_top_k(blocks, coupling, budgets, 1000),
    )

    blocks, coupling = random_instance(rng, 3, n_widths=2)
    budgets = [Budget("all", max_latency=1.0)]
    got = top_k_per_budget(blocks, coupling, budgets, k=10**6, chunk_elements=3)["all"]
    assert len(got) == got.num_feasible == np.prod([len(b) for b in blocks])
    assert_same({"all": got}, brute_force_top_k(blocks, coupling, budgets, k=10**6))


def test_larger_instance_against_numpy_enumeration() -> None:
    """4 blocks x 20 candidates (160,000 models) at the default chunk size, against a full table."""
    rng = np.random.default_rng(5)
    n, m, h = 4, 20, 5
    blocks = [
        BlockTable(
            index=np.arange(m),
            width=rng.integers(0, h, m),
            params=rng.integers(10**5, 12 * 10**6, m),
            flops=rng.integers(1, 10**9, m),
            latency=rng.integers(1, 4000, m) * 2**-20,
            loss=rng.integers(0, 400, m) / 64,
        )
        for _ in range(n)
    ]
    projection_params = rng.integers(0, 300_000, (h, h)) * (1 - np.eye(h, dtype=np.int64))
    projection_latency = rng.integers(0, 100, (h, h)) * 2**-20 * (1 - np.eye(h))
    coupling = CouplingCosts(
        params=projection_params,
        flops=projection_params * 256,
        latency=projection_latency,
        first_params=rng.integers(0, 10**6, h),
        first_flops=np.zeros(h),
        first_latency=rng.integers(0, 100, h) * 2**-20,
    )
    rows = np.indices((m,) * n).reshape(n, -1)  # (N, m^N), lexicographic
    width = [blocks[i].width[rows[i]] for i in range(n)]
    loss = sum(blocks[i].loss[rows[i]] for i in range(n))
    params = sum(blocks[i].params[rows[i]] for i in range(n)) + coupling.first_params[width[0]]
    params = params + sum(coupling.params[width[i], width[i + 1]] for i in range(n - 1))
    latency = sum(blocks[i].latency[rows[i]] for i in range(n)) + coupling.first_latency[width[0]]
    latency = latency + sum(coupling.latency[width[i], width[i + 1]] for i in range(n - 1))
    order = np.lexsort((np.arange(len(loss)), params, loss))
    budgets = [
        Budget("5M", max_params=5e6),
        Budget("20M", max_params=20e6),
        Budget("lat", max_latency=float(np.median(latency))),
        Budget("both", max_params=25e6, max_latency=float(np.quantile(latency, 0.3))),
    ]
    got = top_k_per_budget(blocks, coupling, budgets, k=100)
    for b in budgets:
        ok = np.ones(len(loss), bool)
        if b.max_params is not None:
            ok &= params <= b.max_params
        if b.max_latency is not None:
            ok &= latency <= b.max_latency
        best = order[ok[order]][:100]
        sel = got[b.name]
        assert sel.num_feasible == int(ok.sum())
        np.testing.assert_array_equal(sel.choice, rows[:, best].T)
        np.testing.assert_array_equal(sel.loss, loss[best])
        np.testing.assert_array_equal(sel.params, params[best])
        np.testing.assert_array_equal(sel.latency, latency[best])


# -- budget errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n_blocks", [2, 3, 4])
def test_budget_error_names_the_smallest_achievable_costs(n_blocks: int) -> None:
    rng = np.random.default_rng(n_blocks)
    blocks, coupling = random_instance(rng, n_blocks, n_widths=3)
    all_models = everything(blocks, coupling)
    min_p, min_t = int(all_models.params.min()), float(all_models.latency.min())
    cases = [
        Budget("tiny", max_params=min_p - 1),
        Budget("fast", max_latency=min_t * 0.999),
        Budget("tiny_and_fast", max_params=min_p - 0.5, max_latency=min_t / 2),
    ]
    for budget in cases:
        ok = Budget("ok", max_params=1e12)
        for fn in (top_k_per_budget, brute_force_top_k):
            with pytest.raises(BudgetError) as err:
                fn(blocks, coupling, [ok, budget], k=3)
            assert err.value.budget == budget
            assert (err.value.min_params, err.value.min_latency) == (min_p, min_t)
            assert repr(budget.name) in str(err.value) and "raise the budget" in str(err.value)
    # exactly at the minimum is met
    at_min = [Budget("p", max_params=min_p), Budget("t", max_latency=min_t)]
    assert_same(
        top_k_per_budget(blocks, coupling, at_min, 3, 4), brute_force_top_k(blocks, coupling, at_min, 3)
    )


def test_budget_error_when_no_model_meets_both_limits_together() -> None:
    # two models: small but slow, or big but fast
    blocks = [
        BlockTable(
            index=[0, 1], width=[0, 0], params=[10, 100], flops=[1, 1], latency=[2.0, 1.0], loss=[1, 0]
        )
    ]
    coupling = CouplingCosts.zeros(1)
    budget = Budget("both", max_params=50, max_latency=1.5)
    for fn in (top_k_per_budget, brute_force_top_k):
        with pytest.raises(BudgetError, match="never both together") as err:
            fn(blocks, coupling, [Budget("ok", max_params=1000), budget])
        assert (err.value.budget, err.value.min_params, err.value.min_latency) == (budget, 10, 1.0)


def test_budget_error_message_format() -> None:
    blocks = [BlockTable([0], [0], [2_300_000], [1], [1.2e-3], [0.0])]
    with pytest.raises(BudgetError) as err:
        top_k_per_budget(blocks, CouplingCosts.zeros(1), [Budget("tiny", max_params=1e6)])
    assert str(err.value) == (
        "budget 'tiny' (max_params=1M) is met by no architecture: the smallest has 2.3M parameters "
        "and the fastest takes 1.2 ms; raise the budget or add smaller candidates to the space"
    )


# -- validation ------------------------------------------------------------------------------------
def test_invalid_arguments() -> None:
    rng = np.random.default_rng(0)
    blocks, coupling = random_instance(rng, 2, n_widths=2)
    ok = [Budget("a", max_params=1e9)]
    for fn in (top_k_per_budget, brute_force_top_k):
        with pytest.raises(ValueError, match="k must be"):
            fn(blocks, coupling, ok, k=0)
        with pytest.raises(ValueError, match="no budgets"):
            fn(blocks, coupling, [])
        with pytest.raises(ValueError, match="duplicate budget names"):
            fn(blocks, coupling, [Budget("a", max_params=1), Budget("a", max_latency=1.0)])
        with pytest.raises(ValueError, match="no blocks"):
            fn([], coupling, ok)
        with pytest.raises(ValueError, match="widths must lie"):
            fn(blocks, CouplingCosts.zeros(1), ok)
    with pytest.raises(ValueError, match="chunk_elements"):
        top_k_per_budget(blocks, coupling, ok, chunk_elements=0)
    with pytest.raises(ValueError, match="neither max_params nor max_latency"):
        Budget("none")
    with pytest.raises(ValueError, match="NaN"):
        Budget("nan", max_latency=float("nan"))


def test_invalid_tables() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        BlockTable([0, 1], [0, 0], [1, 2], [1, 2], [0.1, 0.2], [0.5])
    with pytest.raises(ValueError, match="empty"):
        BlockTable([], [], [], [], [], [])
    with pytest.raises(ValueError, match="whole numbers"):
        BlockTable([0], [0], [1.5], [1], [0.1], [0.5])
    with pytest.raises(ValueError, match="finite"):
        BlockTable([0], [0], [1], [1], [0.1], [np.nan])
    with pytest.raises(ValueError, match=r"latency must be \(2, 2\)"):
        CouplingCosts(
            np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((3, 3)), np.zeros(2), np.zeros(2), np.zeros(2)
        )
    with pytest.raises(ValueError, match=r"first_params must be \(2,\)"):
        CouplingCosts(
            np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(3), np.zeros(2), np.zeros(2)
        )


def test_the_search_picture_costs_every_combination_as_a_whole_model() -> None:
    blocks, coupling = random_instance(np.random.default_rng(3), 3, 3)
    full = everything(blocks, coupling)
    want = np.stack([full.params, full.latency, full.loss], axis=1)
    cloud = sample_cloud(blocks, coupling, n=10**6)  # few enough: every combination
    got = np.stack([cloud.params, cloud.latency, cloud.loss], axis=1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[np.lexsort(got.T)], want[np.lexsort(want.T)])
    drawn = sample_cloud(blocks, coupling, n=50, seed=1)
    rows = {tuple(r) for r in want.round(9)}
    assert len(drawn.loss) == 50 and all(tuple(r) in rows for r in np.stack(
        [drawn.params, drawn.latency, drawn.loss], axis=1).round(9))
    cost, loss = frontier(cloud.params, cloud.loss)
    assert np.all(np.diff(cost) >= 0) and np.all(np.diff(loss) < 0) and loss[-1] == full.loss.min()
