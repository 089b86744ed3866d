"""Distillation losses."""

from nas_bert.distill.losses import masked_mse

__all__ = ["masked_mse"]
