"""LightningModules, one per training stage."""

from nas_bert.lit.pretrain import PretrainDistillation
from nas_bert.lit.supernet import SupernetDistillation

__all__ = ["PretrainDistillation", "SupernetDistillation"]
