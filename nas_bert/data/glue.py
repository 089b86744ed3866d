"""GLUE fine-tuning data: task registry, local TSV reader, DataModule and GLUE-server submission files.

* :data:`GLUE_TASKS` describes the nine GLUE tasks with the Hub ``nyu-mll/glue`` config names, column
  names and label orders, so that local TSV files and the Hub dataset give identical examples
  (e.g. RTE/QNLI ``entailment`` = 0, ``not_entailment`` = 1; MNLI entailment/neutral/contradiction = 0/1/2;
  WNLI ``not_entailment`` = 0, ``entailment`` = 1 as in its TSV files).
* :func:`read_glue_split` reads one split of a GLUE directory as written by the GLUE download script
  (``<dir>/<TASK>/{train,dev,test}.tsv``, MNLI ``dev_matched.tsv`` ...), with the format quirks of each task.
* :class:`GlueDataModule` tokenizes (sentence pairs as ``(s1, s2)``, truncated to ``max_seq_length``) with
  the ``datasets`` cache and serves dynamically padded batches of ``input_ids``, ``attention_mask``,
  ``token_type_ids``, ``labels`` and ``idx`` (the example's row index in its split, for de-duplicating
  evaluation under DDP and aligning teacher predictions).
* :func:`write_glue_submission` writes a prediction file for the GLUE server.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from nas_bert.data.corpus import _MIN_SEQ_LEN, _describe_dir, _digest, _load_tokenizer, _offline
from nas_bert.data.loading import make_loader

__all__ = [
    "GLUE_TASKS",
    "GlueCollator",
    "GlueDataModule",
    "GlueTask",
    "TsvLayout",
    "find_task_dir",
    "get_glue_task",
    "read_glue_split",
    "read_glue_tsv",
    "split_file",
    "submission_filename",
    "write_glue_submission",
]

log = logging.getLogger(__name__)

# Bump when the reading/tokenization logic changes: it is part of the explicit cache fingerprints.
_PIPELINE_VERSION = "glue-v1"
_TOKEN_COLUMNS = ("input_ids", "token_type_ids", "attention_mask")
_LOADER_COLUMNS = [*_TOKEN_COLUMNS, "label", "idx"]
_SUBMISSION_SUFFIX = {"test": "", "test_matched": "-m", "test_mismatched": "-mm"}


# --------------------------------------------------------------------------- task registry
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


def _normalize_name(name: str) -> str:
    """``'SST-2'`` -> ``'sst2'``, ``'STS-B'`` -> ``'stsb'``: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def get_glue_task(name: str | GlueTask) -> GlueTask:
    """The registry entry of a task, by Hub name or alias (``'SST-2'``, ``'sts-b'``, ``'MNLI'``; any case)."""
    if isinstance(name, GlueTask):
        return name
    task = GLUE_TASKS.get(_normalize_name(str(name)))
    if task is None:
        raise ValueError(
            f"Unknown GLUE task {name!r}; valid names: {', '.join(GLUE_TASKS)} (GLUE folder names such as "
            f"'SST-2', 'STS-B' or 'MNLI' are accepted too, in any case)."
        )
    return task


# --------------------------------------------------------------------------- local TSV reader
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
            f"GLUE data_dir {str(root.absolute())!r} is not a directory; {_describe_dir(str(root.parent))}. "
            f"Point data_dir to the GLUE directory (with CoLA/, SST-2/, ... as written by the GLUE download "
            f"script) or to the {task.folder} folder itself."
        )
    for child in sorted(root.iterdir()):
        if child.is_dir() and _normalize_name(child.name) == task.name:
            return child
    own_name = _normalize_name(root.name)
    if own_name == task.name or (own_name not in GLUE_TASKS and any(root.glob("*.tsv"))):
        return root
    raise FileNotFoundError(
        f"GLUE {task.folder}: no folder {task.folder!r} in data_dir {str(root.absolute())!r}; "
        f"{_describe_dir(str(root))}. Expected <data_dir>/{task.folder}/train.tsv etc. as written by the "
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
            f"{_describe_dir(str(folder))}. The GLUE download script writes {task.folder}/"
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


# --------------------------------------------------------------------------- batches
@dataclass
class GlueCollator:
    """Pad token columns to the longest sequence in the batch; add ``labels`` and ``idx`` tensors.

    Items are dicts of ``input_ids``, ``token_type_ids``, ``attention_mask`` (lists of ints), ``label`` and
    ``idx``. The batch has int64 ``(B, T)`` token tensors, ``labels`` ``(B,)`` (int64, float32 for regression)
    and ``idx`` ``(B,)`` int64.
    """

    tokenizer: PreTrainedTokenizerBase
    regression: bool = False

    def __post_init__(self) -> None:
        self._pad = DataCollatorWithPadding(self.tokenizer, padding="longest", return_tensors="pt")

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = dict(self._pad([{k: item[k] for k in _TOKEN_COLUMNS} for item in items]))
        label_dtype = torch.float32 if self.regression else torch.int64
        batch["labels"] = torch.tensor([item["label"] for item in items], dtype=label_dtype)  # (B,)
        batch["idx"] = torch.tensor([item["idx"] for item in items], dtype=torch.int64)  # (B,)
        return batch


def _encode_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, text_keys: tuple[str, ...], max_length: int
) -> dict[str, list]:
    """Batched map: tokenize single sentences or ``(s1, s2)`` pairs, truncated to ``max_length``."""
    return dict(
        tokenizer(
            *(batch[key] for key in text_keys),
            truncation=True,  # pairs: longest_first
            max_length=max_length,
            return_token_type_ids=True,
            return_attention_mask=True,
        )
    )


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """Stable hash of a fast tokenizer (its serialized backend), for cache fingerprints."""
    backend = tokenizer.backend_tokenizer.to_str()
    return _digest(type(tokenizer).__name__, hashlib.sha256(backend.encode("utf-8")).hexdigest())


