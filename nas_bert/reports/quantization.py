"""The pipeline's quantization report: each quantized student's GLUE dev scores in fp32, after post-training
quantization (ptq.jsonl, nas_bert/stages/ptq.py) and after quantization-aware task KD (qat.jsonl, fine-tuning runs
named `<model>-w<bits>a8`), mean ± std over seeds, and each form's change from fp32.

Writes `<dir>/summary.csv` (one row per model, form, task and seed) and `<dir>/summary.md`.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from nas_bert.reports.finetune_summary import by_model_task_seed, latest_rows, task_score
from nas_bert.reports.study import record_tasks

COLUMNS = ("model", "form", "task", "seed", "score")
QAT_NAME = re.compile(r"^(?P<model>.+)-(?P<form>w\d+a\d+)$")


def quantization_records(folder: Path) -> list[dict[str, Any]]:
    """Rows {model, form, task, seed, score}: the last of each in ptq.jsonl, and the QAT runs of qat.jsonl."""
    latest = latest_rows(folder / "ptq.jsonl", lambda row: (row["model"], row["form"], row["task"], row["seed"]))
    for (name, task, seed), result in latest_rows(folder / "qat.jsonl", by_model_task_seed).items():
        match = QAT_NAME.match(name)
        model, form = (match["model"], f"{match['form']}_qat") if match else (name, "qat")
        latest[model, form, task, seed] = {"model": model, "form": form, "task": task, "seed": seed,
                                           "score": task_score(result)}
    return sorted(latest.values(), key=lambda r: (r["model"], r["form"] != "fp32", r["form"], r["task"], r["seed"]))


def form_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, form): the mean score per task, the average over tasks (mean ± std over the seeds that have
    every task) and its change from the same model's fp32 average."""
    rows, fp32 = [], {}
    for key in dict.fromkeys((r["model"], r["form"]) for r in records):
        mine = [r for r in records if (r["model"], r["form"]) == key]
        tasks = list(dict.fromkeys(r["task"] for r in mine))
        scores = {(r["task"], r["seed"]): r["score"] for r in mine}
        seeds = sorted({s for _, s in scores if all((t, s) in scores for t in tasks)})
        per_seed = np.array([np.mean([scores[t, s] for t in tasks]) for s in seeds])
        row = {"model": key[0], "form": key[1], "seeds": len(seeds),
               **{t: float(np.mean([v for (task, _), v in scores.items() if task == t])) for t in tasks},
               "avg": float(per_seed.mean()) if len(seeds) else None,
               "avg_std": float(per_seed.std(ddof=1)) if len(seeds) > 1 else None}
        if key[1] == "fp32":
            fp32[key[0]] = row["avg"]
        base = fp32.get(key[0]) if key[1] != "fp32" else None
        row["change"] = row["avg"] - base if row["avg"] is not None and base is not None else None
        rows.append(row)
    return rows


def _fmt(value: Any, signed: bool = False) -> str:
    if value is None:
        return ""
    return f"{value:+.2f}" if signed else f"{value:.2f}" if isinstance(value, float) else str(value)


def write_quantization_report(folder: Path) -> Path:
    """summary.csv and summary.md in `folder`; returns the Markdown file."""
    records = quantization_records(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({c: r[c] for c in COLUMNS} for r in records)
    rows = form_rows(records)
    tasks = record_tasks(records)
    header = ["model", "form", *tasks, "avg ± std", "change from fp32", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        avg = f"{_fmt(row['avg'])} ± {_fmt(row['avg_std'])}" if row["avg_std"] is not None else _fmt(row["avg"])
        cells = [row["model"], row["form"], *(_fmt(row.get(t)) for t in tasks), avg,
                 _fmt(row["change"], signed=True), str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    out = folder / "summary.md"
    out.write_text("## Quantized students (GLUE dev score; fp32 is the exported model, re-scored)\n\n"
                   + "\n".join(lines) + "\n")
    return out
