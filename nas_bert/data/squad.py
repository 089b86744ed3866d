"""SQuAD v1.1 / v2.0 DataModule for span-extraction fine-tuning, and the post-processing of its predictions.

This module owns everything between a SQuAD source and the answer strings that the metrics score:

* loading the Hub datasets ``rajpurkar/squad`` (v1.1) / ``rajpurkar/squad_v2`` (v2.0), or the official
  JSON files (``train-v1.1.json``, ``dev-v2.0.json``, ...), parsed into flat examples (``id``, ``title``,
  ``context``, ``question``, ``answers`` = ``{"text": [...], "answer_start": [...]}``), with a check that
  a local file is of the configured version;
* ``split_validation_for_training``: with only a dev file at hand, its *articles* are split (by title,
  seeded) into a training half and an evaluation half;
* features as in Hugging Face ``run_qa.py``: question and context in one sequence (context first for a
  left-padding tokenizer), long contexts cut into overlapping windows of ``max_seq_length`` tokens that
  share ``doc_stride`` tokens; training features carry the answer's token span (the ``[CLS]`` index when
  the answer is not inside the window or the question is unanswerable); evaluation features keep
  ``example_id``, the offset mapping (``None`` outside the context) and a unique ``feature_idx``;
* :func:`postprocess_predictions`: start/end logits -> one answer string per question (n-best spans;
  for v2.0 the empty answer when the null score beats the best span by more than a threshold).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import datasets
import lightning as L
import numpy as np
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, default_collate
from transformers import BatchEncoding, PreTrainedTokenizerBase

from nas_bert.data.corpus import _describe_dir, _digest, _load_tokenizer, _offline
from nas_bert.data.loading import make_loader

__all__ = [
    "SquadDataModule",
    "SquadPredictions",
    "load_squad_json",
    "normalize_version",
    "postprocess_predictions",
    "prepare_eval_features",
    "prepare_train_features",
    "seeded_subset",
    "split_by_article",
]

log = logging.getLogger(__name__)

# Bump when loading / featurising changes: it is part of the explicit cache fingerprints.
_PIPELINE_VERSION = "squad-v1"
_HUB_DATASETS = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}
_MIN_SEQ_LEN = 16
_TRAIN_COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"]
_EVAL_COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "feature_idx"]

EXAMPLE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)


# --------------------------------------------------------------------------- versions and local files


def normalize_version(version: str | float) -> str:
    """``"1.1"``, ``1.1``, ``"v1.1"`` -> ``"1.1"``; ``"2.0"``, ``2``, ``"v2.0"`` -> ``"2.0"``."""
    text = str(version).strip().lower().removeprefix("v")
    text = {"2": "2.0"}.get(text, text)
    if text not in _HUB_DATASETS:
        raise ValueError(f"version={version!r} is not a SQuAD version; use '1.1' or '2.0'.")
    return text


def _read_json(path: str) -> dict[str, Any]:
    """Read an official SQuAD JSON file (``{"version": ..., "data": [articles]}``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"SQuAD file {os.path.abspath(path)!r} does not exist; {_describe_dir(os.path.dirname(path))}. "
            f"Fix the path (relative paths are resolved against the current working directory "
            f"{os.getcwd()!r}), or set it to null to use the Hub dataset."
        )
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"SQuAD file {path!r} is not valid UTF-8 JSON ({type(e).__name__}: {e}).") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"SQuAD file {path!r} is not in the official SQuAD format: expected an object with a 'data' list "
            f"of articles, found {keys}."
        )
    return payload


