"""Distillation losses shared by the supernet and the students."""

from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE averaged over hidden units, then over real (mask = 1) tokens; computed in fp32.

    pred, target: (B, T, D); mask: (B, T) with 1 for real tokens and 0 for padding.
    """
    per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, T)
    if mask is None:
        return per_token.mean()
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)
