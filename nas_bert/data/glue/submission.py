"""GLUE-server submission files: one ``index<TAB>prediction`` TSV per test split, named as the server
expects (``RTE.tsv``, ``MNLI-m.tsv``, ...)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from nas_bert.data.glue.tasks import GlueTask, get_glue_task

__all__ = ["submission_filename", "write_glue_submission"]

log = logging.getLogger(__name__)

_SUBMISSION_SUFFIX = {"test": "", "test_matched": "-m", "test_mismatched": "-mm"}


def submission_filename(task: str | GlueTask, split: str = "test") -> str:
    """File name the GLUE server expects for ``split``'s predictions (``RTE.tsv``, ``MNLI-m.tsv`` ...)."""
    task = get_glue_task(task)
    if split not in task.test_splits:
        raise ValueError(
            f"GLUE {task.name}: {split!r} is not a test split; test splits: {list(task.test_splits)}."
        )
    return f"{task.folder}{_SUBMISSION_SUFFIX[split]}.tsv"


def _format_prediction(task: GlueTask, index: int, value: int | float) -> str:
    """One prediction as the GLUE server expects it (label string / 0-1 id / score clipped to [0, 5])."""
    number = float(value)
    if task.tsv_labels is None:
        return f"{min(max(number, 0.0), 5.0):.3f}"
    label_id = int(number)
    if label_id != number or not 0 <= label_id < task.num_labels:
        raise ValueError(
            f"GLUE {task.name} prediction for index {index} is {value!r}, not a label id in "
            f"0..{task.num_labels - 1} ({', '.join(task.labels or ())})."
        )
    return task.tsv_labels[label_id]


def write_glue_submission(
    task: str | GlueTask,
    predictions: Mapping[int, int | float],
    path: str | os.PathLike,
    split: str | None = None,
) -> Path:
    """Write a GLUE-server prediction file: header ``index<TAB>prediction``, one row per index, sorted.

    ``predictions`` maps the example ``idx`` (row index of the test split) to a label id, or to a score for
    STS-B (clipped to [0, 5]). Labels are written as the GLUE server expects: strings for RTE/QNLI/MNLI
    (``entailment`` ...), ``0``/``1`` for the binary tasks. ``path`` is the file, or an existing directory,
    in which case the file is named by :func:`submission_filename` (``split`` is then required for MNLI).
    Returns the written path.
    """
    task = get_glue_task(task)
    if not predictions:
        raise ValueError(f"GLUE {task.name}: no predictions to write.")
    out = Path(os.path.expanduser(os.fspath(path)))
    if out.is_dir():
        if split is None and len(task.test_splits) > 1:
            raise ValueError(
                f"GLUE {task.name}: pass split (one of {list(task.test_splits)}) to name the file."
            )
        out = out / submission_filename(task, split or task.test_splits[0])
    rows = sorted((int(i), value) for i, value in predictions.items())
    indices = [i for i, _ in rows]
    if indices != list(range(len(indices))):
        log.warning(
            "GLUE %s submission %s: indices are not 0..%d without gaps (%d predictions); the GLUE server "
            "expects one prediction per test example.",
            task.name,
            out,
            indices[-1],
            len(indices),
        )
    lines = [f"{i}\t{_format_prediction(task, i, value)}" for i, value in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("index\tprediction\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return out
