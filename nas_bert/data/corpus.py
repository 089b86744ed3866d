"""Pre-training corpus DataModule: local text files or a Hub dataset -> tokenized -> packed fixed-length
``[CLS] ... [SEP]`` sequences for MLM pre-training / distillation (masking is left to the collator).

Its size (about 400 lines) is one pipeline's: the sources (files or Hub, with their errors), cleaning,
tokenizing, packing, the validation split and its cached fingerprints only make sense together.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, default_collate
from transformers import PreTrainedTokenizerBase

from nas_bert.data.base import TokenizedDataModule
from nas_bert.data.common import (
    MIN_SEQ_LEN,
    check_max_seq_length,
    digest,
    load_hub_dataset,
    resolve_files,
    tokenizer_fingerprint,
)
from nas_bert.data.gutenberg import strip_gutenberg_batch
from nas_bert.data.loading import make_loader

__all__ = ["CorpusDataModule"]

log = logging.getLogger(__name__)

# Bump when the tokenize/pack logic changes: it is part of the explicit cache fingerprints.
_PIPELINE_VERSION = "corpus-v1"
_OUTPUT_COLUMNS = ["input_ids", "attention_mask", "token_type_ids"]


# --------------------------------------------------------------------------- map functions
def _tokenize_batch(batch: dict[str, list[str]], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
    """Batched map: drop empty/whitespace-only lines, tokenize the rest without special tokens."""
    texts = [t for t in batch["text"] if t and not t.isspace()]
    if not texts:
        return {"ids": []}
    enc = tokenizer(
        texts,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "longer than model_max_length" warning: lines are packed, not fed whole
    )
    return {"ids": [ids for ids in enc["input_ids"] if ids]}


def _pack_batch(
    batch: dict[str, list[int]], flat: pa.ChunkedArray, chunk: int, cls_id: int, sep_id: int
) -> dict[str, np.ndarray]:
    """Batched map over consecutive chunk indices: slice the flat token stream into sequences."""
    first, count = int(batch["_chunk"][0]), len(batch["_chunk"])
    body = flat.slice(first * chunk, count * chunk).to_numpy().astype(np.int32).reshape(count, chunk)
    input_ids = np.empty((count, chunk + 2), dtype=np.int32)  # (B, max_seq_length)
    input_ids[:, 0] = cls_id
    input_ids[:, 1:-1] = body
    input_ids[:, -1] = sep_id
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids, dtype=np.int8),  # (B, max_seq_length)
        "token_type_ids": np.zeros_like(input_ids, dtype=np.int8),  # (B, max_seq_length)
    }


# --------------------------------------------------------------------------- local files
def _as_list(value: str | Sequence[str] | None) -> list[str]:
    """Normalise a str / list / ListConfig / None argument to a list of strings."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)] if os.fspath(value) else []
    return [os.fspath(v) for v in value]


