"""The GLUE task registry: for each of the nine tasks its Hub ``nyu-mll/glue`` config, columns, label
order, splits, metrics and the layout of its TSV files. The one description of a task (metrics use it too).

Label orders follow the Hub ``ClassLabel`` names, so local TSV files and the Hub give identical examples
(RTE/QNLI ``entailment`` = 0, ``not_entailment`` = 1; MNLI entailment/neutral/contradiction = 0/1/2; WNLI
``not_entailment`` = 0, ``entailment`` = 1 as in its TSV files).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import datasets

__all__ = ["GLUE_TASKS", "GlueTask", "TsvLayout", "get_glue_task", "normalize_task_name"]


@dataclass(frozen=True)
class TsvLayout:
    """Where one kind of GLUE TSV file keeps its texts and label.

    Columns are header names, or 0-based positions for a file without header (CoLA train/dev), whose rows
    must then have exactly ``num_columns`` fields. ``label_column`` is ``None`` for unlabelled test files.
    """

    text_columns: tuple[str, ...] | tuple[int, ...]
    label_column: str | int | None = None
    header: bool = True
    num_columns: int | None = None


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: Hub config name and columns, GLUE folder, labels, splits and metrics.

    Attributes:
        name: Hub ``nyu-mll/glue`` config name (``cola``, ``sst2``, ..., ``wnli``).
        folder: folder of the task in a GLUE directory (``CoLA``, ``SST-2``, ...).
        text_keys: Hub text columns, in the order they are fed to the tokenizer (one or a pair).
        labels: Hub ``ClassLabel`` names in id order; ``None`` for STS-B (regression, score 0..5).
        tsv_labels: the label values as written in the TSV files (and expected by the GLUE server), in id
            order; ``None`` for STS-B.
        metrics: metric names (``matthews``, ``accuracy``, ``f1``, ``pearson``, ``spearman``).
        labelled_layout: layout of ``train.tsv`` / ``dev*.tsv``.
        test_layout: layout of ``test*.tsv`` (no label).
        validation_splits: Hub names of the labelled evaluation splits.
        test_splits: Hub names of the unlabelled test splits.
    """

    name: str
    folder: str
    text_keys: tuple[str, ...]
    labels: tuple[str, ...] | None
    tsv_labels: tuple[str, ...] | None
    metrics: tuple[str, ...]
    labelled_layout: TsvLayout
    test_layout: TsvLayout
    validation_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)

    @property
    def is_regression(self) -> bool:
        """True for STS-B (a float score instead of a class)."""
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Number of classes; 1 for the regression task."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        """All Hub split names: ``train``, the validation splits, the test splits."""
        return ("train", *self.validation_splits, *self.test_splits)

    @property
    def missing_label(self) -> int | float:
        """The label of an unlabelled (test) example, as in the Hub dataset."""
        return -1.0 if self.is_regression else -1

    @property
    def features(self) -> datasets.Features:
        """``datasets`` features of a raw split: text columns, ``label`` and ``idx`` (as on the Hub)."""
        label = (
            datasets.Value("float32") if self.labels is None else datasets.ClassLabel(names=list(self.labels))
        )
        return datasets.Features(
            {
                **{k: datasets.Value("string") for k in self.text_keys},
                "label": label,
                "idx": datasets.Value("int32"),
            }
        )

    def tsv_filename(self, split: str) -> str:
        """File name of ``split`` in the GLUE directory (``validation_matched`` -> ``dev_matched.tsv``)."""
        self.check_split(split)
        return split.replace("validation", "dev") + ".tsv"

    def check_split(self, split: str) -> None:
        """Raise ``ValueError`` unless ``split`` is one of this task's splits."""
        if split not in self.splits:
            raise ValueError(
                f"GLUE task {self.name!r} has no split {split!r}; its splits are {list(self.splits)}."
            )


