"""What makes the supernet rank (issue 24): the CPU study's search (its teacher, corpus and budgets) run once per
means, and each run's ranking diagnostics (`<run>/ranking.json`) side by side: per block Spearman(params, loss)
and the mean within-width Spearman(depth, loss), the top-T spread of each budget, the picks and the wall time.

Each variant is one `python search.py` run (`VARIANTS`: the paper's uniform sampling from fresh ops, ops extracted
from the teacher, FairNAS fairness, the BigNAS sandwich, several uniform paths per teacher forward, and pairs of
them). Variants already in the CSV and finished runs are skipped: run it again (with the committed CSV) to continue.

    NAS_BERT_GUTENBERG_DIR=../shared/data/corpus/gutenberg python benchmarks/supernet_means.py \\
        --out docs/results/supernet_means.csv --work outputs/supernet_means
    python benchmarks/supernet_means.py --smoke --out /tmp/means.csv --work /tmp/means   # debug sizes
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "paper": [],
    "extract": ["search.init=extract"],
    "fair": ["model.sampling=fair"],
    "sandwich": ["model.sampling=sandwich", "model.paths_per_step=4"],
    "uniform_x4": ["model.paths_per_step=4"],
    "extract_fair": ["search.init=extract", "model.sampling=fair"],
    "extract_sandwich": ["search.init=extract", "model.sampling=sandwich", "model.paths_per_step=4"],
    "cache": ["search.teacher_cache.dir=${paths.cache_dir}/supernet_states"],
    "settle": ["search.shrinking.settle_tau=0.8"],
}
STUDY = ["data/corpus=gutenberg", "data.num_proc=2", "search.latency.device=cpu", "search.latency.batch_size=1",
         "search.latency.seq_len=128",
         "search.selection.budgets=[{name: quarter, max_params_fraction: 0.25}, "
         "{name: seventh, max_params_fraction: 0.14}]"]  # conf/pipeline/cpu_study.yaml's search
SMOKE = ["debug=fast"]


def run_variant(name: str, overrides: list[str], work: Path, smoke: bool, seed: int) -> Path:
    run = work / f"{name}_s{seed}"
    if (run / "ranking.json").is_file() and (run / "elapsed.txt").is_file():
        return run
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, str(ROOT / "search.py"), f"hydra.run.dir={run}", "latest_link=null", "logger=csv",
               f"seed={seed}", f"paths.cache_dir={work / 'cache'}", *(SMOKE if smoke else STUDY), *overrides]
    start = time.perf_counter()
    run.mkdir(parents=True, exist_ok=True)
    with (work / f"{run.name}.log").open("w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"{name} failed (exit {code}); its log: {work / f'{run.name}.log'}")
    (run / "elapsed.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return run


def rows_of(name: str, seed: int, run: Path) -> list[dict]:
    """One row per block of the run's diagnostics, with its budgets' spread and picks."""
    numbers = json.loads((run / "ranking.json").read_text())
    picks = {f.stem: yaml.safe_load(f.read_text()) for f in sorted((run / "architectures").glob("*.yaml"))}
    budgets = {b["budget"]: b for b in numbers["budgets"]}
    common = {"variant": name, "seed": seed, "minutes": round(float((run / "elapsed.txt").read_text()) / 60, 1),
              **{f"{b}_relative_spread": budgets[b]["approx_relative"] for b in budgets},
              **{f"{b}_pick": " | ".join(f"{blk['hidden']}: {' '.join(o for o in blk['ops'] if o != 'identity')}"
                                         for blk in a["blocks"]) for b, a in picks.items()},
              **{f"{b}_model_loss": a["meta"]["model_loss"] for b, a in picks.items()},
              "machine": f"{platform.node()} ({os.cpu_count()} cores)", "date": date.today().isoformat()}
    return [{"block": b["block"], "params_spearman": b["params_spearman"], "depth_spearman": b["depth_signal"],
             "tells_depths_apart": b["tells_depths_apart"], **common} for b in numbers["blocks"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "supernet_means")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--smoke", action="store_true", help="debug sizes on the bundled corpus")
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(args.out.open())) if args.out.is_file() else []
    for seed in args.seeds:
        for name in args.variants:
            if any(r["variant"] == name and int(r["seed"]) == seed for r in rows):
                continue
            rows += rows_of(name, seed, run_variant(name, VARIANTS[name], work, args.smoke, seed))
            columns = list(dict.fromkeys(k for r in rows for k in r))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)
            mine = [r for r in rows if r["variant"] == name and r["seed"] == seed]
            print(name, seed, [(r["block"], round(float(r["params_spearman"]), 2),
                                round(float(r["depth_spearman"]), 2)) for r in mine], f"{mine[0]['minutes']} min",
                  flush=True)


if __name__ == "__main__":
    main()
