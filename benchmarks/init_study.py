"""How a student starts (issue 23): `teacher_embeddings` against `extract` random (ETD-Rand) and `extract`
importance (ETD-Impt), for the CPU study's uniform bert-L4-H128 and its searched 1/4 student
(`benchmarks/archs/cpu_study_quarter.yaml`), pre-trained with the CPU study's recipe (conf/pipeline/cpu_study.yaml:
MiniLM teacher, Gutenberg books, representation KD with the MiniLM term, batch 32 x 128 tokens, lr 1e-3).

Each (student, init, seed) is one `python train.py` run of `--tokens` tokens, validated every 61 steps (249,856
tokens); the validation loss nearest each of 0.25M, 0.5M, 1M and 2M tokens is one CSV row (`--out`). Rows already
in the CSV are skipped, so the study resumes across sittings (commit the CSV between them).

    python benchmarks/init_study.py --seeds 0 --out docs/results/init_study_pretrain.csv
    python benchmarks/init_study.py --out docs/results/init_study_pretrain.csv --plot docs/results/init_study.png
    python benchmarks/init_study.py --smoke --out /tmp/smoke.csv        # debug sizes on the bundled corpus
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDENTS = {"bert-L4-H128": "student.baseline={layers: 4, hidden: 128, blocks: 1}",
            "nas-bert-quarter": f"student.arch_file={ROOT / 'benchmarks' / 'archs' / 'cpu_study_quarter.yaml'}"}
INITS = {"teacher_embeddings": ["student.init=teacher_embeddings"],
         "extract_random": ["student.init=extract", "student.extract.selection=random"],
         "extract_importance": ["student.init=extract", "student.extract.selection=importance"]}
RECIPE = ["data/corpus=gutenberg", "data.num_proc=2", "data.batch_size=32", "model.optimizer.lr=1e-3",
          "trainer.val_check_interval=61", "trainer.limit_val_batches=8", "model.intermediate.minilm_weight=1",
          "model.intermediate.minilm_layer=4", "logger=csv"]
SMOKE = ["debug=fast", "trainer.val_check_interval=2", "logger=csv"]
MILESTONES = (250_000, 500_000, 1_000_000, 2_000_000)
COLUMNS = ("student", "init", "seed", "milestone", "step", "tokens", "val_loss", "val_hidden_last", "val_embedding",
           "machine", "date")


def done(out: Path) -> set[tuple[str, str, int]]:
    if not out.is_file():
        return set()
    return {(r["student"], r["init"], int(r["seed"])) for r in csv.DictReader(out.open())}


def append_rows(out: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Append `rows` to the CSV `out` (its header first when it is new)."""
    new = not out.is_file()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)


def val_rows(run: Path) -> list[dict[str, float]]:
    """(step, val/...) of every validation the run logged."""
    rows = [r for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("val/loss")]
    return [{"step": int(r["step"]), **{k: float(r[k]) for k in ("val/loss", "val/hidden_last", "val/embedding")
                                        if r.get(k)}} for r in rows]


def run_one(student: str, init: str, seed: int, tokens: int, work: Path, smoke: bool) -> Path:
    run = work / f"{student}_{init}_s{seed}"
    overrides = [STUDENTS[student], *INITS[init], f"seed={seed}", f"hydra.run.dir={run}",
                 f"paths.cache_dir={work / 'cache'}", *(SMOKE if smoke else [*RECIPE, f"tokens={tokens}"])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    log = work / f"{run.name}.log"
    work.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        code = subprocess.run([sys.executable, str(ROOT / "train.py"), *overrides], env=env, stdout=f,
                              stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"{run.name} failed (exit {code}); its log: {log}")
    return run


def milestone_rows(student: str, init: str, seed: int, run: Path, tokens_per_step: int) -> list[dict]:
    vals = val_rows(run)
    rows = []
    for milestone in MILESTONES:
        if milestone > vals[-1]["step"] * tokens_per_step * 1.01:
            break
        best = min(vals, key=lambda v: abs(v["step"] * tokens_per_step - milestone))
        rows.append({"student": student, "init": init, "seed": seed, "milestone": milestone, "step": best["step"],
                     "tokens": best["step"] * tokens_per_step, "val_loss": best["val/loss"],
                     "val_hidden_last": best.get("val/hidden_last", ""), "val_embedding": best.get("val/embedding", ""),
                     "machine": f"{platform.node()} ({os.cpu_count()} cores)", "date": date.today().isoformat()})
    return rows


def plot(out: Path, figure: Path) -> None:
    """Validation loss against tokens, one line per (student, init), mean over seeds with min-max bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    rows = list(csv.DictReader(out.open()))
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(STUDENTS), sharey=True)
    for ax, student in zip(axes, STUDENTS):
        for i, init in enumerate(INITS):
            mine = [r for r in rows if r["student"] == student and r["init"] == init]
            points = sorted({int(r["milestone"]) for r in mine})
            if not points:
                continue
            losses = [[float(r["val_loss"]) for r in mine if int(r["milestone"]) == m] for m in points]
            means = [sum(v) / len(v) for v in losses]
            spread = [[m - min(v) for m, v in zip(means, losses)], [max(v) - m for m, v in zip(means, losses)]]
            ax.errorbar([p / 1e6 for p in points], means, yerr=spread, marker="o", capsize=3, color=f"C{i}",
                        label=f"{init} ({len(losses[0])} seed{'s' if len(losses[0]) > 1 else ''})")
        ax.set(xscale="log", xlabel="pre-training tokens (M)", title=student)
        ax.set_xticks([m / 1e6 for m in MILESTONES], [f"{m / 1e6:g}" for m in MILESTONES])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation loss (representation KD)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
    parser.add_argument("--tokens", type=int, default=MILESTONES[-1])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "init_study")
    parser.add_argument("--smoke", action="store_true", help="debug sizes on the bundled corpus")
    parser.add_argument("--plot", type=Path, default=None, help="only draw the CSV's curves into this PNG")
    args = parser.parse_args()
    if args.plot:
        plot(args.out, args.plot)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    finished = done(args.out)
    for seed in args.seeds:
        for student in args.students:
            for init in args.inits:
                if (student, init, seed) in finished:
                    continue
                run = run_one(student, init, seed, args.tokens, args.work, args.smoke)
                rows = milestone_rows(student, init, seed, run, 4 * 128 if args.smoke else 32 * 128)
                append_rows(args.out, COLUMNS, rows)
                print(student, init, seed, [(r["milestone"], round(r["val_loss"], 4)) for r in rows], flush=True)


if __name__ == "__main__":
    main()
