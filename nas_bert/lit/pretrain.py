"""`PretrainDistillation`: pre-training a student by KD from a frozen teacher (NAS-BERT stage 3).

Objectives (`objective`):
* `prediction`, the paper: (1 - lambda) * MLM + lambda * T^2 * KL(teacher || student) on the MLM logits of
  the masked positions; the teacher is a `FrozenTeacher` of a masked-LM model (its own MLM head or a fitted one).
* `representation`: the representation terms of `nas_bert.distill.intermediate` alone (block-boundary hidden
  states through learned projections, the mean-pooled sentence embedding), on unmasked text. No MLM head
  is needed on either side, and the teacher's states can come from a `TeacherStateCache`.
* `both`: the prediction loss plus the representation / intermediate terms, on the masked inputs.
The intermediate terms (TinyBERT attention scores, MiniLM relations) can be added to `prediction` / `both`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn

from nas_bert.distill import check_kd_mix, prediction_kd_loss
from nas_bert.distill.intermediate import IntermediateDistillation, Recorder
from nas_bert.distill.masking import TokenMasker
from nas_bert.distill.state_cache import TeacherStateCache
from nas_bert.encoder import bert_flops, encoder_flops
from nas_bert.lit.compile import MLM_HEADS, compile_in_place, compile_options
from nas_bert.lit.optim import configure_optimization
from nas_bert.teacher import FrozenTeacher
from nas_bert.utils.batch import SUMMARY_SEQ_LEN, model_inputs

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]
OBJECTIVES = ("prediction", "representation", "both")


def masked_logits(model: nn.Module, inputs: Batch, masked: torch.Tensor,
                  output_hidden_states: bool) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
    """MLM logits at the masked positions only, (M, V), and the hidden states if asked.

    The vocabulary projection dominates the cost of both models and MLM/KD need it only where
    tokens are masked (~15%), so the encoder runs alone and its head only on those positions.
    Models without a known base/head split fall back to the full logits.
    """
    base, head = getattr(model, "base_model", None), mlm_head(model)
    if base is None or base is model or head is None:
        out = model(**inputs, output_hidden_states=output_hidden_states)
        return out.logits[masked], getattr(out, "hidden_states", None)  # (M, V)
    out = base(**inputs, output_hidden_states=output_hidden_states)
    return head(out.last_hidden_state[masked]), out.hidden_states  # (M, H) -> (M, V)


def mlm_head(model: nn.Module) -> nn.Module | None:
    """The model's MLM head (`MLM_HEADS`), None for a bare encoder."""
    return next((getattr(model, name) for name in MLM_HEADS if isinstance(getattr(model, name, None), nn.Module)),
                None)


def head_flops_per_token(model: nn.Module) -> int:
    """Matmul FLOPs of the model's MLM head on one token: 2 per weight of its Linear layers (0 without a head)."""
    head = mlm_head(model)
    return 0 if head is None else sum(2 * m.in_features * m.out_features for m in head.modules()
                                      if isinstance(m, nn.Linear))


def freeze_mlm_head(student: nn.Module) -> None:
    """Without the prediction loss the MLM head gets no gradient: it is frozen (DDP requires every trained
    parameter to get one), except a decoder tied to the word embeddings, which the encoder trains."""
    head = getattr(student, "lm_head", None)
    if head is None:
        return
    tied = {id(p) for p in student.get_input_embeddings().parameters()}
    for p in head.parameters():
        if id(p) not in tied:
            p.requires_grad_(False)


