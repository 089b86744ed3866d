"""LightningModules, one per training stage."""

from nas_bert.lit.finetune import GlueFineTuning, SquadFineTuning
from nas_bert.lit.pretrain import PretrainDistillation
from nas_bert.lit.supernet import SupernetDistillation

__all__ = ["GlueFineTuning", "PretrainDistillation", "SquadFineTuning", "SupernetDistillation"]