def _questions(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [qa for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def _check_version(path: str, payload: dict[str, Any], version: str) -> None:
    """Raise if the file's declared version or its ``is_impossible`` flags contradict ``version``."""
    declared = payload.get("version")
    qas = _questions(payload["data"])
    flagged = sum("is_impossible" in qa for qa in qas)
    impossible = sum(bool(qa.get("is_impossible")) for qa in qas)
    try:
        declared_norm = normalize_version(declared) if declared is not None else None
    except ValueError:
        declared_norm = str(declared)
    if declared_norm is not None and declared_norm != version:
        problem = f"it declares a different version than the configured {version}"
    elif version == "1.1" and impossible:
        problem = "SQuAD v1.1 has no unanswerable questions"
    elif version == "2.0" and not flagged:
        problem = "a SQuAD v2.0 file flags every question with `is_impossible`"
    else:
        return
    found = f'"version": {declared!r}' if declared is not None else 'no "version" field'
    found += f", {impossible} of {len(qas)} questions unanswerable, {flagged} with an `is_impossible` flag"
    other = "2.0" if version == "1.1" else "1.1"
    raise ValueError(
        f"{path!r} is a SQuAD file of the wrong version: version={version} is configured but the file has "
        f"{found} ({problem}). Fix: point the file option to a SQuAD v{version} file, or set "
        f"version: '{other}' (data/squad={'v2' if other == '2.0' else 'v1'}) to read it as SQuAD {other}."
    )


def _flatten(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Articles -> one row per question; unanswerable v2.0 questions get empty answers."""
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows.append(
                    {
                        "id": qa["id"],
                        "title": article.get("title", ""),
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    }
                )
    return rows


def load_squad_json(path: str | os.PathLike, version: str) -> list[dict[str, Any]]:
    """Parse an official SQuAD JSON file of ``version`` ("1.1" / "2.0") into flat example dicts.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file of the other version.
    """
    path = os.path.expanduser(os.fspath(path))
    payload = _read_json(path)
    _check_version(path, payload, normalize_version(version))
    return _flatten(payload["data"])


# --------------------------------------------------------------------------- splits and subsets


def split_by_article(titles: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, eval) of a split of the *articles* (distinct titles) into two halves.

    The titles are sorted, shuffled with ``seed`` and the first ``ceil(n / 2)`` go to training, so the
    result depends only on the set of titles and the seed. Both index arrays are sorted.
    """
    titles = list(titles)
    unique = sorted(set(titles))
    if len(unique) < 2:
        raise ValueError(
            f"split_validation_for_training needs at least 2 articles (distinct titles), found {len(unique)}; "
            f"use a larger file or give a separate train file."
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    train_titles = {unique[i] for i in order[: (len(unique) + 1) // 2]}
    is_train = np.fromiter((t in train_titles for t in titles), dtype=bool, count=len(titles))  # (N,)
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def seeded_subset(n_rows: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of ``limit`` rows; ``None`` when all rows are kept."""
    if limit is None or limit >= n_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False))


# --------------------------------------------------------------------------- features


def _fit_questions(
    questions: list[str], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> list[str]:
    """Left-strip the questions and cut the (rare) ones so long that a window would keep no more than
    ``doc_stride`` context tokens (the Rust tokenizer panics on such a pair)."""
    questions = [q.lstrip() for q in questions]  # leading spaces would only eat into the window
    limit = max_seq_length - tokenizer.num_special_tokens_to_add(pair=True) - doc_stride - 1
    enc = tokenizer(
        questions,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # no "longer than model_max_length" warning: only the lengths are needed
    )
    cut = [i for i, offsets in enumerate(enc["offset_mapping"]) if len(offsets) > limit]
    for i in cut:
        questions[i] = questions[i][: enc["offset_mapping"][i][limit - 1][1]]
    if cut:
        log.warning(
            "%d question(s) longer than %d tokens were cut to fit max_seq_length=%d with doc_stride=%d.",
            len(cut),
            limit,
            max_seq_length,
            doc_stride,
        )
    return questions


def _encode(
    batch: Mapping[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int, doc_stride: int
) -> tuple[BatchEncoding, int]:
    """Tokenize question/context pairs into overlapping windows; returns the encoding and the context's
    sequence id (1 when the question comes first, 0 for a left-padding tokenizer, context first)."""
    questions = _fit_questions(batch["question"], tokenizer, max_seq_length, doc_stride)
    pad_on_right = tokenizer.padding_side == "right"
    first, second = (questions, batch["context"]) if pad_on_right else (batch["context"], questions)
    enc = tokenizer(
        first,
        second,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_seq_length,
        stride=doc_stride,
        padding="max_length",
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    return enc, 1 if pad_on_right else 0


def _answer_token_span(
    offsets: list[tuple[int, int]], sequence_ids: list[int | None], context_id: int, start_char: int, end_char: int
) -> tuple[int, int] | None:
    """Token indices (start, end) of the characters ``[start_char, end_char)`` when the window's context
    contains them entirely, else ``None``."""
    context = [k for k, s in enumerate(sequence_ids) if s == context_id]
    if not context:
        return None
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return None
    token_starts = np.array([offsets[k][0] for k in range(first, last + 1)])  # (n_context,), non-decreasing
    token_ends = np.array([offsets[k][1] for k in range(first, last + 1)])  # (n_context,)
    start = first + int(np.searchsorted(token_starts, start_char, side="right")) - 1  # last token starting <=
    end = first + int(np.searchsorted(token_ends, end_char, side="left"))  # first token ending >=
    return start, end


def prepare_train_features(
    batch: Mapping[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int = 384, doc_stride: int = 128
) -> dict[str, list]:
    """Batched map: examples -> training windows with ``start_positions`` / ``end_positions``.

    The target is the first reference answer; it is the ``[CLS]`` token when the answer is not entirely
    inside the window, or when the question has no answer (SQuAD v2.0).
    """
    enc, context_id = _encode(batch, tokenizer, max_seq_length, doc_stride)
    starts, ends = [], []
    for i, example in enumerate(enc["overflow_to_sample_mapping"]):
        cls_index = enc["input_ids"][i].index(tokenizer.cls_token_id)
        answers = batch["answers"][example]
        span = None
        if answers["answer_start"]:
            start_char = answers["answer_start"][0]
            end_char = start_char + len(answers["text"][0])
            span = _answer_token_span(enc["offset_mapping"][i], enc.sequence_ids(i), context_id, start_char, end_char)
        start, end = span if span is not None else (cls_index, cls_index)
        starts.append(start)
        ends.append(end)
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "token_type_ids": enc["token_type_ids"],
        "start_positions": starts,
        "end_positions": ends,
    }


def prepare_eval_features(
    batch: Mapping[str, list], tokenizer: PreTrainedTokenizerBase, max_seq_length: int = 384, doc_stride: int = 128
) -> dict[str, list]:
    """Batched map: examples -> evaluation windows with ``example_id``, ``cls_index`` and
    ``offset_mapping`` (character span per token, ``None`` for tokens outside the context)."""
    enc, context_id = _encode(batch, tokenizer, max_seq_length, doc_stride)
    offsets = [
        [o if s == context_id else None for o, s in zip(enc["offset_mapping"][i], enc.sequence_ids(i))]
        for i in range(len(enc["input_ids"]))
    ]
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "token_type_ids": enc["token_type_ids"],
        "offset_mapping": offsets,
        "example_id": [batch["id"][j] for j in enc["overflow_to_sample_mapping"]],
        "cls_index": [ids.index(tokenizer.cls_token_id) for ids in enc["input_ids"]],
    }


def _feature_schema(max_seq_length: int, train: bool) -> datasets.Features:
    """Arrow schema of the features (fixed-length token columns)."""
    tokens = {
        "input_ids": datasets.List(datasets.Value("int32"), length=max_seq_length),
        "attention_mask": datasets.List(datasets.Value("int8"), length=max_seq_length),
        "token_type_ids": datasets.List(datasets.Value("int8"), length=max_seq_length),
    }
    if train:
        extra = {"start_positions": datasets.Value("int32"), "end_positions": datasets.Value("int32")}
    else:
        extra = {
            "offset_mapping": datasets.List(datasets.List(datasets.Value("int32"))),
            "example_id": datasets.Value("string"),
            "cls_index": datasets.Value("int32"),
        }
    return datasets.Features({**tokens, **extra})


# --------------------------------------------------------------------------- post-processing


def _column(table: Any, name: str) -> list:
    """Column ``name`` of a ``datasets.Dataset`` or a dict of columns, as a list."""
    return list(table[name])


def _has_column(table: Any, name: str) -> bool:
    return name in (table.column_names if isinstance(table, datasets.Dataset) else table)


def _context_offsets(features: Any) -> np.ndarray:
    """``offset_mapping`` as an int64 array (F, T, 2), -1 for tokens outside the context."""
    if isinstance(features, datasets.Dataset):
        column = features.with_format("arrow")[:]["offset_mapping"]  # list<list<int>> with null inner lists
        tokens = pc.list_flatten(column)  # (F * T) x list<int> | null
        starts = pc.fill_null(pc.list_element(tokens, 0), -1).to_numpy()
        ends = pc.fill_null(pc.list_element(tokens, 1), -1).to_numpy()
        return np.stack([starts, ends], axis=-1).astype(np.int64).reshape(len(features), -1, 2)
    rows = _column(features, "offset_mapping")
    return np.array([[o if o is not None else (-1, -1) for o in row] for row in rows], dtype=np.int64).reshape(
        len(rows), -1, 2
    )


def _best_spans(
    start: np.ndarray, end: np.ndarray, in_context: np.ndarray, n_best: int, max_answer_length: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best valid span per feature among the top-``n_best`` start and end tokens.

    A span is valid when both ends are context tokens, end >= start and it has at most
    ``max_answer_length`` tokens. Returns (score, start token, end token), each (F,); the score is
    start + end logit, ``-inf`` when no candidate is valid.
    """
    n_features, seq_len = start.shape
    k = min(n_best, seq_len)
    top_s = np.argsort(-start, axis=1, kind="stable")[:, :k]  # (F, k)
    top_e = np.argsort(-end, axis=1, kind="stable")[:, :k]  # (F, k)
    s, e = top_s[:, :, None], top_e[:, None, :]  # (F, k, 1), (F, 1, k)
    length = e - s + 1  # (F, k, k)
    valid = (
        np.take_along_axis(in_context, top_s, axis=1)[:, :, None]
        & np.take_along_axis(in_context, top_e, axis=1)[:, None, :]
        & (length >= 1)
        & (length <= max_answer_length)
    )  # (F, k, k)
    score = np.take_along_axis(start, top_s, axis=1)[:, :, None] + np.take_along_axis(end, top_e, axis=1)[:, None, :]
    score = np.where(valid, score, -np.inf).reshape(n_features, k * k)  # (F, k*k)
    flat = score.argmax(axis=1)  # (F,)
    rows = np.arange(n_features)
    return score[rows, flat], top_s[rows, flat // k], top_e[rows, flat % k]


def _rows_by_example(example_ids: list[str]) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = defaultdict(list)
    for row, example_id in enumerate(example_ids):
        rows[example_id].append(row)
    return rows


def postprocess_predictions(
    examples: Any,
    features: Any,
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    version_2: bool,
    n_best: int = 20,
    max_answer_length: int = 30,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float] | None]:
    """Start/end logits of the evaluation features -> one answer string per example.

    Args:
        examples: ``datasets.Dataset`` or dict of columns with ``id`` and ``context``.
        features: ``datasets.Dataset`` or dict of columns with ``example_id``, ``offset_mapping`` (``None``
            outside the context) and optionally ``cls_index`` (default 0), row ``f`` matching logits row ``f``.
        start_logits, end_logits: (num_features, T) arrays.
        version_2: SQuAD v2.0: predict ``""`` when the null score (start + end logit at ``[CLS]``, minimum
            over the example's features) exceeds the best span score by more than
            ``null_score_diff_threshold``.
        n_best: number of top start and top end tokens combined per feature.
        max_answer_length: longest answer in tokens.

    Returns:
        ``predictions`` (id -> answer text; ``""`` when no valid span exists) and, for v2.0, ``null_odds``
        (id -> null score - best span score, ``inf`` without a valid span; ``None`` for v1.1).
    """
    start = np.asarray(start_logits, dtype=np.float64)  # (F, T)
    end = np.asarray(end_logits, dtype=np.float64)  # (F, T)
    offsets = _context_offsets(features)  # (F, T, 2)
    if start.shape != end.shape or start.shape != offsets.shape[:2]:
        raise ValueError(
            f"start_logits {start.shape} and end_logits {end.shape} must both be (num_features, seq_len) = "
            f"{offsets.shape[:2]}, in the order of the features."
        )
    score, span_start, span_end = _best_spans(start, end, offsets[..., 0] >= 0, n_best, max_answer_length)
    cls = np.asarray(_column(features, "cls_index"), dtype=np.int64) if _has_column(features, "cls_index") else 0
    rows_all = np.arange(len(start))
    null = start[rows_all, cls] + end[rows_all, cls]  # (F,)
    rows_by_example = _rows_by_example(_column(features, "example_id"))

    predictions: dict[str, str] = {}
    null_odds: dict[str, float] = {}
    for example_id, context in zip(_column(examples, "id"), _column(examples, "context")):
        rows = rows_by_example.get(example_id)
        if not rows:
            raise ValueError(f"example {example_id!r} has no features; pass the features of all examples.")
        best = rows[int(np.argmax(score[rows]))]
        text = ""
        if np.isfinite(score[best]):
            text = context[offsets[best, span_start[best], 0] : offsets[best, span_end[best], 1]]
        if version_2:
            diff = float(null[rows].min() - score[best])
            null_odds[example_id] = diff
            if diff > null_score_diff_threshold:
                text = ""
        predictions[example_id] = text
    return predictions, (null_odds if version_2 else None)


class SquadPredictions(NamedTuple):
    """Predictions and references of :meth:`SquadDataModule.predictions`, in the examples' order."""

    preds: list[dict[str, str]]  # torchmetrics SQuAD preds: {"prediction_text", "id"}
    target: list[dict[str, Any]]  # torchmetrics SQuAD target: {"answers": {"text", "answer_start"}, "id"}
    gold_answers: dict[str, list[str]]  # official-style gold texts per id; [] = unanswerable (v2.0)
    null_odds: dict[str, float] | None  # v2.0: null score - best span score per id; None for v1.1


# --------------------------------------------------------------------------- DataModule


class _Examples(NamedTuple):
    """Flat examples plus the explicit fingerprint that names their derived caches."""

    dataset: datasets.Dataset
    fingerprint: str
    origin: str  # for log messages


def _tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    backend = tokenizer.backend_tokenizer.to_str()
    return _digest(
        type(tokenizer).__name__, hashlib.sha256(backend.encode("utf-8")).hexdigest(), tokenizer.padding_side
    )


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_file(path: str | None, arg_name: str) -> str | None:
    """Absolute path of an existing file (``None`` stays ``None``)."""
    if not path:
        return None
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{arg_name}: SQuAD file {os.path.abspath(path)!r} does not exist; "
            f"{_describe_dir(os.path.dirname(path))}. Fix the path (relative paths are resolved against the "
            f"current working directory {os.getcwd()!r}), or set {arg_name} to null to use the Hub dataset."
        )
    return os.path.abspath(path)


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


class SquadDataModule(L.LightningDataModule):
    """SQuAD v1.1 / v2.0 features for span-extraction fine-tuning and their evaluation.

    Sources: ``train_file`` / ``validation_file`` (official JSON) or, where ``None``, the Hub dataset of
    ``version``. With ``split_validation_for_training`` the validation source is split by article into
    training and evaluation halves (``train_file`` must be ``None``). ``max_train_samples`` /
    ``max_eval_samples`` keep a seeded subset of the *examples* (questions) before featurising.

    Training batches: ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T) and ``start_positions``,
    ``end_positions`` (B,). Validation batches: the three token tensors and ``feature_idx`` (B,), the row of
    the feature in :attr:`eval_features`; gather ``feature_idx`` with the logits and pass them to
    :meth:`predictions` (duplicates, e.g. from a padded ``DistributedSampler``, are dropped). All int64.

    Args:
        tokenizer: local tokenizer directory or Hub id (fast tokenizer; a left-padding one puts the context first).
        version: "1.1" or "2.0" (SQuAD 2.0 has unanswerable questions).
        train_file: official training JSON (None: the Hub ``train`` split).
        validation_file: official dev JSON (None: the Hub ``validation`` split).
        max_seq_length: tokens per feature (question + context window + special tokens).
        doc_stride: tokens shared by consecutive windows of a long context.
        batch_size: training batch size (per device).
        eval_batch_size: validation batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        cache_dir: cache for the Hub download and the features (default: the ``datasets`` cache).
        max_train_samples: keep a seeded random subset of this many training examples.
        max_eval_samples: keep a seeded random subset of this many evaluation examples.
        seed: seed of the article split and of the subsets.
        split_validation_for_training: split the validation articles into train / eval halves.
        n_best: top start and end tokens combined per feature in post-processing.
        max_answer_length: longest predicted answer in tokens.
        null_score_diff_threshold: v2.0: predict "" when null score - best span score exceeds this.
    """

    def __init__(
        self,
        tokenizer: str,
        version: str = "1.1",
        train_file: str | None = None,
        validation_file: str | None = None,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        seed: int = 0,
        split_validation_for_training: bool = False,
        n_best: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.version = normalize_version(version)
        if split_validation_for_training and train_file:
            raise ValueError(
                f"split_validation_for_training=true takes the training articles from the validation source, "
                f"but train_file={train_file!r} is set too; set train_file to null or "
                f"split_validation_for_training to false."
            )
        for arg, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("max_train_samples", max_train_samples),
            ("max_eval_samples", max_eval_samples),
            ("n_best", n_best),
            ("max_answer_length", max_answer_length),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{arg} must be >= 1, got {value}.")
        self._tokenizer = _load_tokenizer(tokenizer)
        max_len = self._tokenizer.model_max_length
        if not _MIN_SEQ_LEN <= max_seq_length <= max_len:
            raise ValueError(
                f"max_seq_length={max_seq_length} is out of range: it must be between {_MIN_SEQ_LEN} and the "
                f"tokenizer's model_max_length={max_len}. Set max_seq_length to e.g. 384."
            )
        if not 0 <= doc_stride < max_seq_length // 2:
            raise ValueError(
                f"doc_stride={doc_stride} must be >= 0 and below max_seq_length / 2 = {max_seq_length // 2} "
                f"(windows share doc_stride tokens and also hold the question); e.g. 128 for max_seq_length 384."
            )
        self.train_file = _check_file(train_file, "train_file")
        self.validation_file = _check_file(validation_file, "validation_file")
        self.max_seq_length, self.doc_stride = int(max_seq_length), int(doc_stride)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.cache_dir = os.path.expanduser(cache_dir) if cache_dir else None
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.seed = int(seed)
        self.split_validation_for_training = bool(split_validation_for_training)
        self.n_best, self.max_answer_length = int(n_best), int(max_answer_length)
        self.null_score_diff_threshold = float(null_score_diff_threshold)
        self._tokenizer_fp = _tokenizer_fingerprint(self._tokenizer)  # before any call changes its state
        self._train_dataset: datasets.Dataset | None = None
        self._eval_examples: datasets.Dataset | None = None
        self._eval_features: datasets.Dataset | None = None
        self._split_logged = False

    # ------------------------------------------------------------------ public read-only state
    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @property
    def version_2(self) -> bool:
        """Whether this is SQuAD 2.0 (unanswerable questions, null-score post-processing)."""
        return self.version == "2.0"

    @property
    def train_dataset(self) -> datasets.Dataset | None:
        """Training features (start/end positions, no offsets); ``None`` before ``setup("fit")``."""
        return self._train_dataset

    @property
    def eval_examples(self) -> datasets.Dataset | None:
        """Evaluation examples (``id``, ``title``, ``context``, ``question``, ``answers``)."""
        return self._eval_examples

    @property
    def eval_features(self) -> datasets.Dataset | None:
        """Evaluation features, all columns (``offset_mapping``, ``example_id``, ``feature_idx`` = row, ...)."""
        return self._eval_features

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Load and featurise both splits once (one process), filling the cache."""
        self._build(with_train=True)

    def setup(self, stage: str | None = None) -> None:
        """Build on every process (cache hits); the training features only for ``fit``."""
        with_train = stage in (None, "fit")
        if self._eval_features is None or (with_train and self._train_dataset is None):
            self._train_dataset, self._eval_examples, self._eval_features = self._build(with_train)

    def train_dataloader(self) -> DataLoader:
        if self._train_dataset is None:
            raise RuntimeError("SquadDataModule.train_dataloader() called before setup('fit'); call it first.")
        return self._loader(self._train_dataset.with_format("torch", columns=_TRAIN_COLUMNS), self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        if self._eval_features is None:
            raise RuntimeError("SquadDataModule.val_dataloader() called before setup(); call setup() first.")
        dataset = self._eval_features.with_format("torch", columns=_EVAL_COLUMNS)
        return self._loader(dataset, self.eval_batch_size, False)

    def _loader(self, dataset: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # items: dict of (T,) / () int64 tensors -> batches of (B, T) / (B,)
        return make_loader(dataset, batch_size, shuffle, default_collate, self.num_workers, self.trainer)

    # ------------------------------------------------------------------ evaluation
    def predictions(self, feature_idx: Any, start_logits: Any, end_logits: Any) -> SquadPredictions:
        """Gathered validation outputs -> answers and references (see :class:`SquadPredictions`).

        Args:
            feature_idx: (N,) (or (world, N), as from ``all_gather``) rows of :attr:`eval_features`, in any
                order, duplicates allowed.
            start_logits, end_logits: (N, T) (or (world, N, T)) logits matching ``feature_idx``.

        Examples with a feature missing from ``feature_idx`` (e.g. under ``limit_val_batches``) are left out
        with a warning.
        """
        if self._eval_features is None or self._eval_examples is None:
            raise RuntimeError("SquadDataModule.predictions() called before setup(); call setup() first.")
        idx, start, end = self._unique_features(feature_idx, start_logits, end_logits)
        examples, features, keep = self._complete_examples(idx)
        texts, null_odds = postprocess_predictions(
            examples,
            features,
            start[keep],
            end[keep],
            version_2=self.version_2,
            n_best=self.n_best,
            max_answer_length=self.max_answer_length,
            null_score_diff_threshold=self.null_score_diff_threshold,
        )
        ids, answers = _column(examples, "id"), _column(examples, "answers")
        return SquadPredictions(
            preds=[{"prediction_text": texts[i], "id": i} for i in ids],
            target=[
                {"answers": {"text": list(a["text"]), "answer_start": list(a["answer_start"])}, "id": i}
                for i, a in zip(ids, answers)
            ],
            gold_answers={i: list(a["text"]) for i, a in zip(ids, answers)},
            null_odds=null_odds,
        )

    def _unique_features(
        self, feature_idx: Any, start_logits: Any, end_logits: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted unique feature rows (M,) and their start / end logits (M, T)."""
        idx = _to_numpy(feature_idx).astype(np.int64).reshape(-1)  # (N,)
        start = _to_numpy(start_logits).reshape(len(idx), -1)  # (N, T)
        end = _to_numpy(end_logits).reshape(len(idx), -1)  # (N, T)
        n_features = len(self._eval_features)
        if len(idx) and (idx.min() < 0 or idx.max() >= n_features):
            raise ValueError(
                f"feature_idx values must be rows of eval_features (0 .. {n_features - 1}), got "
                f"{idx.min()} .. {idx.max()}; pass the `feature_idx` of the validation batches."
            )
        unique, first = np.unique(idx, return_index=True)
        return unique, start[first], end[first]

    def _complete_examples(self, idx: np.ndarray) -> tuple[datasets.Dataset, datasets.Dataset, np.ndarray]:
        """The examples whose features are all in ``idx`` (sorted unique rows), their features, and the mask
        over ``idx`` of those features."""
        features, examples = self._eval_features, self._eval_examples
        if len(idx) == len(features):
            return examples, features, np.ones(len(idx), dtype=bool)
        example_ids = np.asarray(_column(features, "example_id"))  # (F,)
        present = np.zeros(len(features), dtype=bool)
        present[idx] = True
        incomplete = np.unique(example_ids[~present])
        keep_rows = np.flatnonzero(~np.isin(example_ids, incomplete))  # (F',)
        if not len(keep_rows):
            raise ValueError(
                f"None of the {len(examples)} evaluation examples has all its features among the {len(idx)} "
                f"given; pass the outputs of the whole validation set."
            )
        example_rows = np.flatnonzero(~np.isin(np.asarray(_column(examples, "id")), incomplete))
        log.warning(
            "SQuAD predictions: %d of %d evaluation examples lack some features (partial validation run?); "
            "scoring the other %d.",
            len(incomplete),
            len(examples),
            len(example_rows),
        )
        return examples.select(example_rows), features.select(keep_rows), np.isin(idx, keep_rows)

    # ------------------------------------------------------------------ pipeline
    def _build(
        self, with_train: bool
    ) -> tuple[datasets.Dataset | None, datasets.Dataset, datasets.Dataset]:
        """(training features | None, evaluation examples, evaluation features)."""
        train, evaluation = self._examples(with_train)
        train_features = self._featurize(train, train=True) if train is not None else None
        eval_features = self._featurize(evaluation, train=False)
        eval_features = eval_features.add_column(
            "feature_idx",
            np.arange(len(eval_features), dtype=np.int64),
            new_fingerprint=_digest(eval_features._fingerprint, "feature_idx"),
        )
        log.info(
            "SQuAD v%s: %s train examples -> %s features; %d eval examples -> %d features "
            "(max_seq_length=%d, doc_stride=%d)",
            self.version,
            "no" if train is None else len(train.dataset),
            "no" if train_features is None else len(train_features),
            len(evaluation.dataset),
            len(eval_features),
            self.max_seq_length,
            self.doc_stride,
        )
        return train_features, evaluation.dataset, eval_features

    def _examples(self, with_train: bool) -> tuple[_Examples | None, _Examples]:
        """(training examples | None, evaluation examples), split and subset."""
        evaluation = self._load("validation")
        train = None
        if self.split_validation_for_training:
            train, evaluation = self._split_articles(evaluation)
        elif with_train:
            train = self._load("train")
        train = self._subset(train, self.max_train_samples, "train") if with_train and train is not None else None
        return train, self._subset(evaluation, self.max_eval_samples, "eval")

    def _load(self, split: str) -> _Examples:
        path = self.train_file if split == "train" else self.validation_file
        return self._load_local(path) if path else self._load_hub(split)

    def _load_local(self, path: str) -> _Examples:
        rows = load_squad_json(path, self.version)
        fingerprint = _digest(_PIPELINE_VERSION, "json", self.version, _file_sha256(path))
        dataset = datasets.Dataset.from_list(rows, features=EXAMPLE_FEATURES)
        return _Examples(dataset, fingerprint, path)

    def _load_hub(self, split: str) -> _Examples:
        name = _HUB_DATASETS[self.version]
        arg = "train_file" if split == "train" else "validation_file"
        try:
            dataset = datasets.load_dataset(name, split=split, cache_dir=self.cache_dir)
        except Exception as e:
            hint = (
                f"Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the dataset is not in the cache "
                f"({self.cache_dir or 'default datasets cache'}): unset HF_HUB_OFFLINE to download it once, or "
                f"set {arg} to a local SQuAD JSON file"
                if _offline()
                else f"Check your network, or set {arg} to a local SQuAD JSON file"
            )
            raise ConnectionError(
                f"Could not load the {split!r} split of Hub dataset {name!r}: {type(e).__name__}: {e}. {hint} "
                f"(with only a dev file: split_validation_for_training=true, e.g. data/squad=local_dev_split)."
            ) from e
        dataset = dataset.select_columns(list(EXAMPLE_FEATURES))
        if dataset.features != EXAMPLE_FEATURES:
            dataset = dataset.cast(EXAMPLE_FEATURES)
        return _Examples(dataset, _digest(_PIPELINE_VERSION, "hub", dataset._fingerprint), f"{name}[{split}]")

    def _split_articles(self, source: _Examples) -> tuple[_Examples, _Examples]:
        """Split the validation source by article into training and evaluation halves (logged)."""
        titles = _column(source.dataset, "title")
        train_rows, eval_rows = split_by_article(titles, self.seed)
        halves = []
        for name, rows in (("train", train_rows), ("eval", eval_rows)):
            fingerprint = _digest(source.fingerprint, "articles", name, self.seed)
            dataset = source.dataset.select(rows, new_fingerprint=fingerprint)
            halves.append(_Examples(dataset, fingerprint, f"{source.origin} ({name} articles)"))
        if not self._split_logged:  # once per process, not again on the setup() after prepare_data()
            self._log_split(source, halves[0], halves[1])
        return halves[0], halves[1]

    def _log_split(self, source: _Examples, train: _Examples, evaluation: _Examples) -> None:
        self._split_logged = True
        n_train = len(set(_column(train.dataset, "title")))
        n_eval = len(set(_column(evaluation.dataset, "title")))
        log.warning(
            "split_validation_for_training: no training file; the %d articles of %s are split by title "
            "(seed %d) into %d training articles (%d questions) and %d evaluation articles (%d questions). "
            "Scores are on part of the dev set and not comparable to published dev results.",
            n_train + n_eval,
            source.origin,
            self.seed,
            n_train,
            len(train.dataset),
            n_eval,
            len(evaluation.dataset),
        )

    def _subset(self, source: _Examples, limit: int | None, name: str) -> _Examples:
        rows = seeded_subset(len(source.dataset), limit, self.seed)
        if rows is None:
            return source
        fingerprint = _digest(source.fingerprint, "subset", name, limit, self.seed)
        dataset = source.dataset.select(rows, new_fingerprint=fingerprint)
        return _Examples(dataset, fingerprint, f"{source.origin} ({limit} of {len(source.dataset)} examples)")

    def _featurize(self, source: _Examples, train: bool) -> datasets.Dataset:
        """Examples -> features with ``datasets.map``, cached under ``cache_dir`` by explicit fingerprint."""
        kind = "train" if train else "eval"
        fingerprint = _digest(
            source.fingerprint, _PIPELINE_VERSION, kind, self._tokenizer_fp, self.max_seq_length, self.doc_stride
        )
        cache_root = self.cache_dir or datasets.config.HF_DATASETS_CACHE
        cache_file = os.path.join(os.fspath(cache_root), "squad_features", f"{kind}-{fingerprint}.arrow")
        return source.dataset.map(
            prepare_train_features if train else prepare_eval_features,
            batched=True,
            remove_columns=source.dataset.column_names,
            fn_kwargs={
                "tokenizer": self._tokenizer,
                "max_seq_length": self.max_seq_length,
                "doc_stride": self.doc_stride,
            },
            features=_feature_schema(self.max_seq_length, train),
            new_fingerprint=fingerprint,  # explicit: hashing the tokenizer object is slow and not always stable
            cache_file_name=cache_file,
            desc=f"SQuAD {kind} features ({source.origin})",
        )
