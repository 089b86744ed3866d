"""SQuAD examples -> features as in Hugging Face ``run_qa.py``: question and context in one sequence
(context first for a left-padding tokenizer), long contexts cut into overlapping windows of
``max_seq_length`` tokens sharing ``doc_stride`` tokens.

Training features carry the answer's token span (the ``[CLS]`` index when the answer is not inside the
window or the question is unanswerable); evaluation features keep ``example_id``, ``cls_index`` and the
offset mapping (``None`` outside the context) for post-processing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import datasets
import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizerBase

__all__ = ["feature_schema", "prepare_eval_features", "prepare_train_features"]

log = logging.getLogger(__name__)


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


def feature_schema(max_seq_length: int, train: bool) -> datasets.Features:
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
