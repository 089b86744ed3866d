"""`PretrainDistillation`: pre-training a student with prediction-layer KD (NAS-BERT stage 3).

loss = (1 - lambda) * MLM + lambda * T^2 * KL(teacher || student) on the MLM logits of the masked
positions, plus the optional intermediate terms of `nas_bert.distill.intermediate` (TinyBERT hidden
states and attention scores, MiniLM attention and value relations), each switched on by a weight.
The teacher is a `FrozenTeacher` of a masked-LM model (its own MLM head or a fitted one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from nas_bert.distill import prediction_kd_loss
from nas_bert.distill.intermediate import IntermediateDistillation, Recorder
from nas_bert.distill.masking import TokenMasker
from nas_bert.lit.optim import configure_optimization
from nas_bert.teacher import FrozenTeacher

Batch = dict[str, torch.Tensor]


MLM_HEADS = ("lm_head", "cls", "head")  # NAS-BERT / RoBERTa, BERT, a fitted TeacherMLMHead


def masked_logits(model: nn.Module, inputs: Batch, masked: torch.Tensor,
                  output_hidden_states: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """MLM logits at the masked positions only, (M, V), and the hidden states if asked.

    The vocabulary projection dominates the cost of both models and MLM/KD need it only where
    tokens are masked (~15%), so the encoder runs alone and its head only on those positions.
    Models without a known base/head split fall back to the full logits.
    """
    base = getattr(model, "base_model", None)
    head = next((getattr(model, name) for name in MLM_HEADS if isinstance(getattr(model, name, None), nn.Module)),
                None)
    if base is None or base is model or head is None:
        out = model(**inputs, output_hidden_states=output_hidden_states)
        return out.logits[masked], getattr(out, "hidden_states", None)  # (M, V)
    out = base(**inputs, output_hidden_states=output_hidden_states)
    return head(out.last_hidden_state[masked]), out.hidden_states  # (M, H) -> (M, V)


class PretrainDistillation(L.LightningModule):
    """Trains `student` (an MLM model) on masked batches with KD from `teacher`'s MLM logits."""

    def __init__(self, student: nn.Module, teacher: FrozenTeacher, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, kd_weight: float = 0.5,
                 temperature: float = 1.0, intermediate: dict[str, Any] | None = None,
                 masker: TokenMasker | None = None) -> None:
        """`intermediate`: keyword arguments of `IntermediateDistillation` (hidden_weight, attention_weight,
        minilm_weight, relation_heads); None or all weights 0 = prediction-layer KD only, as in the paper.
        `masker`: masks batches without `labels` in the step, seeded by the step (see `TokenMasker`);
        batches that come with `labels` are used as they are."""
        super().__init__()
        if not 0.0 <= kd_weight <= 1.0 or temperature <= 0:
            raise ValueError(f"kd_weight must be in [0, 1] and temperature > 0, got {kd_weight}, {temperature}")
        self.save_hyperparameters(ignore=["student", "teacher", "optimizer", "scheduler", "masker"], logger=False)
        self.masker = masker
        self.student, self.teacher = student, teacher
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.kd_weight, self.temperature = kd_weight, temperature
        config = teacher.config
        terms = IntermediateDistillation(
            student.config.to_arch(), config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            **dict(intermediate or {}))
        self.intermediate = terms if terms.active else None
        self.student_recorder = Recorder(terms.student_modules(student))

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
        deep = self.intermediate is not None
        masked = batch["labels"] != -100  # (B, T)
        with self.student_recorder.recording() as student_qkv:
            student_logits, student_states = masked_logits(self.student, inputs, masked, deep)  # (M, V)
        with torch.no_grad():  # the teacher's states (L + 1) only when a term needs them
            teacher_logits, teacher_states = masked_logits(self.teacher.to(batch["input_ids"].device).model, inputs,
                                                           masked, deep)  # (M, V)
        if teacher_logits.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits.shape)} and student logits "
                             f"{tuple(student_logits.shape)} differ: student and teacher need the same vocabulary")
        parts = prediction_kd_loss(student_logits, teacher_logits, batch["labels"][masked], self.kd_weight,
                                   self.temperature)
        if deep:
            mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
            extra = self.intermediate(list(student_states), student_qkv, teacher_states, self.teacher.model, mask)
            parts = {**parts, **extra, "loss": parts["loss"] + extra["intermediate"]}
        return parts

    def masked(self, batch: Batch, *keys: int) -> Batch:
        """`batch` with MLM masks drawn for `keys` (the batch itself if it is already masked)."""
        if "labels" in batch:
            return batch
        if self.masker is None:
            raise ValueError("the batch has no MLM labels and the module has no masker: pass masker=TokenMasker(...)")
        input_ids, labels = self.masker(batch["input_ids"], keys)
        return {**batch, "input_ids": input_ids, "labels": labels}

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        # masks: a function of (step, micro-batch, rank), so a resumed run redraws the same ones
        parts = self.losses(self.masked(batch, 0, self.global_step, batch_idx, self.global_rank))
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"})
        return parts["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        parts = self.losses(self.masked(batch, 1, batch_idx, self.global_rank))  # the same masks every pass
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, prog_bar=False, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        # `self` holds the student and the intermediate projections; the teacher is outside the module tree
        return configure_optimization(self, self.trainer, self.optimizer_factory, self.scheduler_factory)