class CorpusDataModule(TokenizedDataModule):
    """Packed fixed-length sequences from a text corpus for BERT pre-training / distillation.

    Pipeline: read lines (local ``.txt`` / ``.raw`` / ``.gz`` files, or a Hub dataset) -> optional Project
    Gutenberg stripping (per book) -> tokenize without special tokens (``datasets`` cache, explicit
    fingerprints) -> pack as Hugging Face ``run_mlm.py`` ``group_texts``: the token ids of all non-empty
    lines are concatenated and cut into chunks of ``max_seq_length - 2``, each becoming
    ``[CLS] chunk [SEP]``; the tail that does not fill a chunk is dropped (one remainder per split, not per
    map batch) -> optional validation split -> optional "first N" truncation. No padding is needed, so
    ``attention_mask`` is all ones and ``token_type_ids`` all zeros; masking is the ``collator``'s job.

    Exactly one source: local ``train_files`` (+ optional ``validation_files``), or ``hub_dataset``
    (+ ``hub_config``; splits ``train`` and, if present, ``validation``). Without a validation split,
    ``validation_fraction`` of the packed *sequences* is held out (deterministic given ``seed``); with
    ``validation_fraction=0`` there is no validation set and ``val_dataloader`` returns ``[]``.

    Every sequence is packed to exactly ``max_seq_length`` tokens. Each item is a dict of ``input_ids``,
    ``attention_mask`` (ones), ``token_type_ids`` (zeros), int64 tensors of shape ``(max_seq_length,)``;
    the default collate stacks them to ``(B, max_seq_length)``.

    Args:
        tokenizer: local tokenizer directory or Hub id (loaded with ``AutoTokenizer``, must be fast).
        train_files: path(s) or glob(s) of text files (one example per line; ``.gz`` is fine).
        validation_files: path(s) or glob(s) of validation text files.
        hub_dataset: Hub dataset name, instead of local files.
        hub_config: its configuration name (e.g. ``wikitext-103-raw-v1``).
        text_column: Hub column holding the text.
        validation_fraction: share of packed sequences held out when the source has no validation split.
        max_seq_length: the packed sequence length, ``[CLS]`` and ``[SEP]`` included: every sequence has
            exactly this many tokens (8 .. tokenizer.model_max_length).
        batch_size: training batch size (per device).
        eval_batch_size: validation batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        num_proc: processes for loading / tokenization (``datasets`` ``num_proc``).
        cache_dir: ``datasets`` cache directory (default: the ``datasets`` default cache).
        strip_gutenberg_boilerplate: treat each file (or Hub row) as one Project Gutenberg book and drop
            its license header/footer (see :func:`nas_bert.data.gutenberg.strip_gutenberg_lines`).
        max_train_samples: keep only the *first* N packed training sequences (not a random subset, unlike
            GLUE / SQuAD: consecutive sequences are consecutive text).
        max_eval_samples: keep only the first N packed validation sequences.
        seed: seed of the ``validation_fraction`` split.
        collator: ``collate_fn`` for both dataloaders (e.g. MLM masking); default stacks tensors.
    """

    def __init__(
        self,
        tokenizer: str,
        train_files: str | list[str] | None = None,
        validation_files: str | list[str] | None = None,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        text_column: str = "text",
        validation_fraction: float = 0.0,
        max_seq_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str | None = None,
        strip_gutenberg_boilerplate: bool = False,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        seed: int = 0,
        collator: Callable[[list[dict[str, torch.Tensor]]], Any] | None = None,
    ) -> None:
        train_patterns, val_patterns = _as_list(train_files), _as_list(validation_files)
        local = bool(train_patterns or val_patterns)
        if local and hub_dataset:
            raise ValueError(
                f"Both local files (train_files={train_files!r}, validation_files={validation_files!r}) and "
                f"hub_dataset={hub_dataset!r} are set; choose one source: set hub_dataset to null to use "
                f"the files, or train_files/validation_files to null to use the Hub dataset."
            )
        if not local and not hub_dataset:
            raise ValueError(
                "No corpus given: set train_files (path/glob of local text files, optionally "
                "validation_files) or hub_dataset (e.g. hub_dataset='wikitext', "
                "hub_config='wikitext-103-raw-v1')."
            )
        if local and not train_patterns:
            raise ValueError(
                f"validation_files={validation_files!r} is set but train_files is empty; set train_files "
                f"to the training text file(s)."
            )
        if not 0.0 <= validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
        super().__init__(tokenizer, batch_size, eval_batch_size, num_workers, cache_dir, max_train_samples,
                         max_eval_samples, seed, no_limit="no limit")
        self.save_hyperparameters(ignore=["collator"], logger=False)
        self._max_seq_length = check_max_seq_length(max_seq_length, self._tokenizer)

        self.train_files = resolve_files(train_patterns, "train_files") if local else []
        self.validation_files = resolve_files(val_patterns, "validation_files") if local else []
        self.hub_dataset, self.hub_config, self.text_column = hub_dataset, hub_config, text_column
        self.validation_fraction = float(validation_fraction)
        self.num_proc = num_proc
        self.strip_gutenberg_boilerplate = bool(strip_gutenberg_boilerplate)
        self.collator = collator
        self._train_dataset: datasets.Dataset | None = None
        self._val_dataset: datasets.Dataset | None = None

    # ------------------------------------------------------------------ public read-only state
    @property
    def max_seq_length(self) -> int:
        """Tokens per packed sequence, ``[CLS]`` and ``[SEP]`` included."""
        return self._max_seq_length

    @property
    def train_dataset(self) -> datasets.Dataset | None:
        """Packed training sequences (torch format); ``None`` before :meth:`setup`."""
        return self._train_dataset

    @property
    def val_dataset(self) -> datasets.Dataset | None:
        """Packed validation sequences (torch format); ``None`` before setup or without validation."""
        return self._val_dataset

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Load, tokenize and pack once (one process), filling the ``datasets`` cache."""
        self._build()

    def setup(self, stage: str | None = None) -> None:
        """Rebuild the pipeline on every process (cache hits) and expose the datasets."""
        if self._train_dataset is None:
            self._train_dataset, self._val_dataset = self._build()

    def train_dataloader(self) -> DataLoader:
        if self._train_dataset is None:
            raise RuntimeError(
                "CorpusDataModule.train_dataloader() called before setup(); call setup() first."
            )
        return self._loader(self._train_dataset, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self._train_dataset is None:
            raise RuntimeError("CorpusDataModule.val_dataloader() called before setup(); call setup() first.")
        if self._val_dataset is None:
            return []  # no validation data: Lightning skips the validation loop
        return self._loader(self._val_dataset, self.eval_batch_size, shuffle=False)

    def _loader(self, dataset: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # items: dict of (max_seq_length,) tensors -> batches of (B, max_seq_length)
        collate = self.collator if self.collator is not None else default_collate
        return make_loader(dataset, batch_size, shuffle, collate, self.num_workers, self.trainer)

    # ------------------------------------------------------------------ pipeline
    def _build(self) -> tuple[datasets.Dataset, datasets.Dataset | None]:
        """raw text -> token ids -> packed sequences -> (optional split) -> (optional truncation)."""
        raw = self._load_raw()
        train = self._tokenize_and_pack(raw["train"], "train")
        val = self._tokenize_and_pack(raw["validation"], "validation") if "validation" in raw else None
        if val is None and self.validation_fraction > 0:
            if len(train) < 2:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} needs at least 2 packed sequences, but the "
                    f"corpus yields {len(train)} at max_seq_length={self._max_seq_length}; add more text, lower "
                    f"max_seq_length, or set validation_fraction=0."
                )
            split = train.train_test_split(test_size=self.validation_fraction, shuffle=True, seed=self.seed)
            train, val = split["train"], split["test"]
        elif val is not None and self.validation_fraction > 0:
            log.info(
                "validation_fraction=%s ignored: the corpus has a validation split.", self.validation_fraction
            )
        if self.max_train_samples is not None:  # the first N, not a random subset
            train = train.select(range(min(self.max_train_samples, len(train))))
        if val is not None and self.max_eval_samples is not None:
            val = val.select(range(min(self.max_eval_samples, len(val))))
        log.info(
            "Corpus: %d train / %s val sequences of max_seq_length=%d",
            len(train),
            "no" if val is None else len(val),
            self._max_seq_length,
        )
        train = train.with_format("torch", columns=_OUTPUT_COLUMNS)
        val = val.with_format("torch", columns=_OUTPUT_COLUMNS) if val is not None else None
        return train, val

    def _load_raw(self) -> datasets.DatasetDict:
        """Load the source as a DatasetDict with a single ``text`` column, one row per line."""
        if self.hub_dataset:
            dd = self._load_hub()
        else:
            data_files = {"train": self.train_files}
            if self.validation_files:
                data_files["validation"] = self.validation_files
            dd = datasets.load_dataset(
                "text",
                data_files=data_files,
                cache_dir=self.cache_dir,
                num_proc=self._num_proc(len(self.train_files)),
                # one row per file (= per book) when stripping, so the markers are found per file
                sample_by="document" if self.strip_gutenberg_boilerplate else "line",
            )
        if self.strip_gutenberg_boilerplate:
            dd = datasets.DatasetDict(
                {
                    name: ds.map(
                        strip_gutenberg_batch,
                        batched=True,
                        batch_size=8,  # 8 books per batch
                        remove_columns=ds.column_names,
                        num_proc=self._num_proc(len(ds)),
                        new_fingerprint=digest(ds._fingerprint, _PIPELINE_VERSION, "strip-gutenberg"),
                        desc=f"Stripping Gutenberg boilerplate ({name})",
                    )
                    for name, ds in dd.items()
                }
            )
        return dd

    def _load_hub(self) -> datasets.DatasetDict:
        dd = load_hub_dataset(
            self.hub_dataset,
            self.hub_config,
            cache_dir=self.cache_dir,
            num_proc=self.num_proc,
            fallback="set train_files/validation_files to local text files (e.g. data/corpus=local_text)",
        )
        if "train" not in dd:
            raise ValueError(
                f"Hub dataset {self.hub_dataset!r} has no 'train' split (splits: {list(dd)}); use another "
                f"dataset/config or local files."
            )
        out = {}
        for split in ("train", "validation"):
            if split not in dd:
                continue
            ds = dd[split]
            if self.text_column not in ds.column_names:
                raise ValueError(
                    f"Hub dataset {self.hub_dataset!r} split {split!r} has no column {self.text_column!r} "
                    f"(columns: {ds.column_names}); set text_column to one of them."
                )
            ds = ds.select_columns([self.text_column])
            if self.text_column != "text":
                ds = ds.rename_column(self.text_column, "text")
            out[split] = ds
        return datasets.DatasetDict(out)

    def _num_proc(self, n_items: int) -> int | None:
        """``num_proc`` capped by the number of items (files/rows) so datasets does not warn."""
        if not self.num_proc or self.num_proc <= 1:
            return None
        return max(1, min(self.num_proc, n_items)) if n_items > 1 else None

    def _tokenize_and_pack(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenize non-empty lines, concatenate, cut into ``[CLS] chunk [SEP]`` of ``max_seq_length``."""
        length = self._max_seq_length
        tok_fp = digest(ds._fingerprint, _PIPELINE_VERSION, "tokenize", tokenizer_fingerprint(self._tokenizer))
        tokenized = ds.map(
            _tokenize_batch,
            batched=True,
            remove_columns=ds.column_names,
            fn_kwargs={"tokenizer": self._tokenizer},
            features=datasets.Features({"ids": datasets.List(datasets.Value("int32"))}),
            num_proc=self._num_proc(len(ds)),
            new_fingerprint=tok_fp,  # explicit: hashing the tokenizer object is slow and not always stable
            desc=f"Tokenizing {split}",
        )
        ids = tokenized.data.column("ids")  # ChunkedArray of list<int32>, one list per non-empty line
        chunk = length - 2
        n_tokens = int(pc.sum(pc.list_value_length(ids)).as_py() or 0) if len(tokenized) else 0
        n_seq = n_tokens // chunk
        if n_seq == 0:
            raise ValueError(
                f"The {split} corpus yields 0 sequences: it has {n_tokens} tokens in {len(tokenized)} "
                f"non-empty lines, but one sequence of max_seq_length={length} needs {chunk} tokens plus "
                f"[CLS]/[SEP]. Use a smaller max_seq_length (>= {MIN_SEQ_LEN}) or more text "
                f"(source: {self._source_description(split)})."
            )
        flat = pa.chunked_array([c.flatten() for c in ids.chunks], type=pa.int32())  # (n_tokens,)
        pack_fp = digest(tok_fp, _PIPELINE_VERSION, "pack", length)
        cache_file = None
        if tokenized.cache_files:  # keep the packed arrays on disk, next to the token cache
            cache_file = os.path.join(
                os.path.dirname(tokenized.cache_files[0]["filename"]), f"packed-{pack_fp}.arrow"
            )
        index = datasets.Dataset.from_dict({"_chunk": np.arange(n_seq, dtype=np.int64)})
        packed = index.map(
            _pack_batch,
            batched=True,
            batch_size=1000,
            remove_columns=["_chunk"],
            fn_kwargs={
                "flat": flat,
                "chunk": chunk,
                "cls_id": self._tokenizer.cls_token_id,
                "sep_id": self._tokenizer.sep_token_id,
            },
            features=datasets.Features(
                {
                    "input_ids": datasets.List(datasets.Value("int32"), length=length),
                    "attention_mask": datasets.List(datasets.Value("int8"), length=length),
                    "token_type_ids": datasets.List(datasets.Value("int8"), length=length),
                }
            ),
            new_fingerprint=pack_fp,
            cache_file_name=cache_file,
            desc=f"Packing {split} into {n_seq} x {length}",
        )
        log.info(
            "%s: %d tokens -> %d sequences of %d (%d tokens dropped)",
            split,
            n_tokens,
            n_seq,
            length,
            n_tokens - n_seq * chunk,
        )
        return packed

    def _source_description(self, split: str) -> str:
        if self.hub_dataset:
            return f"Hub {self.hub_dataset}/{self.hub_config} split {split!r}"
        files = self.validation_files if split == "validation" else self.train_files
        shown = ", ".join(files[:3]) + (f", ... ({len(files)} files)" if len(files) > 3 else "")
        return shown
