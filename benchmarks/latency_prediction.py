"""Latency lookup table vs. measured latency of whole `StudentEncoder`s.

Builds `--models` whole students spread across the size range (random architectures from a
seeded rng: per block a random width, a random depth, so identity slots are common, and random
ops; a quarter with an explicit embedding size; sorted by parameters and taken evenly spaced),
then times the latency table's parts (`part_calls`) and the whole models in the same round-robin
passes (`time_calls`: eval, no_grad, mask of ones, least of `--rounds` quiet
`Timer.blocked_autorange` medians, the process's thread count), so a machine whose speed drifts
(neighbours on a shared host) affects both alike. Prints a Markdown table of predicted vs.
measured latency and the mean absolute percentage error (MAPE).

    python benchmarks/latency_prediction.py                          # MiniLM space, CPU, batch 8, T 128
    python benchmarks/latency_prediction.py --batch 1 --json out.json
    python benchmarks/latency_prediction.py --space nas_bert --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

from nas_bert.arch import IDENTITY, Arch, BlockArch
from nas_bert.encoder import StudentEncoder, encoder_flops, encoder_params
from nas_bert.nas.latency import assemble_table, part_calls, predict_latency
from nas_bert.nas.timing import QUIET_SHARE, time_calls
from nas_bert.space import SearchSpace

CONF = Path(__file__).resolve().parents[1] / "conf" / "space"


def load_space(name: str) -> SearchSpace:
    return SearchSpace.from_dict(yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def random_arch(space: SearchSpace, rng: np.random.Generator) -> Arch:
    """Per block: uniform width, uniform depth 1..S (identity pads the rest), uniform ops."""
    blocks = []
    for _ in range(space.num_blocks):
        depth = int(rng.integers(1, space.slots_per_block + 1))
        ops = [space.ops[int(c)] for c in rng.integers(len(space.ops), size=depth)]
        ops += [IDENTITY] * (space.slots_per_block - depth)
        blocks.append(BlockArch(hidden=int(rng.choice(space.hidden_sizes)), ops=tuple(ops)))
    embed = int(rng.choice(space.hidden_sizes)) if rng.random() < 0.25 else None
    return Arch(blocks=tuple(blocks), embed=embed)


def stratified_archs(space: SearchSpace, count: int, vocab_size: int, seed: int,
                     pool: int = 2000) -> list[Arch]:
    """`count` architectures evenly spaced in parameter count among `pool` random ones."""
    rng = np.random.default_rng(seed)
    archs = [random_arch(space, rng) for _ in range(pool)]
    archs.sort(key=lambda a: encoder_params(a, vocab_size, ffn_ratio=space.ffn_ratio))
    picks = np.linspace(0, len(archs) - 1, count).round().astype(int)
    return [archs[i] for i in picks]


def model_call(arch: Arch, space: SearchSpace, device: torch.device, batch: int, seq_len: int,
               vocab_size: int) -> Callable[[], torch.Tensor]:
    """One forward of the whole student (eval mode), ids and a mask of ones as the data gives."""
    model = StudentEncoder(arch, vocab_size, head_dim=space.head_dim, ffn_ratio=space.ffn_ratio).to(device).eval()
    ids = torch.randint(1, vocab_size, (batch, seq_len), device=device)  # (B, T)
    mask = torch.ones(batch, seq_len, dtype=torch.long, device=device)  # (B, T)
    return lambda: model(ids, mask)


def describe(arch: Arch) -> str:
    """Compact text: 'e96 / 128: mha ffn - - / ...' ('-' = identity)."""
    blocks = [f"{b.hidden}: " + " ".join("-" if op == IDENTITY else op.replace("sepconv", "sc")
                                          for op in b.ops) for b in arch.blocks]
    return f"e{arch.embed_size} / " + " / ".join(blocks)


def run(args: argparse.Namespace) -> dict:
    space, device = load_space(args.space), torch.device(args.device)
    start = time.perf_counter()
    load_before = os.getloadavg()
    shape = {"batch_size": args.batch, "seq_len": args.seq_len, "vocab_size": args.vocab, "max_positions": 512}
    parts = part_calls(space, device, chain=args.chain, **shape)
    archs = stratified_archs(space, args.models, args.vocab, args.seed)
    models = [model_call(a, space, device, args.batch, args.seq_len, args.vocab) for a in archs]
    # parts and whole models are timed in the same round-robin passes, so drifting machine speed
    # (neighbours on the host, frequency) affects both alike
    seconds, contention = time_calls([*parts.values(), *models], args.min_run_time, args.rounds, args.max_rounds)
    n = len(parts)
    table = assemble_table(space, device, list(parts), seconds[:n], contention[:n], chain=args.chain, **shape)
    measured_s, contention = seconds[n:], contention[n:]
    rows = []
    for arch, measured, share in zip(archs, measured_s, contention):
        predicted = predict_latency(arch, table, space)
        rows.append({
            "arch": arch.to_dict(), "desc": describe(arch),
            "params_m": encoder_params(arch, args.vocab, ffn_ratio=space.ffn_ratio) / 1e6,
            "gflops": args.batch * encoder_flops(arch, args.seq_len, space.ffn_ratio) / 1e9,
            "predicted_ms": predicted * 1e3, "measured_ms": measured * 1e3,
            "error_pct": 100 * (predicted - measured) / measured, "contention": share,
        })
    errors = np.array([r["error_pct"] for r in rows])
    return {
        "device": table.device, "space": space.name, "batch": args.batch, "seq_len": args.seq_len,
        "total_seconds": time.perf_counter() - start, "rows": rows,
        "mape_pct": float(np.abs(errors).mean()), "mean_error_pct": float(errors.mean()),
        "max_abs_error_pct": float(np.abs(errors).max()), "rounds": args.rounds,
        "loadavg_1min": [load_before[0], os.getloadavg()[0]], "table_contention": table.contention,
        "models_contention": max(contention), "table": table.to_dict(),
    }


def print_report(result: dict) -> None:
    dev = result["device"]
    threads = f", {dev['num_threads']} threads" if "num_threads" in dev else ""
    print(f"## Latency prediction: space {result['space']}, {dev['type']} ({dev['name']}{threads}), "
          f"torch {dev['torch']}, batch {result['batch']}, seq_len {result['seq_len']}\n")
    print("| # | architecture | params (M) | FLOPs (G) | predicted ms | measured ms | error % |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, r in enumerate(result["rows"]):
        print(f"| {i} | {r['desc']} | {r['params_m']:.2f} | {r['gflops']:.2f} | {r['predicted_ms']:.3f} | "
              f"{r['measured_ms']:.3f} | {r['error_pct']:+.1f} |")
    print(f"\nMAPE {result['mape_pct']:.2f}% (mean signed error {result['mean_error_pct']:+.2f}%, "
          f"max |error| {result['max_abs_error_pct']:.1f}%); "
          f"total {result['total_seconds']:.1f}s; 1-min load average {result['loadavg_1min'][0]:.2f} "
          f"-> {result['loadavg_1min'][1]:.2f}; worst other-process CPU share of a kept timing: table "
          f"{result['table_contention']:.0%}, models {result['models_contention']:.0%} (quiet: <= {QUIET_SHARE:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="minilm", help="name of a conf/space/*.yaml")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--models", type=int, default=24)
    parser.add_argument("--min-run-time", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=3, help="round-robin repeats; the least median counts")
    parser.add_argument("--max-rounds", type=int, default=6,
                        help="retry passes for timings taken while other processes used the CPUs")
    parser.add_argument("--chain", type=int, default=4, help="copies of each op chained per timed call")
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the full result here")
    args = parser.parse_args()
    result = run(args)
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