class PretrainDistillation(L.LightningModule):
    """Trains `student` (an MLM model) by KD from `teacher`: its MLM logits, its representations, or both."""

    def __init__(self, student: nn.Module, teacher: FrozenTeacher, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, *, objective: str, kd_weight: float = 0.5,
                 temperature: float = 1.0, intermediate: dict[str, Any] | None = None,
                 masker: TokenMasker | None = None, teacher_cache: dict[str, Any] | None = None,
                 compile: bool | dict[str, Any] | None = None) -> None:
        """`objective`: prediction, representation or both, with no default: the recipe's `auto` depends on how the
        teacher is loaded, so the stage resolves it first (`nas_bert.stages.pretrain.pretrain_objective`).
        `intermediate`: keyword arguments of `IntermediateDistillation` (None: its defaults, the recipe's): the
        representation terms (hidden_weight, last_boundary_weight, hidden_loss, embedding_weight, embedding_loss),
        used by the representation and both objectives, and the attention terms (attention_weight, minilm_weight,
        relation_heads), added to any objective when their weight is > 0.
        `masker`: masks batches without `labels` in the step, seeded by the step (see `TokenMasker`);
        batches that come with `labels` are used as they are. Not used by the representation objective.
        `teacher_cache`: {"dir": folder, "capacity": sequences} to keep the teacher's training states (every
        layer's) on disk (representation objective only); None = run the teacher at every step.
        `compile`: torch.compile the student's and the teacher's encoder and MLM head when fitting starts (true,
        or a dict of torch.compile arguments); None = eager."""
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective={objective!r}: use one of {', '.join(OBJECTIVES)}")
        check_kd_mix(kd_weight, temperature)
        self.save_hyperparameters(ignore=["student", "teacher", "optimizer", "scheduler", "masker"], logger=False)
        self.objective, self.masker = objective, masker
        self.compile_options = compile_options(compile)
        self.student, self.teacher = student, teacher
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.kd_weight, self.temperature = kd_weight, temperature
        config, settings = teacher.config, dict(intermediate or {})
        if objective == "prediction":  # the representation terms belong to representation / both
            settings.update(hidden_weight=0.0, embedding_weight=0.0)
        terms = IntermediateDistillation(
            student.config.to_arch(), config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            **settings)
        if objective == "representation" and not (terms.hidden_weight or terms.embedding_weight):
            raise ValueError("objective=representation needs intermediate.hidden_weight or "
                             "intermediate.embedding_weight > 0 (there is nothing to distil otherwise)")
        if teacher_cache and objective != "representation":
            raise ValueError("the teacher state cache holds the teacher's states of unmasked inputs: it needs "
                             "objective=representation; set teacher_cache=null")
        self.intermediate = terms if terms.active else None
        self.student_recorder = Recorder(terms.student_modules(student))
        self.teacher_cache_spec = dict(teacher_cache) if teacher_cache else None
        self.teacher_cache: TeacherStateCache | None = None
        if objective == "representation":
            freeze_mlm_head(student)
        self.flops_per_batch = 0  # the last step's `step_flops` (read by ThroughputMonitor)
        self.teacher_sequences = 0  # sequences the teacher ran on in the last step (not read from the cache)
        length = min(SUMMARY_SEQ_LEN, student.config.max_position_embeddings)  # the model summary counts the FLOPs
        self.example_input_array = torch.zeros(1, length, dtype=torch.long)  # of `forward` on one sequence

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The student's MLM logits (B, T, V) at every position."""
        masks = {} if attention_mask is None else {"attention_mask": attention_mask}
        return self.student(input_ids, **masks).logits

    def step_flops(self, batch: Batch, train: bool) -> int:
        """Matmul FLOPs of one step on `batch`, counted analytically (`encoder_flops`, `bert_flops`): the student's
        encoder on every sequence and its MLM head on the masked tokens (when the prediction loss is on), times 3
        when training (forward + backward ~ 3 forwards); plus the frozen teacher's forward, its encoder on the
        sequences it ran on (cache hits cost none) and its head on the masked tokens. Not counted: embedding
        lookups, norms, activations, softmaxes, the losses and the intermediate terms' projections and relations."""
        sequences, length = batch["input_ids"].shape
        masked = int((batch["labels"] != -100).sum()) if self.masks_inputs else 0
        config = self.student.config
        student = sequences * encoder_flops(config.to_arch(), length, config.ffn_ratio)
        student += masked * head_flops_per_token(self.student)
        t = self.teacher.config
        teacher = self.teacher_sequences * bert_flops(t.hidden_size, t.num_hidden_layers,
                                                      getattr(t, "intermediate_size", 4 * t.hidden_size), length)
        teacher += masked * head_flops_per_token(self.teacher.model)
        return (3 if train else 1) * student + teacher

    @property
    def masks_inputs(self) -> bool:
        return self.objective != "representation"

    def teacher_states(self, inputs: Batch, train: bool) -> dict[int, torch.Tensor]:
        """The teacher's hidden states (B, T, D) by layer index, 0 .. L (read from the cache when it is on)."""
        def compute(rows: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
            sub = inputs if rows is None else {k: v[rows] for k, v in inputs.items()}
            self.teacher_sequences += sub["input_ids"].shape[0]
            return dict(enumerate(self.teacher.hidden_states(**sub)))

        if not (train and self.teacher_cache_spec):
            return compute()
        if self.teacher_cache is None:  # opened at the first step: the sequence length is the batch's
            self.teacher_cache = TeacherStateCache.for_rank(
                self.teacher_cache_spec, self.global_rank, self.trainer.world_size if self._trainer else 1,
                self.teacher.config.num_hidden_layers, inputs["input_ids"].shape[1], self.teacher.hidden_size)
        return self.teacher_cache.lookup(inputs["input_ids"], inputs.get("attention_mask"), compute)

    def representation_losses(self, batch: Batch, train: bool) -> dict[str, torch.Tensor]:
        """The representation terms on unmasked inputs (the student's encoder only, no MLM head)."""
        inputs = model_inputs(batch)
        encoder = getattr(self.student, "base_model", self.student)
        with self.student_recorder.recording() as student_qkv:
            student_states = encoder(**inputs, output_hidden_states=True).hidden_states
        teacher_states = self.teacher_states(inputs, train)
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        parts = self.intermediate(list(student_states), student_qkv, teacher_states, self.teacher.model, mask)
        return {**parts, "loss": parts["intermediate"]}

    def prediction_losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The paper's loss on masked inputs, plus the representation / intermediate terms that are on."""
        inputs = model_inputs(batch)
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

    def losses(self, batch: Batch, train: bool = True) -> dict[str, torch.Tensor]:
        self.teacher_sequences = 0 if self.objective == "representation" else batch["input_ids"].shape[0]
        if self.objective == "representation":
            return self.representation_losses(batch, train)
        return self.prediction_losses(batch)

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
        if self.masks_inputs:
            batch = self.masked(batch, 0, self.global_step, batch_idx, self.global_rank)
        parts = self.losses(batch, train=True)
        self.flops_per_batch = self.step_flops(batch, train=True)
        self.log("train/loss", parts["loss"], prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in parts.items() if k != "loss"})
        if self.teacher_cache is not None:
            self.log("train/teacher_cache_hit_rate", self.teacher_cache.hit_rate())
        return parts["loss"]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        if self.masks_inputs:
            batch = self.masked(batch, 1, batch_idx, self.global_rank)  # the same masks every pass
        parts = self.losses(batch, train=False)
        self.flops_per_batch = self.step_flops(batch, train=False)
        self.log_dict({f"val/{k}": v for k, v in parts.items()}, prog_bar=False, sync_dist=True)

    def on_fit_start(self) -> None:
        if self.compile_options is not None:
            compile_in_place([self.student, self.teacher.model], self.compile_options)

    def configure_optimizers(self) -> dict[str, Any]:
        # `self` holds the student and the intermediate projections; the teacher is outside the module tree
        return configure_optimization(self, self.trainer, self.optimizer_factory, self.scheduler_factory)
