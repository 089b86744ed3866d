"""Pre-training corpus DataModule: raw text -> packed ``[CLS] ... [SEP]`` sequences.

This module owns everything between "some text" and "a batch of token ids" for the pre-training /
distillation stage:

* reading local plain-text files (``.txt``, ``.raw``, gzipped ``.gz``; paths or globs) or a Hugging
  Face Hub dataset (e.g. ``wikitext`` / ``wikitext-103-raw-v1``),
* optional Project Gutenberg boilerplate stripping (per book),
* tokenization (fast tokenizer, no special tokens) with the ``datasets`` fingerprint cache,
* packing as in Hugging Face ``run_mlm.py`` ``group_texts``: the token ids of all non-empty lines are
  concatenated and cut into chunks of ``seq_len - 2``; each chunk becomes ``[CLS] chunk [SEP]``; the
  tail that does not fill a chunk is dropped (one remainder per split, not per map batch),
* an optional deterministic validation split (when the source has none), and the dataloaders.

Masking is *not* done here: pass ``collator`` (e.g. an MLM collator) for that. Every sequence has the
same length, so no padding is needed and ``attention_mask`` is all ones, ``token_type_ids`` all zeros.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import datasets
import lightning as L
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, default_collate
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from nas_bert.data.loading import make_loader

__all__ = ["CorpusDataModule", "strip_gutenberg_lines"]

log = logging.getLogger(__name__)

# Bump when the tokenize/pack logic changes: it is part of the explicit cache fingerprints.
_PIPELINE_VERSION = "corpus-v1"
_MIN_SEQ_LEN = 8
_OUTPUT_COLUMNS = ["input_ids", "attention_mask", "token_type_ids"]

# Project Gutenberg markers. Modern files: "*** START OF THIS/THE PROJECT GUTENBERG EBOOK ... ***" and
# "*** END OF ...". A few pre-2003 files only have the legal "small print" header ending in
# "*END*THE SMALL PRINT!..." and a closing "End of the Project Gutenberg Etext ..." line: those are
# used only when the modern marker is absent.
_PG_START = re.compile(r"^\s*\*{3}\s*START OF", re.IGNORECASE)
_PG_END = re.compile(r"^\s*\*{3}\s*END OF", re.IGNORECASE)
_PG_LEGACY_START = re.compile(r"^\s*\*END\*?\s*THE SMALL PRINT", re.IGNORECASE)
_PG_LEGACY_END = re.compile(r"^\s*End of (the )?Project Gutenberg", re.IGNORECASE)


def strip_gutenberg_lines(text: str) -> list[str]:
    """Return the lines of one Project Gutenberg book without its license header and footer.

    Drops every line up to and including the ``*** START OF`` marker and from the ``*** END OF`` marker
    on (the first END marker after the START marker). A book without markers is returned whole.
    """
    lines = text.splitlines()

    def first(pattern: re.Pattern[str], begin: int) -> int | None:
        return next((i for i in range(begin, len(lines)) if pattern.match(lines[i])), None)

    start = first(_PG_START, 0)
    if start is None:
        start = first(_PG_LEGACY_START, 0)
    body_start = 0 if start is None else start + 1
    end = first(_PG_END, body_start)
    if end is None:
        end = first(_PG_LEGACY_END, body_start)
    return lines[body_start : len(lines) if end is None else end]


def _strip_gutenberg_batch(batch: dict[str, list[str]]) -> dict[str, list[str]]:
    """Batched map: one row per book in, one row per body line out."""
    return {"text": [line for doc in batch["text"] if doc for line in strip_gutenberg_lines(doc)]}


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
    input_ids = np.empty((count, chunk + 2), dtype=np.int32)  # (B, seq_len)
    input_ids[:, 0] = cls_id
    input_ids[:, 1:-1] = body
    input_ids[:, -1] = sep_id
    return {
        "input_ids": input_ids,
        "attention_mask": np.ones_like(input_ids, dtype=np.int8),  # (B, seq_len)
        "token_type_ids": np.zeros_like(input_ids, dtype=np.int8),  # (B, seq_len)
    }


def _digest(*parts: Any) -> str:
    """Short stable hash used as a ``datasets`` fingerprint (16 hex chars, like datasets' own)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    """Normalise a str / list / ListConfig / None argument to a list of strings."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)] if os.fspath(value) else []
    return [os.fspath(v) for v in value]


def _describe_dir(directory: str, limit: int = 20) -> str:
    """Human-readable listing of ``directory`` for error messages."""
    if not directory:
        directory = "."
    if not os.path.isdir(directory):
        return f"directory {os.path.abspath(directory)!r} does not exist either"
    entries = sorted(os.listdir(directory))
    if not entries:
        return f"directory {os.path.abspath(directory)!r} is empty"
    shown = ", ".join(entries[:limit]) + (
        f", ... ({len(entries) - limit} more)" if len(entries) > limit else ""
    )
    return f"directory {os.path.abspath(directory)!r} contains: {shown}"


def _resolve_files(patterns: list[str], arg_name: str) -> list[str]:
    """Expand globs and check that every file exists; returns absolute paths, in a stable order."""
    files: list[str] = []
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        if glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(
                    f"{arg_name}: the glob {pattern!r} (resolved from cwd {os.getcwd()!r}) matches no files; "
                    f"{_describe_dir(_glob_root(path))}. Fix the pattern or the directory "
                    f"(relative paths are resolved against the current working directory)."
                )
            files.extend(os.path.abspath(p) for p in matches)
        elif os.path.isdir(path):
            raise FileNotFoundError(
                f"{arg_name}: {os.path.abspath(path)!r} is a directory, not a text file; "
                f"{_describe_dir(path)}. Pass a glob such as {os.path.join(pattern, '*.txt')!r}."
            )
        elif not os.path.isfile(path):
            raise FileNotFoundError(
                f"{arg_name}: file {os.path.abspath(path)!r} does not exist; "
                f"{_describe_dir(os.path.dirname(path))}. Fix the path "
                f"(relative paths are resolved against the current working directory {os.getcwd()!r})."
            )
        else:
            files.append(os.path.abspath(path))
    return files


def _glob_root(pattern: str) -> str:
    """The longest leading directory of ``pattern`` without glob characters."""
    parts = pattern.split(os.sep)
    root = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        root.append(part)
    return os.sep.join(root) or ("/" if pattern.startswith(os.sep) else ".")


def _offline() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load a fast tokenizer from a local directory or a Hub id, with actionable errors."""
    path = os.path.expanduser(os.fspath(name))
    looks_local = os.path.isabs(path) or path.startswith(("./", "../", "~")) or path in (".", "..")
    if (looks_local or os.path.exists(path)) and not os.path.isdir(path):
        raise FileNotFoundError(
            f"tokenizer: {os.path.abspath(path)!r} is not an existing directory; "
            f"{_describe_dir(os.path.dirname(path))}. Point `tokenizer` to a directory containing "
            f"tokenizer.json (e.g. the teacher checkpoint) or to a Hub id such as 'bert-base-uncased'."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as e:
        if os.path.isdir(path):
            raise OSError(
                f"tokenizer: could not load a tokenizer from directory {os.path.abspath(path)!r} "
                f"({type(e).__name__}: {e}); {_describe_dir(path)}. It needs tokenizer.json (or vocab.txt) "
                f"and tokenizer_config.json, e.g. from tokenizer.save_pretrained(dir)."
            ) from e
        hint = (
            " Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so only cached Hub ids work:"
            " unset it to download once, or use a local directory."
            if _offline()
            else " Check the id / your network, or use a local directory."
        )
        raise OSError(
            f"tokenizer: could not load {name!r}: no local directory of that name (cwd {os.getcwd()!r}) "
            f"and loading it as a Hub id failed ({type(e).__name__}: {e}).{hint}"
        ) from e
    if not tokenizer.is_fast:
        raise ValueError(
            f"tokenizer: {name!r} loaded as a slow tokenizer ({type(tokenizer).__name__}); a fast one is "
            f"required. Add a tokenizer.json to the directory (e.g. save a PreTrainedTokenizerFast there)."
        )
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(
            f"tokenizer: {name!r} has no [CLS]/[SEP] tokens (cls_token_id={tokenizer.cls_token_id}, "
            f"sep_token_id={tokenizer.sep_token_id}); use a BERT-style tokenizer."
        )
    return tokenizer


class CorpusDataModule(L.LightningDataModule):
    """Packed fixed-length sequences from a text corpus for BERT pre-training / distillation.

    Exactly one source: local ``train_files`` (+ optional ``validation_files``), or ``hub_dataset``
    (+ ``hub_config``; splits ``train`` and, if present, ``validation``). Without a validation split,
    ``validation_fraction`` of the packed *sequences* is held out (deterministic given ``seed``); with
    ``validation_fraction=0`` there is no validation set and ``val_dataloader`` returns ``[]``.

    Each item is a dict of ``input_ids``, ``attention_mask`` (ones), ``token_type_ids`` (zeros), int64
    tensors of shape ``(seq_len,)``; the default collate stacks them to ``(B, seq_len)``.

    Args:
        tokenizer: local tokenizer directory or Hub id (loaded with ``AutoTokenizer``, must be fast).
        train_files: path(s) or glob(s) of text files (one example per line; ``.gz`` is fine).
        validation_files: path(s) or glob(s) of validation text files.
        hub_dataset: Hub dataset name, instead of local files.
        hub_config: its configuration name (e.g. ``wikitext-103-raw-v1``).
        text_column: Hub column holding the text.
        validation_fraction: share of packed sequences held out when the source has no validation split.
        seq_len: sequence length including ``[CLS]`` and ``[SEP]`` (8 .. tokenizer.model_max_length).
        batch_size: training batch size (per device).
        eval_batch_size: validation batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        num_proc: processes for loading / tokenization (``datasets`` ``num_proc``).
        cache_dir: ``datasets`` cache directory (default: the ``datasets`` default cache).
        strip_gutenberg_boilerplate: treat each file (or Hub row) as one Project Gutenberg book and drop
            its license header/footer (see :func:`strip_gutenberg_lines`).
        max_train_sequences: keep only the first N training sequences.
        max_val_sequences: keep only the first N validation sequences.
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
        seq_len: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_proc: int | None = None,
        cache_dir: str | None = None,
        strip_gutenberg_boilerplate: bool = False,
        max_train_sequences: int | None = None,
        max_val_sequences: int | None = None,
        seed: int = 0,
        collator: Callable[[list[dict[str, torch.Tensor]]], Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["collator"], logger=False)
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
        for arg, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}.")
        for arg, value in (
            ("max_train_sequences", max_train_sequences),
            ("max_val_sequences", max_val_sequences),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{arg} must be >= 1 or null (no limit), got {value}.")

        self._tokenizer = _load_tokenizer(tokenizer)
        max_len = self._tokenizer.model_max_length
        if not _MIN_SEQ_LEN <= seq_len <= max_len:
            raise ValueError(
                f"seq_len={seq_len} is out of range: it must be between {_MIN_SEQ_LEN} and the "
                f"tokenizer's model_max_length={max_len} (it includes [CLS] and [SEP]). Set seq_len to "
                f"e.g. 128."
            )

        self.train_files = _resolve_files(train_patterns, "train_files") if local else []
        self.validation_files = _resolve_files(val_patterns, "validation_files") if local else []
        self.hub_dataset, self.hub_config, self.text_column = hub_dataset, hub_config, text_column
        self.validation_fraction = float(validation_fraction)
        self.seq_len = int(seq_len)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.num_proc = num_proc
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None
        self.strip_gutenberg_boilerplate = bool(strip_gutenberg_boilerplate)
        self.max_train_sequences, self.max_val_sequences = max_train_sequences, max_val_sequences
        self.seed = int(seed)
        self.collator = collator
        self._train_dataset: datasets.Dataset | None = None
        self._val_dataset: datasets.Dataset | None = None

    # ------------------------------------------------------------------ public read-only state
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fast tokenizer used for the corpus."""
        return self._tokenizer

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
        # items: dict of (seq_len,) tensors -> batches of (B, seq_len)
        return make_loader(dataset, batch_size, shuffle, self.collator if self.collator is not None else default_collate,
                           self.num_workers, self.trainer)

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
                    f"corpus yields {len(train)} at seq_len={self.seq_len}; add more text, lower seq_len, or "
                    f"set validation_fraction=0."
                )
            split = train.train_test_split(test_size=self.validation_fraction, shuffle=True, seed=self.seed)
            train, val = split["train"], split["test"]
        elif val is not None and self.validation_fraction > 0:
            log.info(
                "validation_fraction=%s ignored: the corpus has a validation split.", self.validation_fraction
            )
        if self.max_train_sequences is not None:
            train = train.select(range(min(self.max_train_sequences, len(train))))
        if val is not None and self.max_val_sequences is not None:
            val = val.select(range(min(self.max_val_sequences, len(val))))
        log.info(
            "Corpus: %d train / %s val sequences of seq_len=%d",
            len(train),
            "no" if val is None else len(val),
            self.seq_len,
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
                        _strip_gutenberg_batch,
                        batched=True,
                        batch_size=8,  # 8 books per batch
                        remove_columns=ds.column_names,
                        num_proc=self._num_proc(len(ds)),
                        new_fingerprint=_digest(ds._fingerprint, _PIPELINE_VERSION, "strip-gutenberg"),
                        desc=f"Stripping Gutenberg boilerplate ({name})",
                    )
                    for name, ds in dd.items()
                }
            )
        return dd

    def _load_hub(self) -> datasets.DatasetDict:
        try:
            dd = datasets.load_dataset(
                self.hub_dataset, self.hub_config, cache_dir=self.cache_dir, num_proc=self.num_proc
            )
        except Exception as e:
            hint = (
                "Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the dataset is not in the cache "
                f"({self.cache_dir or 'default datasets cache'}): unset HF_HUB_OFFLINE to download it once, "
                "or set train_files/validation_files to local text files (e.g. data/corpus=local_text)."
                if _offline()
                else "Check the dataset name/config and your network, or set train_files/validation_files "
                "to local text files (e.g. data/corpus=local_text)."
            )
            raise ConnectionError(
                f"Could not load Hub dataset {self.hub_dataset!r} (config {self.hub_config!r}): "
                f"{type(e).__name__}: {e}. {hint}"
            ) from e
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

    def _tokenizer_fingerprint(self) -> str:
        backend = self._tokenizer.backend_tokenizer.to_str()
        return _digest(type(self._tokenizer).__name__, hashlib.sha256(backend.encode("utf-8")).hexdigest())

    def _tokenize_and_pack(self, ds: datasets.Dataset, split: str) -> datasets.Dataset:
        """Tokenize non-empty lines, concatenate, cut into ``[CLS] chunk [SEP]`` of ``seq_len``."""
        tok_fp = _digest(ds._fingerprint, _PIPELINE_VERSION, "tokenize", self._tokenizer_fingerprint())
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
        chunk = self.seq_len - 2
        n_tokens = int(pc.sum(pc.list_value_length(ids)).as_py() or 0) if len(tokenized) else 0
        n_seq = n_tokens // chunk
        if n_seq == 0:
            raise ValueError(
                f"The {split} corpus yields 0 sequences: it has {n_tokens} tokens in {len(tokenized)} "
                f"non-empty lines, but one sequence of seq_len={self.seq_len} needs {chunk} tokens plus "
                f"[CLS]/[SEP]. Use a smaller seq_len (>= {_MIN_SEQ_LEN}) or more text "
                f"(source: {self._source_description(split)})."
            )
        flat = pa.chunked_array([c.flatten() for c in ids.chunks], type=pa.int32())  # (n_tokens,)
        pack_fp = _digest(tok_fp, _PIPELINE_VERSION, "pack", self.seq_len)
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
                    "input_ids": datasets.List(datasets.Value("int32"), length=self.seq_len),
                    "attention_mask": datasets.List(datasets.Value("int8"), length=self.seq_len),
                    "token_type_ids": datasets.List(datasets.Value("int8"), length=self.seq_len),
                }
            ),
            new_fingerprint=pack_fp,
            cache_file_name=cache_file,
            desc=f"Packing {split} into {n_seq} x {self.seq_len}",
        )
        log.info(
            "%s: %d tokens -> %d sequences of %d (%d tokens dropped)",
            split,
            n_tokens,
            n_seq,
            self.seq_len,
            n_tokens - n_seq * chunk,
        )
        return packed

    def _source_description(self, split: str) -> str:
        if self.hub_dataset:
            return f"Hub {self.hub_dataset}/{self.hub_config} split {split!r}"
        files = self.validation_files if split == "validation" else self.train_files
        shown = ", ".join(files[:3]) + (f", ... ({len(files)} files)" if len(files) > 3 else "")
        return shown
