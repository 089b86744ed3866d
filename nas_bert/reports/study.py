"""The report of a compression study: a teacher and, per budget, the searched student and two uniform BERT
baselines (closest in parameters, in measured latency), fine-tuned on the pipeline's tasks with several seeds.

Pure functions over records (one per model, task, seed; keys STUDY_COLUMNS). The tasks reported are those the
pipeline ran (`tasks`: `pipeline.glue_tasks`, then SQuAD), or by default every task in the records, in GLUE's
order and then by name. A summary row is one (model, role, budget), so one uniform BERT may serve as both
baselines or in both budgets. Non-finite scores (diverged runs) stay in the CSV but out of every statistic: a
task's mean/std uses its finite seeds, the average over the tasks only the seeds finite on every task (tasks
averaged per seed, then mean/std across seeds, ddof=1, 0 for one seed); `issues` and the markdown name what was
left out. A model missing a task, or with no complete seed, gets no average.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from nas_bert.pipeline.step_times import PartTime
from nas_bert.reports.finetune_summary import GLUE_ORDER, markdown

ROLES = ("teacher", "searched", "equal_params", "equal_latency")
BASELINES = ("equal_params", "equal_latency")
STUDY_COLUMNS = ("model", "role", "budget", "params", "flops", "latency_ms", "task", "seed", "score", "loyalty")
MARKERS = {"teacher": "*", "searched": "o", "equal_params": "s", "equal_latency": "^"}
_PARSE = {"model": str, "role": str, "budget": lambda s: s or None, "params": int, "flops": int,
          "latency_ms": float, "task": str, "seed": int, "score": float,
          "loyalty": lambda s: float(s) if s else None}


def _check(records: Sequence[dict[str, Any]]) -> None:
    """ValueError for no records, an unknown role or a duplicate (model, role, budget, task, seed)."""
    if not records:
        raise ValueError("study report: no records (no fine-tuning result was collected)")
    if bad := {r["role"] for r in records} - set(ROLES):
        raise ValueError(f"study report: unknown roles {sorted(bad)} (expected {ROLES})")
    keys = [(r["model"], r["role"], r["budget"], r["task"], r["seed"]) for r in records]
    if len(set(keys)) < len(keys):
        raise ValueError(f"study report: duplicate records {sorted({k for k in keys if keys.count(k) > 1})}")


def _budget_key(budget: str | None) -> tuple[int, float, str]:
    """The teacher (None) first, then fractional budgets largest first ("1/4" before "1/10"), then by name."""
    try:
        return (0, 0.0, "") if budget is None else (1, -float(Fraction(budget)), budget)
    except (ValueError, ZeroDivisionError):
        return (2, 0.0, budget)


def _task_key(task: str) -> tuple[int, str]:
    """GLUE tasks in GLUE's order, then the others (SQuAD) by name."""
    return (GLUE_ORDER.index(task), "") if task in GLUE_ORDER else (len(GLUE_ORDER), task)


def record_tasks(records: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """Every task in the records, in report order."""
    return tuple(sorted({r["task"] for r in records}, key=_task_key))


def summary_columns(tasks: Sequence[str]) -> tuple[str, ...]:
    """The keys of a `model_summary` row: a mean and a std per task, then the average over `tasks`."""
    return ("model", "role", "budget", "params", "flops", "latency_ms", *(k for t in tasks for k in (t, f"{t}_std")),
            "avg", "avg_std", "seeds", "pct_of_teacher", "loyalty", "issues")


def _order(r: dict[str, Any]) -> tuple:
    return (_budget_key(r["budget"]), ROLES.index(r["role"]), r["model"], _task_key(r["task"]), r["seed"])


def _cell(value: Any) -> str:
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)  # exact


def write_study_csv(path: str | Path, records: Sequence[dict[str, Any]]) -> Path:
    """One row per record in STUDY_COLUMNS order, sorted teacher, budget, role, model, task, seed."""
    _check(records)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(STUDY_COLUMNS)
        writer.writerows([_cell(r[c]) for c in STUDY_COLUMNS] for r in sorted(records, key=_order))
    return path


