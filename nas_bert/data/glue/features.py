"""GLUE examples -> model inputs: tokenization of single sentences or pairs, seeded training / evaluation
subsets, and the batch collator.

Batches come from ``transformers.DataCollatorWithPadding`` as is: it pads ``input_ids``,
``token_type_ids`` and ``attention_mask`` to the longest example of the batch, renames ``label`` to
``labels`` and turns the other columns into tensors: int64 ``labels`` for classification (float32 for
STS-B, whose labels are Python floats) and int64 ``idx``.
"""

from __future__ import annotations

import logging

import datasets
import numpy as np
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

__all__ = ["LOADER_COLUMNS", "encode_batch", "encoded_features", "glue_collator", "subsample"]

log = logging.getLogger(__name__)

TOKEN_COLUMNS = ("input_ids", "token_type_ids", "attention_mask")
# What a loader item holds: plain Python lists / numbers (dataset format None), collated by glue_collator.
LOADER_COLUMNS = [*TOKEN_COLUMNS, "label", "idx"]


def encode_batch(
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


def encoded_features(raw: datasets.Features) -> datasets.Features:
    """The features of a raw split (texts, ``label``, ``idx``) plus the token columns of ``encode_batch``."""
    features = raw.copy()
    features["input_ids"] = datasets.List(datasets.Value("int32"))
    features["token_type_ids"] = datasets.List(datasets.Value("int8"))
    features["attention_mask"] = datasets.List(datasets.Value("int8"))
    return features


def glue_collator(tokenizer: PreTrainedTokenizerBase) -> DataCollatorWithPadding:
    """Items of ``LOADER_COLUMNS`` -> ``input_ids``, ``token_type_ids``, ``attention_mask`` (B, T) int64
    padded to the longest, ``labels`` (B,) int64 (float32 for STS-B) and ``idx`` (B,) int64."""
    return DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")


def subsample(ds: datasets.Dataset, limit: int | None, seed: int, what: str) -> datasets.Dataset:
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
