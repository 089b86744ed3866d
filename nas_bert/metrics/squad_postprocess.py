"""SQuAD post-processing: gathered start / end logits of the evaluation features -> one answer string per
question (best n-best span; for v2.0 the empty answer when the null score wins by more than a threshold).

``squad_predictions`` is the whole step, on the DataModule's evaluation examples and features:
``unique_features`` and ``complete_examples`` first reduce DDP-gathered outputs to each feature once and to
the examples whose features are all there; ``postprocess_predictions`` then picks the answers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, NamedTuple

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

__all__ = ["AnswerSettings", "SquadPredictions", "complete_examples", "postprocess_predictions", "squad_predictions",
           "unique_features"]

log = logging.getLogger(__name__)


def _to_numpy(value: Any) -> np.ndarray:
    """A tensor (floating ones as float32) or array-like as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
    return np.asarray(value)


def unique_features(
    feature_idx: Any, start_logits: Any, end_logits: Any, n_features: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique feature rows (M,) and their start / end logits (M, T), the first occurrence kept.

    ``feature_idx`` is (N,) or (world, N) (as from ``all_gather``), the logits (N, T) or (world, N, T);
    every index must be a row of the ``n_features`` evaluation features.
    """
    idx = _to_numpy(feature_idx).astype(np.int64).reshape(-1)  # (N,)
    start = _to_numpy(start_logits).reshape(len(idx), -1)  # (N, T)
    end = _to_numpy(end_logits).reshape(len(idx), -1)  # (N, T)
    if len(idx) and (idx.min() < 0 or idx.max() >= n_features):
        raise ValueError(
            f"feature_idx values must be rows of eval_features (0 .. {n_features - 1}), got "
            f"{idx.min()} .. {idx.max()}; pass the `feature_idx` of the validation batches."
        )
    unique, first = np.unique(idx, return_index=True)
    return unique, start[first], end[first]


def complete_examples(
    examples: datasets.Dataset, features: datasets.Dataset, idx: np.ndarray
) -> tuple[datasets.Dataset, datasets.Dataset, np.ndarray]:
    """The examples whose features are all in ``idx`` (sorted unique feature rows), their features, and the
    mask over ``idx`` of those features. Leaving examples out (a partial validation run) is logged."""
    if len(idx) == len(features):
        return examples, features, np.ones(len(idx), dtype=bool)
    example_ids = np.asarray(features["example_id"])  # (F,)
    present = np.zeros(len(features), dtype=bool)
    present[idx] = True
    incomplete = np.unique(example_ids[~present])
    keep_rows = np.flatnonzero(~np.isin(example_ids, incomplete))  # (F',)
    if not len(keep_rows):
        raise ValueError(
            f"None of the {len(examples)} evaluation examples has all its features among the {len(idx)} "
            f"given; pass the outputs of the whole validation set."
        )
    example_rows = np.flatnonzero(~np.isin(np.asarray(examples["id"]), incomplete))
    log.warning(
        "SQuAD predictions: %d of %d evaluation examples lack some features (partial validation run?); "
        "scoring the other %d.",
        len(incomplete),
        len(examples),
        len(example_rows),
    )
    return examples.select(example_rows), features.select(keep_rows), np.isin(idx, keep_rows)


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


class AnswerSettings(NamedTuple):
    """How answers are read from span logits (the SQuAD DataModule's `answer_settings`)."""

    version_2: bool  # v2.0: the empty answer may win
    n_best: int  # top start and end tokens combined per feature
    max_answer_length: int  # longest answer in tokens
    null_score_diff_threshold: float  # v2.0: predict "" when null score - best span score exceeds this


class SquadPredictions(NamedTuple):
    """Predictions and references of `squad_predictions`, in the examples' order."""

    preds: list[dict[str, str]]  # torchmetrics SQuAD preds: {"prediction_text", "id"}
    target: list[dict[str, Any]]  # torchmetrics SQuAD target: {"answers": {"text", "answer_start"}, "id"}
    gold_answers: dict[str, list[str]]  # official-style gold texts per id; [] = unanswerable (v2.0)
    null_odds: dict[str, float] | None  # v2.0: null score - best span score per id; None for v1.1


def squad_predictions(examples: datasets.Dataset | None, features: datasets.Dataset | None, settings: AnswerSettings,
                      feature_idx: Any, start_logits: Any, end_logits: Any) -> SquadPredictions:
    """Gathered evaluation outputs -> answers and references.

    Args:
        examples, features: the DataModule's `eval_examples` and `eval_features` (None before its setup).
        feature_idx: (N,) (or (world, N), as from ``all_gather``) rows of `features`, in any order, duplicates
            allowed.
        start_logits, end_logits: (N, T) (or (world, N, T)) logits matching ``feature_idx``.

    Examples with a feature missing from ``feature_idx`` (e.g. under ``limit_val_batches``) are left out with a
    warning.
    """
    if features is None or examples is None:
        raise RuntimeError("squad_predictions: no evaluation examples; call the SQuAD DataModule's setup() first")
    idx, start, end = unique_features(feature_idx, start_logits, end_logits, len(features))
    examples, features, keep = complete_examples(examples, features, idx)
    texts, null_odds = postprocess_predictions(examples, features, start[keep], end[keep], **settings._asdict())
    ids, answers = list(examples["id"]), list(examples["answers"])
    return SquadPredictions(
        preds=[{"prediction_text": texts[i], "id": i} for i in ids],
        target=[{"answers": {"text": list(a["text"]), "answer_start": list(a["answer_start"])}, "id": i}
                for i, a in zip(ids, answers)],
        gold_answers={i: list(a["text"]) for i, a in zip(ids, answers)},
        null_odds=null_odds,
    )
