"""Distillation losses."""

from nas_bert.distill.losses import (
    masked_cosine,
    masked_mse,
    mean_pool,
    prediction_kd_loss,
    soft_cross_entropy,
)

__all__ = ["masked_cosine", "masked_mse", "mean_pool", "prediction_kd_loss", "soft_cross_entropy"]
