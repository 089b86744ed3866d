"""Batches: the encoder inputs of a batch, and its measurements for throughput callbacks and the model summary."""

from __future__ import annotations

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what an encoder takes of a batch
SUMMARY_SEQ_LEN = 128  # the model summaries' example input: one sequence of this length (the search's FLOPs length)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch's encoder inputs (`MODEL_INPUTS` it has), without labels, indices or masks of other kinds."""
    return {k: batch[k] for k in MODEL_INPUTS if k in batch}


def batch_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def num_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in the batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def first_batches(dataset, batch_size: int, count: int, offset: int = 0) -> list[dict[str, torch.Tensor]]:
    """`count` batches of consecutive examples from `offset`: the same on every rank and every call."""
    from torch.utils.data import default_collate

    end = min(len(dataset), offset + batch_size * count)
    return [default_collate([dataset[i] for i in range(start, min(start + batch_size, end))])
            for start in range(offset, end, batch_size)]
