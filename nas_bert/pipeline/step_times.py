"""The cost of a pipeline run: every finished step's wall time in `<run>/logs/step_times.csv` (step, seconds,
finished), added up per part of the method, over every sitting of a resumed run. Steps that ran side by side
(`pipeline.workers`) are counted once in the wall time: it is the union of the steps' [start, finish] intervals."""

from __future__ import annotations

import csv
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

STEP_TIMES = "step_times.csv"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # UTC, to the second


class PartTime(NamedTuple):
    """The steps of one part of the method and the time they took."""

    steps: int
    step_minutes: float  # each step's own wall time, added up
    wall_minutes: float  # the time they took together: steps that overlapped are counted once


def record_step_time(log_dir: Path, name: str, seconds: float) -> None:
    """Appends a finished step's wall time to `<log_dir>/step_times.csv` (a row is one write to a file opened for
    appending: workers side by side never interleave within a line)."""
    path = log_dir / STEP_TIMES
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "seconds", "finished"])
        writer.writerow([name, f"{seconds:.1f}", time.strftime(TIME_FORMAT, time.gmtime())])


def step_part(name: str) -> str:
    """The part of the method a step belongs to: search, baselines, pretrain, finetune (teacher / students), ptq."""
    head, _, rest = name.partition("/")
    if head == "finetune":
        return "finetune (teacher)" if rest.startswith("teacher_") else "finetune (students)"
    return head


def union_minutes(intervals: list[tuple[float, float]]) -> float:
    """The length in minutes of the union of [start, end] intervals given in seconds."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total / 60


def time_by_part(log_dir: Path) -> dict[str, PartTime]:
    """{part: PartTime} of the finished steps in `<log_dir>/step_times.csv` (the last time of a step that ran more
    than once), in the order the parts first ran, then "total"; {} without the file."""
    path = log_dir / STEP_TIMES
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        latest = {row["step"]: row for row in csv.DictReader(f)}
    intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for name, row in latest.items():
        end = datetime.strptime(row["finished"], TIME_FORMAT).replace(tzinfo=timezone.utc).timestamp()
        seconds = float(row["seconds"])
        intervals[step_part(name)].append((end - seconds, end))
    intervals["total"] = [span for spans in list(intervals.values()) for span in spans]
    return {part: PartTime(len(spans), sum(end - start for start, end in spans) / 60, union_minutes(spans))
            for part, spans in intervals.items()}
