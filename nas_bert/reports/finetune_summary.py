"""The cross-run summary of fine-tuning: every model's score per task, GLUE average and SQuAD, with loyalty.

Each fine-tuning run appends its result to a JSON-lines file shared by runs (`finetune.results_file`);
the table is rebuilt from it (the latest run per model and task counts) and written beside it as
`summary.md` and `summary.csv`, printed to the console and logged as a W&B table.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

GLUE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def task_score(result: dict[str, Any]) -> float:
    """The task's best dev score in percent: GLUE combined score (MNLI: mean of m / mm), SQuAD F1."""
    best = result["best"]
    if result["task"].startswith("squad"):
        return best["squad/f1"]
    scores = [v for k, v in best.items() if k.endswith("/combined_score")]
    return 100 * sum(scores) / len(scores)


def loyalty(result: dict[str, Any]) -> float | None:
    """Mean label loyalty to the teacher over the eval splits (percent), when there was a teacher."""
    values = [v for k, v in result["best"].items() if k.endswith("/label_loyalty")]
    return 100 * sum(values) / len(values) if values else None


def latest_rows(path: Path, key: Callable[[dict[str, Any]], tuple]) -> dict[tuple, dict[str, Any]]:
    """The last row per `key(row)` of a JSON-lines results file (none if it does not exist), in first-seen order."""
    latest: dict[tuple, dict[str, Any]] = {}
    for line in path.read_text().splitlines() if path.is_file() else []:
        if line.strip():
            row = json.loads(line)
            latest[key(row)] = row
    return latest


def by_model_task_seed(row: dict[str, Any]) -> tuple[str, str, int]:
    """A fine-tuning result's key in a study: its model, task and seed (0 for results saved without one)."""
    return row["model"], row["task"], int(row.get("seed", 0))


def latest_results(path: Path) -> list[dict[str, Any]]:
    """The last result per (model, task) from the JSON-lines file, in first-seen order."""
    return list(latest_rows(path, lambda row: (row["model"], row["task"])).values())


def summary_rows(results: Iterable[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): one row per model with its params, per-task scores, GLUE average and loyalty."""
    by_model: dict[str, dict[str, Any]] = {}
    tasks: set[str] = set()
    for result in results:
        row = by_model.setdefault(result["model"], {"model": result["model"], "params (M)": result["params"] / 1e6})
        row[result["task"]] = task_score(result)
        tasks.add(result["task"])
        if loyalty(result) is not None:
            row.setdefault("_loyalty", []).append(loyalty(result))
    glue = [t for t in GLUE_ORDER if t in tasks]
    other = sorted(tasks - set(glue))
    columns = ["model", "params (M)", *glue, *(["GLUE avg"] if glue else []), *other, "loyalty %"]
    for row in by_model.values():
        scores = [row[t] for t in glue if t in row]
        if glue:
            row["GLUE avg"] = sum(scores) / len(scores) if len(scores) == len(glue) else None
        values = row.pop("_loyalty", [])
        row["loyalty %"] = sum(values) / len(values) if values else None
    return columns, list(by_model.values())


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def markdown(columns: list[str], rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_tables(directory: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """`summary.md` and `summary.csv` of the table in `directory`."""
    (directory / "summary.md").write_text(markdown(columns, rows))
    with (directory / "summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({c: format_value(r.get(c)) for c in columns} for r in rows)


def record_result(results_file: str | Path, result: dict[str, Any], loggers: Iterable[Any] = ()) -> Path:
    """Append `result`, rebuild the summary (summary.md, summary.csv), print it and log it to W&B."""
    path = Path(results_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(result) + "\n")
    columns, rows = summary_rows(latest_results(path))
    write_tables(path.parent, columns, rows)
    print_table(columns, rows)
    for logger in loggers:
        if hasattr(logger, "log_table"):
            logger.log_table("summary/finetune", columns=columns,
                             data=[[format_value(r.get(c)) for c in columns] for r in rows])
    return path.parent / "summary.md"


def print_table(columns: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fine-tuning summary (dev, best epoch; GLUE x100, SQuAD F1)")
    for c in columns:
        table.add_column(c, justify="left" if c == "model" else "right")
    for row in rows:
        table.add_row(*(format_value(row.get(c)) for c in columns))
    Console(width=160).print(table)
