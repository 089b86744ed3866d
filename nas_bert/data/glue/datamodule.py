"""The GLUE DataModule: one task from the Hub (``nyu-mll/glue``) or a local GLUE directory, tokenized into
the ``datasets`` cache and served as dynamically padded batches."""

from __future__ import annotations

import logging
import os

import datasets
import numpy as np
from torch.utils.data import DataLoader

from nas_bert.data.base import TokenizedDataModule
from nas_bert.data.common import (
    cache_path,
    check_max_seq_length,
    digest,
    load_hub_dataset,
    tokenizer_fingerprint,
)
from nas_bert.data.glue.features import (
    LOADER_COLUMNS,
    encode_batch,
    encoded_features,
    glue_collator,
    subsample,
)
from nas_bert.data.glue.tasks import GlueTask, get_glue_task
from nas_bert.data.glue.tsv import find_task_dir, read_glue_split, split_file
from nas_bert.data.loading import make_loader

__all__ = ["GlueDataModule"]

log = logging.getLogger(__name__)

# Bump when the reading/tokenization logic changes: it is part of the explicit cache fingerprints.
_PIPELINE_VERSION = "glue-v1"


class GlueDataModule(TokenizedDataModule):
    """Tokenized GLUE task from the Hub (``nyu-mll/glue``) or a local GLUE directory.

    ``prepare_data`` reads and tokenizes every split once into ``cache_dir`` (explicit fingerprints: the
    source file or Hub fingerprint, tokenizer, ``max_seq_length`` and subsample); ``setup`` rebuilds from
    that cache. Examples keep the Hub text columns, ``label`` and ``idx``, the row index in the split
    (unique, also after subsampling), plus ``input_ids``, ``token_type_ids``, ``attention_mask``.

    Loaders yield mappings (``transformers.BatchEncoding``, see :mod:`nas_bert.data.glue.features`) of
    ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``(B, T)``, padded to the longest in the
    batch), ``labels`` ``(B,)`` (int64, float32 for STS-B) and ``idx`` ``(B,)`` (int64). With several
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
        max_train_samples: use a seeded random subset of this many training examples, kept in file order
            (e.g. CPU runs; the corpus instead keeps its first N sequences).
        max_eval_samples: same for each validation split (test splits are always complete).
        seed: seed of the subsets.
        num_proc: processes for tokenization (``datasets`` ``num_proc``).
        include_test: also tokenize and serve the unlabelled test splits (for GLUE-server submissions).
        hub_dataset: Hub dataset used when ``data_dir`` is ``None``.
        group_by_length: training batches of similar lengths (groups of 50 batches sorted by length, in a
            random order), so dynamic padding pads little: about half the tokens on GLUE at batch 32.
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
        group_by_length: bool = True,
    ) -> None:
        self._task = get_glue_task(task)
        super().__init__(tokenizer, batch_size, eval_batch_size, num_workers, cache_dir, max_train_samples,
                         max_eval_samples, seed)
        self.save_hyperparameters(logger=False)
        self._tokenizer_fp = tokenizer_fingerprint(self._tokenizer)
        self.data_dir = os.path.expanduser(os.fspath(data_dir)) if data_dir else None
        self.hub_dataset = hub_dataset
        self.max_seq_length = check_max_seq_length(max_seq_length, self._tokenizer)
        self.num_proc = num_proc
        self.include_test = bool(include_test)
        self.group_by_length = bool(group_by_length)
        self._test_splits = self._find_test_splits() if include_test else ()
        if self.data_dir is not None:  # fail early on a wrong directory or a missing train/dev file
            for split in ("train", *self._task.validation_splits):
                split_file(self.data_dir, self._task, split)
        self._collator = glue_collator(self._tokenizer)
        self._datasets: dict[str, datasets.Dataset] = {}

    # ------------------------------------------------------------------ public read-only state
    @property
    def task(self) -> GlueTask:
        """The GLUE task (labels, metrics, splits)."""
        return self._task

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
        train = self._require("train")
        lengths = [len(ids) for ids in train["input_ids"]] if self.group_by_length else None
        return self._loader(train, self.batch_size, shuffle=True, lengths=lengths)

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

    def _loader(self, dataset: datasets.Dataset, batch_size: int, shuffle: bool,
                lengths: list[int] | None = None) -> DataLoader:
        items = dataset.with_format(None, columns=LOADER_COLUMNS)  # dicts of Python lists / numbers
        return make_loader(items, batch_size, shuffle, self._collator, self.num_workers, self.trainer, lengths)

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
            raw = subsample(raw, limit, self.seed, f"GLUE {self._task.name} {split}")
            out[split] = self._encode(raw, split, digest(source_fp, limit, self.seed if limit else None))
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
            source_fp = digest("local", str(path.resolve()), stat.st_size, stat.st_mtime_ns)
            return read_glue_split(self.data_dir, self._task, split), source_fp
        ds = self._hub_split(hub, split)
        return ds, digest("hub", self.hub_dataset, hub[split]._fingerprint)

    def _load_hub(self) -> datasets.DatasetDict:
        return load_hub_dataset(
            self.hub_dataset,
            self._task.name,
            cache_dir=self.cache_dir,
            fallback="set data_dir to a local GLUE directory (data/glue=local)",
        )

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

    def _encode(self, raw: datasets.Dataset, split: str, source_fp: str) -> datasets.Dataset:
        """Tokenize ``raw`` into the cache, keeping its columns."""
        fingerprint = digest(
            source_fp,
            _PIPELINE_VERSION,
            self._task.name,
            split,
            self._tokenizer_fp,
            self.max_seq_length,
        )
        num_proc = (
            self.num_proc if self.num_proc and self.num_proc > 1 and len(raw) >= 2 * self.num_proc else None
        )
        return raw.map(
            encode_batch,
            batched=True,
            fn_kwargs={
                "tokenizer": self._tokenizer,
                "text_keys": self._task.text_keys,
                "max_length": self.max_seq_length,
            },
            features=encoded_features(raw.features),
            num_proc=num_proc,
            cache_file_name=cache_path(
                self.cache_dir, "nas_bert_glue", self._task.name, f"{split}-{fingerprint}.arrow"
            ),
            new_fingerprint=fingerprint,  # explicit: hashing the tokenizer object is slow and not always stable
            desc=f"Tokenizing GLUE {self._task.name} {split}",
        )
