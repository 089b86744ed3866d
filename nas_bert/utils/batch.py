"""Batch measurements for throughput callbacks and the model summary."""

from __future__ import annotations

import torch

SUMMARY_SEQ_LEN = 128  # the model summaries' example input: one sequence of this length (the search's FLOPs length)


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
