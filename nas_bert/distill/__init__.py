"""Distillation losses."""

from nas_bert.distill.losses import (
    check_kd_mix,
    masked_cosine,
    masked_mse,
    mean_pool,
    prediction_kd_loss,
    soft_cross_entropy,
)

__all__ = ["check_kd_mix", "masked_cosine", "masked_mse", "mean_pool", "prediction_kd_loss", "soft_cross_entropy"]
