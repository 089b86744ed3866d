"""Batch measurements for throughput callbacks."""

from __future__ import annotations

import torch


def batch_size(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["input_ids"].shape[0])


def num_tokens(batch: dict[str, torch.Tensor]) -> int:
    """Real (non-padding) tokens in the batch."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
