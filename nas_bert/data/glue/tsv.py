"""Reading a GLUE directory as written by the GLUE download script (``<dir>/<TASK>/{train,dev,test}.tsv``,
MNLI ``dev_matched.tsv`` ...) into ``datasets.Dataset`` splits with the Hub's features.

Why a hand-written reader and not the ``datasets`` CSV loader (pandas): GLUE files need ``QUOTE_NONE``
(quotes are literal text, e.g. an unbalanced ``"``), which pandas supports, but pandas also turns texts
such as ``NA`` / ``null`` into missing values, silently pads a row that is one column short, guesses
column types (labels become floats) and loses the file line of a row once blank lines are skipped. The
reader here keeps every text as written, maps TSV labels to the Hub label ids with the task's label
check, reads CoLA train/dev without a header (by position) and MNLI by its own column names, and names
the file and line of any bad row.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets

from nas_bert.data.common import describe_dir
from nas_bert.data.glue.tasks import GLUE_TASKS, GlueTask, TsvLayout, get_glue_task, normalize_task_name

__all__ = ["find_task_dir", "read_glue_split", "read_glue_tsv", "split_file"]


def find_task_dir(data_dir: str | os.PathLike, task: str | GlueTask) -> Path:
    """The folder holding ``task``'s TSV files: ``<data_dir>/<TASK>`` or ``data_dir`` itself.

    The task folder is matched by name ignoring case and punctuation (``SST-2``, ``sst2``). ``data_dir``
    is taken as the task folder itself when its name matches, or when it holds TSV files and is not
    named after another GLUE task.
    """
    task = get_glue_task(task)
    root = Path(os.path.expanduser(os.fspath(data_dir)))
    if not root.is_dir():
        raise FileNotFoundError(
            f"GLUE data_dir {str(root.absolute())!r} is not a directory; {describe_dir(str(root.parent))}. "
            f"Point data_dir to the GLUE directory (with CoLA/, SST-2/, ... as written by the GLUE download "
            f"script) or to the {task.folder} folder itself."
        )
    for child in sorted(root.iterdir()):
        if child.is_dir() and normalize_task_name(child.name) == task.name:
            return child
    own_name = normalize_task_name(root.name)
    if own_name == task.name or (own_name not in GLUE_TASKS and any(root.glob("*.tsv"))):
        return root
    raise FileNotFoundError(
        f"GLUE {task.folder}: no folder {task.folder!r} in data_dir {str(root.absolute())!r}; "
        f"{describe_dir(str(root))}. Expected <data_dir>/{task.folder}/train.tsv etc. as written by the "
        f"GLUE download script (data_dir may also be the {task.folder} folder itself)."
    )


def split_file(data_dir: str | os.PathLike, task: str | GlueTask, split: str) -> Path:
    """Path of ``split``'s TSV file (e.g. ``validation`` -> ``<dir>/RTE/dev.tsv``); it must exist."""
    task = get_glue_task(task)
    folder = find_task_dir(data_dir, task)
    path = folder / task.tsv_filename(split)
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE {task.folder} split {split!r}: file {str(path.absolute())!r} does not exist; "
            f"{describe_dir(str(folder))}. The GLUE download script writes {task.folder}/"
            f"{', '.join(task.tsv_filename(s) for s in task.splits)}."
        )
    return path


def _column_positions(
    header: list[str] | None, columns: Sequence[str | int], path: Path, task: GlueTask
) -> list[int]:
    """0-based positions of ``columns`` (header names, or positions for a header-less file)."""
    if header is None:
        return [int(c) for c in columns]
    positions = []
    for name in columns:
        if name not in header:
            raise ValueError(
                f"{path}: the header has no column {name!r} (header: {header}); this is not a GLUE "
                f"{task.folder} file as written by the GLUE download script."
            )
        positions.append(header.index(str(name)))
    return positions


def _parse_label(value: str, task: GlueTask, path: Path, line: int) -> int | float:
    """Label id of a TSV label value (float score for STS-B); ``ValueError`` if it is not a task label."""
    value = value.strip()
    if task.tsv_labels is None:
        try:
            return float(value)
        except ValueError:
            raise ValueError(
                f"{path}, line {line}: label {value!r} is not a number, but {task.folder} labels are "
                f"similarity scores from 0 to 5 (labels that do not match the task: is this file from another "
                f"GLUE task?)."
            ) from None
    if value not in task.tsv_labels:
        raise ValueError(
            f"{path}, line {line}: label {value!r} is not one of the {task.folder} labels "
            f"{list(task.tsv_labels)} (labels that do not match the task: is this file from another GLUE task, "
            f"or from a different release of {task.folder}?)."
        )
    return task.tsv_labels.index(value)


def _locate_columns(
    reader: Any, layout: TsvLayout, path: Path, task: GlueTask
) -> tuple[list[str] | None, int, list[int], int | None]:
    """Consume the header (if any): ``(header, row width, text positions, label position or None)``."""
    header = next(reader, None) if layout.header else None
    if layout.header and header is None:
        raise ValueError(
            f"{path}: the file is empty, but a GLUE {task.folder} file starts with a header row."
        )
    width = len(header) if header is not None else int(layout.num_columns or 0)
    text_pos = _column_positions(header, layout.text_columns, path, task)
    label_pos = None
    if layout.label_column is not None:
        label_pos = _column_positions(header, [layout.label_column], path, task)[0]
    return header, width, text_pos, label_pos


def read_glue_tsv(path: str | os.PathLike, task: str | GlueTask, labelled: bool) -> dict[str, list]:
    """Read one GLUE TSV file into columns ``{*task.text_keys, "label", "idx"}``.

    Read with the ``csv`` module (TAB, ``QUOTE_NONE``: quotes are literal text, ``utf-8-sig``: a BOM is
    dropped). Columns are located by header name where the file has a header. ``idx`` is the row index
    (0, 1, ...); unlabelled files (``labelled=False``) get label ``-1``. Empty lines are skipped.

    Raises:
        ValueError: a row with the wrong number of columns, a header without an expected column, a label that
            does not belong to the task, or a file without examples (messages name the file and line).
    """
    task, path = get_glue_task(task), Path(path)
    layout = task.labelled_layout if labelled else task.test_layout
    texts: dict[str, list[str]] = {key: [] for key in task.text_keys}
    labels: list[int | float] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header, width, text_pos, label_pos = _locate_columns(reader, layout, path, task)
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                raise ValueError(
                    f"{path}, line {reader.line_num}: malformed row with {len(row)} tab-separated columns, "
                    f"expected {width} ({'as in the header' if header else 'GLUE ' + task.folder + ' layout'}). "
                    f"Fix or remove the row (text is read with quoting disabled, so quotes are literal)."
                )
            for key, pos in zip(task.text_keys, text_pos):
                texts[key].append(row[pos])
            label = row[label_pos] if label_pos is not None else None
            labels.append(
                task.missing_label if label is None else _parse_label(label, task, path, reader.line_num)
            )
    if not labels:
        raise ValueError(f"{path}: no examples (only {'a header' if header else 'empty lines'}).")
    return {**texts, "label": labels, "idx": list(range(len(labels)))}


def read_glue_split(data_dir: str | os.PathLike, task: str | GlueTask, split: str) -> datasets.Dataset:
    """One split (Hub split name) of a local GLUE directory as a ``datasets.Dataset`` with Hub features."""
    task = get_glue_task(task)
    path = split_file(data_dir, task, split)
    columns = read_glue_tsv(path, task, labelled=split not in task.test_splits)
    return datasets.Dataset.from_dict(columns, features=task.features)