def read_study_csv(path: str | Path) -> list[dict[str, Any]]:
    """The records of `write_study_csv`, types restored (empty budget/loyalty -> None, "nan" -> NaN)."""
    with Path(path).open(newline="") as f:
        return [{c: _PARSE[c](row[c]) for c in STUDY_COLUMNS} for row in csv.DictReader(f)]


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    a = np.asarray(values, dtype=float)
    return (None, None) if not len(a) else (float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0)


def _issues(scores: dict[tuple[str, int], float], seeds: list[int], tasks: Sequence[str]) -> str:
    """What the statistics leave out: (task, seed) runs with a non-finite score or none at all."""
    return "; ".join(f"{t} seed {s}: {scores.get((t, s), 'no run')}" for t in tasks
                     for s in seeds if not math.isfinite(scores.get((t, s), math.nan)))


def _model_row(records: list[dict[str, Any]], tasks: Sequence[str]) -> dict[str, Any]:
    row = {k: records[0][k] for k in ("model", "role", "budget", "params", "flops", "latency_ms")}
    scores = {(r["task"], r["seed"]): r["score"] for r in records}
    seeds = sorted({r["seed"] for r in records})
    for task in tasks:
        finite = [scores[task, s] for s in seeds if math.isfinite(scores.get((task, s), math.nan))]
        row[task], row[f"{task}_std"] = _mean_std(finite)
    complete = [s for s in seeds if all(math.isfinite(scores.get((t, s), math.nan)) for t in tasks)]
    row["avg"], row["avg_std"] = _mean_std([float(np.mean([scores[t, s] for t in tasks])) for s in complete])
    row["seeds"] = len(complete)
    loyal = [r["loyalty"] for r in records if r["loyalty"] is not None]
    row["loyalty"] = float(np.mean(loyal)) if loyal else None
    row["issues"] = _issues(scores, seeds, tasks)
    return row


def model_summary(records: Sequence[dict[str, Any]], tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row (`summary_columns(tasks)`) per (model, role, budget), in report order, with `pct_of_teacher`;
    records of other tasks are left out."""
    _check(records)
    tasks = record_tasks(records) if tasks is None else tuple(tasks)
    records = [r for r in records if r["task"] in tasks]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in sorted(records, key=_order):
        groups.setdefault((r["model"], r["role"], r["budget"]), []).append(r)
    rows = [_model_row(group, tasks) for group in groups.values()]
    teachers = [row for row in rows if row["role"] == "teacher"]
    if len(teachers) > 1:
        raise ValueError(f"study report: more than one teacher: {[t['model'] for t in teachers]}")
    ref = teachers[0]["avg"] if teachers else None
    for row in rows:
        row["pct_of_teacher"] = 100 * row["avg"] / ref if ref and row["avg"] is not None else None
    return [{c: row[c] for c in summary_columns(tasks)} for row in rows]


def _goal(budget: str, rows: list[dict[str, Any]], target: float | None) -> dict[str, Any]:
    """The searched student of one budget against the target and both baselines; `note` says what is missing."""
    by_role = {r["role"]: r for r in rows}
    if len(by_role) < len(rows):
        raise ValueError(f"study report: budget {budget} has a role twice: {[r['role'] for r in rows]}")
    searched = by_role.get("searched", {"model": None, "avg": None, "pct_of_teacher": None})
    avg, pct = searched["avg"], searched["pct_of_teacher"]
    goal = {"budget": budget, "target": target, "searched": searched["model"], "pct_of_teacher": pct,
            "meets_target": None if pct is None or target is None else pct >= target,
            "evaluable": pct is not None and target is not None}
    for role in BASELINES:
        base = by_role.get(role, {}).get("avg")
        known = avg is not None and base is not None
        goal[f"beats_{role}"], goal[f"margin_{role}"] = (avg >= base, avg - base) if known else (None, None)
    goal["note"] = ("no searched student" if "searched" not in by_role else "searched student has no average"
                    if avg is None else "no teacher average" if pct is None else "" if target is not None
                    else "no target")
    return goal


def goals(records: Sequence[dict[str, Any]], targets: Mapping[str, float] | None = None,
          tasks: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Per budget (those of the records and of `targets`, the `pipeline.goals`): the searched student's % of
    teacher, whether it meets the target, whether its mean average is >= each baseline's (`beats_<role>`,
    `margin_<role>` in points); unknown parts None, `evaluable` False."""
    targets = targets or {}
    rows = [r for r in model_summary(records, tasks) if r["role"] != "teacher"]
    budgets = sorted({r["budget"] for r in rows} | set(targets), key=_budget_key)
    return [_goal(b, [r for r in rows if r["budget"] == b], targets.get(b)) for b in budgets]


def _pm(mean: float | None, std: float | None) -> str | None:
    return None if mean is None else f"{mean:.2f} ± {std:.2f}"


def _table(rows: list[dict[str, Any]]) -> str:
    """summary.markdown of display rows, columns in the rows' key order."""
    return markdown(list(rows[0]), rows) if rows else "(nothing to report)\n"


def _model_table(rows: list[dict[str, Any]], tasks: Sequence[str]) -> list[dict[str, Any]]:
    return [{"model": r["model"], "role": r["role"], "budget": r["budget"],
                      **{t: _pm(r[t], r[f"{t}_std"]) for t in tasks}, "average": _pm(r["avg"], r["avg_std"]),
                      "seeds": r["seeds"], "% of teacher": r["pct_of_teacher"], "params (M)": r["params"] / 1e6,
                      "FLOPs (G)": r["flops"] / 1e9, "latency (ms)": float(r["latency_ms"]),
                      "loyalty %": r["loyalty"]} for r in rows]


def _verdict(ok: bool | None, margin: float | None = None) -> str | None:
    return None if ok is None else ("yes" if ok else "no") + ("" if margin is None else f" ({margin:+.2f})")


def _goal_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"budget": g["budget"], "searched": g["searched"], "target (% of teacher)": g["target"],
                      "% of teacher": g["pct_of_teacher"], "meets target": _verdict(g["meets_target"]),
                      ">= equal params": _verdict(g["beats_equal_params"], g["margin_equal_params"]),
                      ">= equal latency": _verdict(g["beats_equal_latency"], g["margin_equal_latency"]),
                      "note": g["note"]} for g in rows]