def _subsample(ds: datasets.Dataset, limit: int | None, seed: int, what: str) -> datasets.Dataset:
    """A seeded random subset of ``limit`` rows, kept in file order (all rows if ``limit`` is None/large)."""
    if limit is None or limit >= len(ds):
        return ds
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(ds))[:limit])
    log.info(
        "%s: using a random subset of %d of %d examples (seeded shuffle, seed=%d, kept in file order).",
        what,
        limit,
        len(ds),
        seed,
    )
    return ds.select(keep)


# --------------------------------------------------------------------------- DataModule
class GlueDataModule(L.LightningDataModule):
    """Tokenized GLUE task from the Hub (``nyu-mll/glue``) or a local GLUE directory.

    ``prepare_data`` reads and tokenizes every split once into ``cache_dir`` (explicit fingerprints: the
    source file or Hub fingerprint, tokenizer, ``max_seq_length`` and subsample); ``setup`` rebuilds from
    that cache. Examples keep the Hub text columns, ``label`` and ``idx``, the row index in the split
    (unique, also after subsampling), plus ``input_ids``, ``token_type_ids``, ``attention_mask``.

    Loaders yield dicts of ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``(B, T)``, padded
    to the longest in the batch), ``labels`` (int64, float32 for STS-B) and ``idx`` (int64). With several
    evaluation splits (MNLI: matched, mismatched) ``val_dataloader`` / ``test_dataloader`` return a list of
    loaders in the order of ``eval_split_names`` / ``test_split_names``.

    Args:
        task: GLUE task name or alias (``rte``, ``SST-2``, ``sts-b``, ``MNLI``, ...).
        tokenizer: local tokenizer directory or Hub id (fast tokenizer required).
        data_dir: GLUE directory (``<dir>/<TASK>/{train,dev,test}.tsv``, or the task folder itself);
            ``None`` loads the Hub dataset ``hub_dataset``. Local test files are optional.
        max_seq_length: maximum tokens per example, including special tokens.
        batch_size: training batch size (per device).
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        cache_dir: cache directory (Hub downloads and tokenized splits; default: the ``datasets`` cache).
        max_train_samples: use a seeded random subset of this many training examples (e.g. CPU runs).
        max_eval_samples: same for each validation split (test splits are always complete).
        seed: seed of the subsets.
        num_proc: processes for tokenization (``datasets`` ``num_proc``).
        include_test: also tokenize and serve the unlabelled test splits (for GLUE-server submissions).
        hub_dataset: Hub dataset used when ``data_dir`` is ``None``.
    """

    def __init__(
        self,
        task: str,
        tokenizer: str,
        data_dir: str | None = None,
        max_seq_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        seed: int = 0,
        num_proc: int | None = None,
        include_test: bool = True,
        hub_dataset: str = "nyu-mll/glue",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self._task = get_glue_task(task)
        for arg, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}.")
        for arg, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
            if value is not None and value < 1:
                raise ValueError(f"{arg} must be >= 1 or null (all examples), got {value}.")
        self._tokenizer = _load_tokenizer(tokenizer)
        self._tokenizer_fp = _tokenizer_fingerprint(self._tokenizer)
        max_len = self._tokenizer.model_max_length
        if not _MIN_SEQ_LEN <= max_seq_length <= max_len:
            raise ValueError(
                f"max_seq_length={max_seq_length} is out of range: it must be between {_MIN_SEQ_LEN} and the "
                f"tokenizer's model_max_length={max_len} (it includes [CLS] and [SEP]). Set e.g. 128."
            )
        self.data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else None
        self.hub_dataset = hub_dataset
        self.max_seq_length = int(max_seq_length)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.cache_dir = os.path.expanduser(os.fspath(cache_dir)) if cache_dir else None
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.seed = int(seed)
        self.num_proc = num_proc
        self.include_test = bool(include_test)
        self._test_splits = self._find_test_splits() if include_test else ()
        if self.data_dir is not None:  # fail early on a wrong directory or a missing train/dev file
            for split in ("train", *self._task.validation_splits):
                split_file(self.data_dir, self._task, split)
        self._datasets: dict[str, datasets.Dataset] = {}

    # ------------------------------------------------------------------ public read-only state
    @property
    def task(self) -> GlueTask:
        """The GLUE task (labels, metrics, splits)."""
        return self._task

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fast tokenizer used for every split."""
        return self._tokenizer

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for STS-B regression)."""
        return self._task.num_labels

    @property
    def eval_split_names(self) -> list[str]:
        """Validation splits, in ``val_dataloader`` order (``["validation"]``; MNLI matched, mismatched)."""
        return list(self._task.validation_splits)

    @property
    def test_split_names(self) -> list[str]:
        """Test splits served by ``test_dataloader`` (local: those whose file exists; [] without test)."""
        return list(self._test_splits)

    @property
    def train_dataset(self) -> datasets.Dataset | None:
        """Tokenized training split; ``None`` before :meth:`setup`."""
        return self._datasets.get("train")

    @property
    def eval_datasets(self) -> dict[str, datasets.Dataset]:
        """Validation splits by name: text columns, ``label``, ``idx`` and token columns (after setup)."""
        return {s: self._datasets[s] for s in self.eval_split_names if s in self._datasets}

    @property
    def test_datasets(self) -> dict[str, datasets.Dataset]:
        """Test splits by name (``label`` is -1), after setup."""
        return {s: self._datasets[s] for s in self.test_split_names if s in self._datasets}

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Read and tokenize every split once (one process), filling the cache."""
        self._build()

    def setup(self, stage: str | None = None) -> None:
        """Rebuild every split on each process (cache hits) and expose the datasets."""
        if not self._datasets:
            self._datasets = self._build()

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require("train"), self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self._loaders(self.eval_split_names)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if not self._test_splits:
            raise RuntimeError(
                f"GlueDataModule({self._task.name}): no test split to serve: "
                + (
                    f"no {', '.join(self._task.tsv_filename(s) for s in self._task.test_splits)} in the "
                    f"{self._task.folder} folder of {self.data_dir!r}."
                    if self.include_test
                    else "include_test is false."
                )
            )
        return self._loaders(self.test_split_names)

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """The test loaders (predictions for :func:`write_glue_submission`)."""
        return self.test_dataloader()

    # ------------------------------------------------------------------ loaders
    def _require(self, split: str) -> datasets.Dataset:
        if split not in self._datasets:
            raise RuntimeError(f"GlueDataModule: split {split!r} is not loaded; call setup() first.")
        return self._datasets[split]

    def _loaders(self, splits: list[str]) -> DataLoader | list[DataLoader]:
        loaders = [self._loader(self._require(s), self.eval_batch_size, shuffle=False) for s in splits]
        return loaders[0] if len(loaders) == 1 else loaders

    def _loader(self, dataset: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return make_loader(
            dataset.with_format(None, columns=_LOADER_COLUMNS),  # items: dicts of python lists / numbers
            batch_size, shuffle, GlueCollator(self._tokenizer, regression=self._task.is_regression),
            self.num_workers, self.trainer)

    # ------------------------------------------------------------------ pipeline
    def _find_test_splits(self) -> tuple[str, ...]:
        """Hub: every test split; local: the test splits whose file exists (others are logged)."""
        if self.data_dir is None:
            return self._task.test_splits
        folder = find_task_dir(self.data_dir, self._task)
        present = tuple(s for s in self._task.test_splits if (folder / self._task.tsv_filename(s)).is_file())
        missing = [self._task.tsv_filename(s) for s in self._task.test_splits if s not in present]
        if missing:
            log.info("GLUE %s: no %s in %s; no test predictions for it.", self._task.folder, missing, folder)
        return present

    def _build(self) -> dict[str, datasets.Dataset]:
        """Every split: raw -> (subsample) -> tokenized, cached."""
        splits = ["train", *self._task.validation_splits, *self._test_splits]
        hub = self._load_hub() if self.data_dir is None else None
        out = {}
        for split in splits:
            raw, source_fp = self._raw_split(split, hub)
            limit = self._sample_limit(split)
            raw = _subsample(raw, limit, self.seed, f"GLUE {self._task.name} {split}")
            out[split] = self._encode(raw, split, _digest(source_fp, limit, self.seed if limit else None))
        log.info(
            "GLUE %s (%s): %s examples, max_seq_length=%d",
            self._task.name,
            self.data_dir or self.hub_dataset,
            ", ".join(f"{split} {len(ds)}" for split, ds in out.items()),
            self.max_seq_length,
        )
        return out

    def _sample_limit(self, split: str) -> int | None:
        """``max_train_samples`` for train, ``max_eval_samples`` for validation, no limit for test."""
        if split == "train":
            return self.max_train_samples
        return self.max_eval_samples if split in self._task.validation_splits else None

    def _raw_split(self, split: str, hub: datasets.DatasetDict | None) -> tuple[datasets.Dataset, str]:
        """The raw split (text columns, label, idx) and a fingerprint of its source."""
        if hub is None:
            path = split_file(self.data_dir, self._task, split)
            stat = path.stat()
            source_fp = _digest("local", str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            return read_glue_split(self.data_dir, self._task, split), source_fp
        ds = self._hub_split(hub, split)
        return ds, _digest("hub", self.hub_dataset, hub[split]._fingerprint)

    def _load_hub(self) -> datasets.DatasetDict:
        try:
            return datasets.load_dataset(self.hub_dataset, self._task.name, cache_dir=self.cache_dir)
        except Exception as e:
            hint = (
                "Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the dataset is not in the cache "
                f"({self.cache_dir or 'default datasets cache'}): unset HF_HUB_OFFLINE to download it once, "
                "or set data_dir to a local GLUE directory (data/glue=local)."
                if _offline()
                else "Check the dataset name and your network, or set data_dir to a local GLUE directory "
                "(data/glue=local)."
            )
            raise ConnectionError(
                f"Could not load Hub dataset {self.hub_dataset!r} (config {self._task.name!r}): "
                f"{type(e).__name__}: {e}. {hint}"
            ) from e

    def _hub_split(self, hub: datasets.DatasetDict, split: str) -> datasets.Dataset:
        """A Hub split checked against the registry, with ``idx`` reset to the row index."""
        if split not in hub:
            raise ValueError(
                f"Hub dataset {self.hub_dataset!r} ({self._task.name}) has no split {split!r} "
                f"(splits: {list(hub)})."
            )
        ds = hub[split]
        expected = self._task.features
        missing = [c for c in expected if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"Hub dataset {self.hub_dataset!r} ({self._task.name}, {split}) lacks columns {missing} "
                f"(columns: {ds.column_names}); it is not laid out like nyu-mll/glue."
            )
        names = getattr(ds.features["label"], "names", None)
        if names is not None and tuple(names) != self._task.labels:
            raise ValueError(
                f"Hub dataset {self.hub_dataset!r} ({self._task.name}) has labels {names}, but the task "
                f"registry (and local GLUE files) use {list(self._task.labels or [])}; labels that do not "
                f"match the task."
            )
        ds = ds.select_columns(list(expected)).remove_columns("idx")
        # The Hub idx is not always the row index (MRPC validation keeps source-file row numbers).
        return ds.add_column("idx", np.arange(len(ds), dtype=np.int32), feature=datasets.Value("int32"))

    def _cache_file(self, split: str, fingerprint: str) -> str:
        root = self.cache_dir or datasets.config.HF_DATASETS_CACHE
        folder = os.path.join(os.fspath(root), "nas_bert_glue", self._task.name)
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{split}-{fingerprint}.arrow")

    def _encode(self, raw: datasets.Dataset, split: str, source_fp: str) -> datasets.Dataset:
        """Tokenize ``raw`` into the cache, keeping its columns."""
        fingerprint = _digest(
            source_fp,
            _PIPELINE_VERSION,
            self._task.name,
            split,
            self._tokenizer_fp,
            self.max_seq_length,
        )
        features = raw.features.copy()
        features["input_ids"] = datasets.List(datasets.Value("int32"))
        features["token_type_ids"] = datasets.List(datasets.Value("int8"))
        features["attention_mask"] = datasets.List(datasets.Value("int8"))
        num_proc = (
            self.num_proc if self.num_proc and self.num_proc > 1 and len(raw) >= 2 * self.num_proc else None
        )
        return raw.map(
            _encode_batch,
            batched=True,
            fn_kwargs={
                "tokenizer": self._tokenizer,
                "text_keys": self._task.text_keys,
                "max_length": self.max_seq_length,
            },
            features=features,
            num_proc=num_proc,
            cache_file_name=self._cache_file(split, fingerprint),
            new_fingerprint=fingerprint,  # explicit: hashing the tokenizer object is slow and not always stable
            desc=f"Tokenizing GLUE {self._task.name} {split}",
        )


# --------------------------------------------------------------------------- submissions
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