def _pair_task(
    name: str, folder: str, keys: tuple[str, str], tsv_keys: tuple[str, str], label_column: str, **kw: Any
) -> GlueTask:
    """A sentence-pair task whose files all have headers (every task but CoLA and SST-2)."""
    return GlueTask(
        name=name,
        folder=folder,
        text_keys=keys,
        labelled_layout=TsvLayout(text_columns=tsv_keys, label_column=label_column),
        test_layout=TsvLayout(text_columns=tsv_keys),
        **kw,
    )


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        name="cola",
        folder="CoLA",
        text_keys=("sentence",),
        labels=("unacceptable", "acceptable"),
        tsv_labels=_BINARY,
        metrics=("matthews_correlation",),
        # train/dev: no header; source, label, original mark, sentence
        labelled_layout=TsvLayout(text_columns=(3,), label_column=1, header=False, num_columns=4),
        test_layout=TsvLayout(text_columns=("sentence",)),  # test: header index, sentence
    ),
    "sst2": GlueTask(
        name="sst2",
        folder="SST-2",
        text_keys=("sentence",),
        labels=("negative", "positive"),
        tsv_labels=_BINARY,
        metrics=("accuracy",),
        labelled_layout=TsvLayout(text_columns=("sentence",), label_column="label"),
        test_layout=TsvLayout(text_columns=("sentence",)),
    ),
    "mrpc": _pair_task(
        "mrpc",
        "MRPC",
        keys=("sentence1", "sentence2"),
        tsv_keys=("#1 String", "#2 String"),
        label_column="Quality",
        labels=("not_equivalent", "equivalent"),
        tsv_labels=_BINARY,
        metrics=("f1", "accuracy"),
    ),
    "stsb": _pair_task(
        "stsb",
        "STS-B",
        keys=("sentence1", "sentence2"),
        tsv_keys=("sentence1", "sentence2"),
        label_column="score",
        labels=None,
        tsv_labels=None,
        metrics=("pearson", "spearmanr"),
    ),
    "qqp": _pair_task(
        "qqp",
        "QQP",
        keys=("question1", "question2"),
        tsv_keys=("question1", "question2"),
        label_column="is_duplicate",
        labels=("not_duplicate", "duplicate"),
        tsv_labels=_BINARY,
        metrics=("f1", "accuracy"),
    ),
    "mnli": _pair_task(
        "mnli",
        "MNLI",
        keys=("premise", "hypothesis"),
        tsv_keys=("sentence1", "sentence2"),
        label_column="gold_label",
        labels=("entailment", "neutral", "contradiction"),
        tsv_labels=("entailment", "neutral", "contradiction"),
        metrics=("accuracy",),
        validation_splits=("validation_matched", "validation_mismatched"),
        test_splits=("test_matched", "test_mismatched"),
    ),
    "qnli": _pair_task(
        "qnli",
        "QNLI",
        keys=("question", "sentence"),
        tsv_keys=("question", "sentence"),
        label_column="label",
        labels=_NLI2,
        tsv_labels=_NLI2,
        metrics=("accuracy",),
    ),
    "rte": _pair_task(
        "rte",
        "RTE",
        keys=("sentence1", "sentence2"),
        tsv_keys=("sentence1", "sentence2"),
        label_column="label",
        labels=_NLI2,
        tsv_labels=_NLI2,
        metrics=("accuracy",),
    ),
    "wnli": _pair_task(
        "wnli",
        "WNLI",
        keys=("sentence1", "sentence2"),
        tsv_keys=("sentence1", "sentence2"),
        label_column="label",
        labels=("not_entailment", "entailment"),
        tsv_labels=_BINARY,
        metrics=("accuracy",),
    ),
}


def normalize_task_name(name: str) -> str:
    """``'SST-2'`` -> ``'sst2'``, ``'STS-B'`` -> ``'stsb'``: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_glue_task(name: str | GlueTask) -> GlueTask:
    """The registry entry of a task, by Hub name or alias (``'SST-2'``, ``'sts-b'``, ``'MNLI'``; any case)."""
    if isinstance(name, GlueTask):
        return name
    task = GLUE_TASKS.get(normalize_task_name(str(name)))
    if task is None:
        raise ValueError(
            f"Unknown GLUE task {name!r}; valid names: {', '.join(GLUE_TASKS)} (GLUE folder names such as "
            f"'SST-2', 'STS-B' or 'MNLI' are accepted too, in any case)."
        )
    return task
