"""`PretrainDistillation`: pre-training a student with prediction-layer KD (NAS-BERT stage 3).

loss = (1 - lambda) * MLM + lambda * T^2 * KL(teacher || student) on the MLM logits of the masked
positions. The teacher (any module returning MLM logits, or an HF output with `.logits`) is frozen
and kept outside the module tree: not DDP-wrapped, not checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from nas_bert.distill import prediction_kd_loss
from nas_bert.lit.optim import configure_optimization

Batch = dict[str, torch.Tensor]


def logits_of(output: Any) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


class PretrainDistillation(L.LightningModule):
    """Trains `student` (an MLM model) on masked batches with KD from `teacher`'s MLM logits."""

    def __init__(self, student: nn.Module, teacher: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, kd_weight: float = 0.5,
                 temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= kd_weight <= 1.0 or temperature <= 0:
            raise ValueError(f"kd_weight must be in [0, 1] and temperature > 0, got {kd_weight}, {temperature}")
        self.save_hyperparameters(ignore=["student", "teacher", "optimizer", "scheduler"], logger=False)
        self.student = student
        teacher.requires_grad_(False)
        teacher.eval()
        object.__setattr__(self, "teacher", teacher)  # outside the module tree
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.kd_weight, self.temperature = kd_weight, temperature

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        student_logits = logits_of(self.student(**inputs))  # (B, T, V)
        if next(self.teacher.parameters()).device != batch["input_ids"].device:
            self.teacher.to(batch["input_ids"].device)
        with torch.no_grad():
            teacher_logits = logits_of(self.teacher(**inputs))  # (B, T, V)
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                             f"{tuple(student_logits.shape)} differ: student and teacher need the same vocabulary")
        return prediction_kd_loss(student_logits, teacher_logits, batch["labels"], self.kd_weight, self.temperature)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        parts = self.losses(batch)
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log_dict({"train/mlm": parts["mlm"], "train/kd": parts["kd"]})
        return parts["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        parts = self.losses(batch)
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, prog_bar=False, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimization(self.student, self.trainer, self.optimizer_factory, self.scheduler_factory)
