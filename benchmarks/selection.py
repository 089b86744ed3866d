"""Search benchmarks, part 1: selection speed of `top_k_per_budget`.

Builds N blocks x M surviving candidates drawn from the paper's space (real analytic params and
FLOPs, width projections and embeddings as `StudentEncoder` counts them), with a synthetic
latency (FLOPs / throughput + per-op overhead, with noise) and a synthetic block loss (falling
with size, with noise). Times the selection of the k best models under the paper's budgets
(5M / 10M / 30M / 60M parameters, embeddings included) plus one latency budget, best of
`--repeats`, and prints Markdown. Latency-predictor benchmarks live in a separate file.

    python benchmarks/selection.py                          # N=4 and N=3, M=100, k=100
    python benchmarks/selection.py --blocks 4 --candidates 100 --k 100 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml

from nas_bert.nas.selection import BlockTable, Budget, CouplingCosts, Selection
from nas_bert.nas.timing import cpu_model
from nas_bert.nas.top_k import top_k_per_budget
from nas_bert.space import SearchSpace, projection_flops, projection_params

CONF = Path(__file__).resolve().parents[1] / "conf" / "space"
VOCAB, MAX_POSITIONS, TYPE_VOCAB = 30522, 512, 2
SEQ_LEN = 128
THROUGHPUT = 1e11  # FLOP/s of the synthetic latency model
OP_OVERHEAD = 20e-6  # seconds per op (kernel launches, norms, activations)
PARAM_BUDGETS = (5e6, 10e6, 30e6, 60e6)  # the paper's


def load_space(name: str = "nas_bert") -> SearchSpace:
    return SearchSpace.from_dict(yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def make_blocks(
    space: SearchSpace, n_blocks: int, n_candidates: int, rng: np.random.Generator
) -> list[BlockTable]:
    """`n_candidates` random survivors per block with real costs, synthetic latency and loss."""
    params, flops = space.candidate_params, space.candidate_flops(SEQ_LEN)  # (C,)
    width = np.repeat(np.arange(len(space.hidden_sizes)), space.num_candidates // len(space.hidden_sizes))
    blocks = []
    for n in range(n_blocks):
        idx = np.sort(rng.choice(space.num_candidates, n_candidates, replace=False))  # (M,)
        noise = rng.lognormal(0.0, 0.05, n_candidates)
        latency = (flops[idx] / THROUGHPUT + OP_OVERHEAD * space.candidate_depth[idx]) * noise
        loss = 0.1 * (n + 1) * (params[idx] / 1e6) ** -0.3 * rng.lognormal(0.0, 0.1, n_candidates)
        blocks.append(BlockTable(idx, width[idx], params[idx], flops[idx], latency, loss))
    return blocks


def make_coupling(space: SearchSpace) -> CouplingCosts:
    """Width projections between blocks; embeddings at the first block's width (lookups cost no FLOPs)."""
    hs = space.hidden_sizes
    p = np.array([[projection_params(a, b) for b in hs] for a in hs])  # (H, H)
    f = np.array([[projection_flops(a, b, SEQ_LEN) for b in hs] for a in hs])  # (H, H)
    latency = np.where(f > 0, f / THROUGHPUT + OP_OVERHEAD, 0.0)
    first_params = np.array([(VOCAB + MAX_POSITIONS + TYPE_VOCAB) * h + 2 * h for h in hs])  # (H,)
    return CouplingCosts(p, f, latency, first_params, np.zeros(len(hs)), np.full(len(hs), OP_OVERHEAD))


def make_budgets(blocks: list[BlockTable]) -> list[Budget]:
    """The paper's parameter budgets plus a latency budget near a typical model's latency."""
    typical = float(sum(np.median(b.latency) for b in blocks))
    budgets = [Budget(f"{p / 1e6:g}M", max_params=p) for p in PARAM_BUDGETS]
    return [*budgets, Budget(f"{typical * 1e3:.2g}ms", max_latency=round(typical, 5))]


def best_time(fn, repeats: int) -> tuple[float, object]:
    """Fastest of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def selection_speed(n_blocks: int, n_candidates: int, k: int, repeats: int, seed: int = 0) -> dict:
    """Time one multi-budget selection over n_candidates ** n_blocks models."""
    space = load_space()
    rng = np.random.default_rng(seed)
    blocks = make_blocks(space, n_blocks, n_candidates, rng)
    coupling, budgets = make_coupling(space), make_budgets(blocks)
    seconds, result = best_time(lambda: top_k_per_budget(blocks, coupling, budgets, k=k), repeats)
    combinations = n_candidates**n_blocks
    return {
        "blocks": n_blocks,
        "candidates": n_candidates,
        "combinations": combinations,
        "k": k,
        "seconds": seconds,
        "combinations_per_s": combinations / seconds,
        "budgets": [budget_summary(s) for s in result.values()],
    }


def budget_summary(sel: Selection) -> dict:
    return {
        "budget": sel.budget.name,
        "feasible": sel.num_feasible,
        "best_loss": float(sel.loss[0]),
        "best_params": int(sel.params[0]),
        "best_latency_ms": float(sel.latency[0]) * 1e3,
    }


def print_markdown(rows: list[dict]) -> None:
    print(f"Selection speed ({cpu_model()}, {os.cpu_count()} CPUs, numpy {np.__version__})\n")
    print("| N x M | combinations | budgets | k | best time (s) | combinations/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['blocks']} x {r['candidates']} | {r['combinations']:,} | {len(r['budgets'])} | {r['k']} "
            f"| {r['seconds']:.3f} | {r['combinations_per_s']:.3g} |"
        )
    for r in rows:
        print(f"\n{r['blocks']} x {r['candidates']}:\n")
        print("| budget | feasible | best loss | its params | its latency (ms) |")
        print("|---|---:|---:|---:|---:|")
        for b in r["budgets"]:
            print(
                f"| {b['budget']} | {b['feasible']:,} | {b['best_loss']:.4f} | {b['best_params'] / 1e6:.2f}M "
                f"| {b['best_latency_ms']:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, nargs="+", default=[4, 3], help="N values to run")
    parser.add_argument("--candidates", type=int, default=100, help="M surviving candidates per block")
    parser.add_argument("--k", type=int, default=100, help="models kept per budget")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    rows = [selection_speed(n, args.candidates, args.k, args.repeats, args.seed) for n in args.blocks]
    print_markdown(rows)
    if args.json is not None:
        args.json.write_text(json.dumps({"cpu": cpu_model(), "selection_speed": rows}, indent=2))


if __name__ == "__main__":
    main()