def time_markdown(times: Mapping[str, PartTime]) -> str:
    """The compute time table: per part of the method (and the total), its steps, their own wall times added up,
    and the wall time they took together (less where steps ran side by side, `pipeline.workers`)."""
    return _table([{"part": part, "steps": t.steps, "step minutes": round(t.step_minutes, 1),
                    "wall minutes": round(t.wall_minutes, 1)} for part, t in times.items()])


def _scale(tasks: Sequence[str]) -> str:
    """What the scores of `tasks` are: "GLUE x100", "SQuAD F1" or both."""
    return ", ".join(filter(None, ("GLUE x100" if set(tasks) & set(GLUE_ORDER) else "",
                                   "SQuAD F1" if any(t.startswith("squad") for t in tasks) else "")))


def summary_markdown(records: Sequence[dict[str, Any]], targets: Mapping[str, float] | None = None,
                     times: Mapping[str, PartTime] | None = None, tasks: Sequence[str] | None = None) -> str:
    """The per-model table (mean ± std over seeds) of `tasks` (default: every task in the records), what it leaves
    out, the goals table, and (`times`, see `step_times.time_by_part`) the compute time, over every sitting of a
    resumed run."""
    tasks = record_tasks(records) if tasks is None else tuple(tasks)
    rows = model_summary(records, tasks)
    title = f"dev score: {_scale(tasks)}; average over {', '.join(tasks)}; mean ± std over seeds"
    parts = [f"## Models ({title})\n", _table(_model_table(rows, tasks))]
    issues = [f"- {r['model']} ({r['role']}, {r['budget'] or '-'}): {r['issues']}" for r in rows if r["issues"]]
    if issues:
        parts += ["Left out of the statistics:\n", "\n".join(issues) + "\n"]
    parts += ["## Goals (searched student per budget; margins in points)\n",
              _table(_goal_table(goals(records, targets, tasks)))]
    if times:
        parts += ["## Compute time (over every sitting of a resumed run)\n", time_markdown(times)]
    return "\n".join(parts)


