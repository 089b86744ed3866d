"""LightningModules, one per training stage."""

from nas_bert.lit.blockwise_distillation import SupernetDistillation
from nas_bert.lit.finetune import GlueFineTuning, SquadFineTuning
from nas_bert.lit.pretrain import PretrainDistillation

__all__ = ["GlueFineTuning", "PretrainDistillation", "SquadFineTuning", "SupernetDistillation"]
