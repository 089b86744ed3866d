"""Distillation losses."""

from nas_bert.distill.losses import masked_mse, prediction_kd_loss, soft_cross_entropy

__all__ = ["masked_mse", "prediction_kd_loss", "soft_cross_entropy"]