def _axes() -> tuple[Figure, Any]:
    fig = Figure(figsize=(8, 5))  # no pyplot: nothing global (backend, open figures) changes
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_score_vs_latency(records: Sequence[dict[str, Any]], path: str | Path,
                          tasks: Sequence[str] | None = None) -> Path:
    """The average over `tasks` (error bars: std over seeds) against measured latency; marker = role, colour =
    budget."""
    tasks = record_tasks(records) if tasks is None else tuple(tasks)
    rows = [r for r in model_summary(records, tasks) if r["avg"] is not None]
    budgets = sorted({r["budget"] for r in rows if r["budget"] is not None}, key=_budget_key)
    colours = {None: "black"} | {b: f"C{i}" for i, b in enumerate(budgets)}
    fig, ax = _axes()
    for i, r in enumerate(sorted(rows, key=lambda r: r["latency_ms"])):
        ax.errorbar(r["latency_ms"], r["avg"], yerr=r["avg_std"], marker=MARKERS[r["role"]], capsize=3,
                    color=colours[r["budget"]], markersize=15 if r["role"] == "teacher" else 8, linestyle="none")
        ax.annotate(r["model"], (r["latency_ms"], r["avg"]), textcoords="offset points", fontsize=8,
                    xytext=(6, 6) if i % 2 == 0 else (6, -13))  # neighbours in latency: one above, one below
    ax.set_xscale("log")  # students and teacher lie an order of magnitude apart
    for axis_ticks in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis_ticks(FuncFormatter(lambda ms, _: f"{ms:g}"))  # 2, 3, 10, 20 rather than powers of ten
    roles = [role for role in ROLES if any(r["role"] == role for r in rows)]
    handles = [Line2D([], [], marker=MARKERS[role], color="black" if role == "teacher" else "grey",
                      linestyle="none", label=role.replace("_", " ")) for role in roles]
    handles += [Line2D([], [], marker="s", color=colours[b], linestyle="none", label=f"budget {b}") for b in budgets]
    ax.legend(handles=handles, fontsize=8, loc="best")
    ax.set(xlabel="measured latency (ms, log scale)", ylabel=f"average over {len(tasks)} task(s) (dev)",
           title="Score vs latency (error bars: std over seeds)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_task_bars(records: Sequence[dict[str, Any]], path: str | Path, tasks: Sequence[str] | None = None) -> Path:
    """Grouped bars per task and for the average, one bar per model, error bars = std over seeds."""
    tasks = record_tasks(records) if tasks is None else tuple(tasks)
    rows = model_summary(records, tasks)
    keys, x, width = (*tasks, "avg"), np.arange(len(tasks) + 1), 0.8 / len(rows)
    fig, ax = _axes()
    for i, r in enumerate(rows):
        label = f"{r['model']} ({', '.join(filter(None, (r['budget'], r['role'].replace('_', ' '))))})"
        ax.bar(x - 0.4 + (i + 0.5) * width, [math.nan if r[k] is None else r[k] for k in keys], width, label=label,
               yerr=[r[f"{k}_std"] or 0.0 for k in keys], capsize=2, error_kw={"elinewidth": 0.8})
    ax.set_xticks(x, [*tasks, "average"])
    ax.set(ylabel=f"dev score ({_scale(tasks)})", title="Scores per task (error bars: std over seeds)")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.07))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def write_summary(out_dir: str | Path, records: Sequence[dict[str, Any]], targets: Mapping[str, float] | None = None,
                  times: Mapping[str, PartTime] | None = None, tasks: Sequence[str] | None = None) -> dict[str, Path]:
    """`summary.csv` (per record), `summary.md` (with the compute time `times`, see `summary_markdown`),
    `score_vs_latency.png`, `task_scores.png` in `out_dir`, over `tasks` (default: every task in the records)."""
    out = Path(out_dir)
    paths = {"csv": write_study_csv(out / "summary.csv", records), "markdown": out / "summary.md",
             "score_vs_latency": plot_score_vs_latency(records, out / "score_vs_latency.png", tasks),
             "task_scores": plot_task_bars(records, out / "task_scores.png", tasks)}
    paths["markdown"].write_text(summary_markdown(records, targets, times, tasks))
    return paths


def log_report(loggers: Iterable[Any], paths: Mapping[str, Path], rows: Sequence[dict[str, Any]]) -> None:
    """Both plots as images (loggers with `log_image`), the model_summary rows as `study/summary` (`log_table`)."""
    columns = list(rows[0]) if rows else []
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key="study/score_vs_latency", images=[str(paths["score_vs_latency"])])
            logger.log_image(key="study/task_scores", images=[str(paths["task_scores"])])
        if hasattr(logger, "log_table"):
            logger.log_table(key="study/summary", columns=columns, data=[[r[c] for c in columns] for r in rows])
