"""Fine-tuning with optional task KD (NAS-BERT stage 4), for any HF encoder with a task head.

loss = (1 - lambda) * task loss + lambda * KD, KD = T^2 * KL(teacher || student) on the logits
(MSE for regression). The teacher is a `FrozenTeacher` of a model fine-tuned on the same task; its
logits are computed on the fly and kept by split and example index, so each example is run through the
teacher once (the cache: training logits for KD, validation logits for loyalty). With `teacher_logits_file`
the complete splits are saved (training after the first epoch, validation after the first evaluation) and
read by later runs on the same data (every seed and student of a study; `nas_bert.distill.logit_cache`). Without a
teacher, plain fine-tuning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from nas_bert.distill import check_kd_mix, soft_cross_entropy
from nas_bert.distill.logit_cache import TeacherLogitCache, load_teacher_logits, save_teacher_logits
from nas_bert.lit.compile import compile_in_place, compile_options
from nas_bert.lit.optim import configure_optimization, weight_decay_groups
from nas_bert.teacher import FrozenTeacher
from nas_bert.utils.batch import model_inputs

log = logging.getLogger(__name__)
Batch = dict[str, torch.Tensor]


def task_kd_loss(student: torch.Tensor, teacher: torch.Tensor, regression: bool, temperature: float) -> torch.Tensor:
    """KD term on (B, C) logits: T^2 * KL(teacher || student), or MSE for regression."""
    if regression:
        return F.mse_loss(student.float().reshape(-1), teacher.float().reshape(-1))
    return soft_cross_entropy(student, teacher, temperature)


class TaskDistillation(L.LightningModule):
    """Shared by GLUE and SQuAD fine-tuning: the model, the optional frozen teacher, optimisation."""

    def __init__(self, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, teacher: FrozenTeacher | None = None,
                 kd_weight: float = 0.5, temperature: float = 1.0, cache_teacher_logits: bool = True,
                 teacher_logits_file: str | None = None, head_lr_scale: float = 1.0,
                 compile: bool | dict[str, Any] | None = None) -> None:
        """`teacher_logits_file`: where the complete logit cache is kept for later runs on the same training set
        (the stage names it after the teacher and the training set's fingerprint); None = this run only.
        `head_lr_scale`: the task head's learning rate over the base model's (a fresh head on a small encoder
        learns slowly at the encoder's rate). `compile`: torch.compile the model (and the teacher) when fitting
        starts (true, or a dict of torch.compile arguments); None = eager."""
        super().__init__()
        check_kd_mix(kd_weight, temperature)
        self.save_hyperparameters(ignore=["model", "teacher", "optimizer", "scheduler"], logger=False)
        # from_pretrained returns models in eval mode, and Lightning keeps a module's mode: dropout on
        self.model, self.teacher = model.train(), teacher
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.kd_weight = kd_weight if teacher is not None else 0.0
        self.temperature = temperature
        self.teacher_cache = TeacherLogitCache() if cache_teacher_logits else None
        self.eval_teacher_caches: list[TeacherLogitCache] = []  # by evaluation dataloader (GLUE)
        self.teacher_logits_file = Path(teacher_logits_file) if teacher_logits_file and self.teacher_cache else None
        self.saved_splits: set[str] = set()  # the splits `teacher_logits_file` holds
        self.evaluated_at_step: int | None = None  # the global step of the last validation (not a sanity check)
        if head_lr_scale <= 0:
            raise ValueError(f"head_lr_scale must be > 0, got {head_lr_scale}")
        self.head_lr_scale = head_lr_scale
        self.compile_options = compile_options(compile)
        self.best: dict[str, float] = {}  # the best value so far of every evaluation metric

    def log_best(self, tag: str, value: float) -> None:
        """Logs `val/<tag>` and, outside the sanity check, the best value so far as `best/<tag>` (higher is better)."""
        self.log(f"val/{tag}", value, sync_dist=False)  # evaluation metrics are gathered already: equal on all ranks
        if not self.trainer.sanity_checking:
            self.best[tag] = max(self.best.get(tag, float("-inf")), value)
            self.log(f"best/{tag}", self.best[tag])

    def on_fit_start(self) -> None:
        if self.compile_options is not None:
            compile_in_place([self.model] + ([self.teacher.model] if self.teacher is not None else []),
                             self.compile_options)
        file = self.teacher_logits_file
        if file is not None and file.is_file():
            self.saved_splits = set(load_teacher_logits(file, self.teacher_logit_caches()))
            log.info("teacher logits of %s read from %s", ", ".join(sorted(self.saved_splits)), file)

    def teacher_logit_caches(self) -> dict[str, TeacherLogitCache]:
        """{split: cache}: "train", then the evaluation splits, named as the datamodule's `eval_split_names`."""
        if self.teacher_cache is None:
            return {}
        data = self._trainer.datamodule if self._trainer is not None else None
        names = list(getattr(data, "eval_split_names", []))[: len(self.eval_teacher_caches)]
        return {"train": self.teacher_cache, **dict(zip(names, self.eval_teacher_caches))}

    def keep_teacher_logits(self) -> None:
        """Marks the caches whose split is complete (under DDP each rank sees its share: never) and saves them to
        `teacher_logits_file` when it lacks one of them."""
        data = self.trainer.datamodule
        if data is None or self.teacher is None or self.teacher_cache is None:  # nothing to keep without a teacher
            return
        complete = {}
        for split, cache in self.teacher_logit_caches().items():
            dataset = data.train_dataset if split == "train" else data.eval_datasets.get(split)
            # example ids in the split (a subset: not 0..N-1)
            if dataset is not None and (cache.full or cache.complete(torch.as_tensor(dataset["idx"]))):
                complete[split] = cache
        file = self.teacher_logits_file
        if file is not None and not complete.keys() <= self.saved_splits and self.trainer.is_global_zero:
            save_teacher_logits(file, complete)
            self.saved_splits = set(complete)
            log.info("teacher logits of %s saved to %s", ", ".join(sorted(complete)), file)

    def on_train_epoch_end(self) -> None:
        self.keep_teacher_logits()

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:  # the weights the logged validation metrics belong to
            self.evaluated_at_step = self.trainer.global_step

    def run_teacher(self, batch: Batch) -> Any:
        """The teacher's output on the batch's inputs (no grad, on the batch's device)."""
        return self.teacher(**model_inputs(batch))

    def configure_optimizers(self) -> dict[str, Any]:
        groups = None
        if self.head_lr_scale != 1.0:  # the fresh task head (all but the base model) learns at a scaled rate
            base, lr = self.model.base_model, getattr(self.optimizer_factory, "keywords", {}).get("lr")
            if lr is None:
                raise ValueError("head_lr_scale scales the optimizer's lr: give it as a keyword of the optimizer "
                                 "(e.g. functools.partial(torch.optim.AdamW, lr=1e-4))")
            lr *= self.head_lr_scale
            groups = weight_decay_groups(base) + weight_decay_groups(self.model, skip=base, lr=lr)
        return configure_optimization(self.model, self.trainer, self.optimizer_factory, self.scheduler_factory,
                                      groups)


class GlueFineTuning(TaskDistillation):
    """Classification / regression on a GLUE task, evaluated with `GlueMetrics` on every eval split.

    Logs `val/glue/<split>/<metric>` (e.g. `val/glue/rte/accuracy`, `val/glue/mnli_mismatched/accuracy`),
    the best value so far as `best/glue/<split>/<metric>`, and loyalty to the teacher when there is one.
    """

    def __init__(self, model: nn.Module, task: str, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, teacher: FrozenTeacher | None = None,
                 kd_weight: float = 0.5, temperature: float = 1.0, cache_teacher_logits: bool = True,
                 eval_names: list[str] | None = None, teacher_logits_file: str | None = None,
                 head_lr_scale: float = 1.0, compile: bool | dict[str, Any] | None = None) -> None:
        super().__init__(model, optimizer, scheduler, teacher, kd_weight, temperature, cache_teacher_logits,
                         teacher_logits_file, head_lr_scale, compile)
        from nas_bert.metrics import GlueMetrics, canonical_task

        self.task = canonical_task(task)
        self.eval_names = list(eval_names or ([f"{self.task}_matched", f"{self.task}_mismatched"]
                                              if self.task == "mnli" else [self.task]))
        self.metrics = nn.ModuleList(GlueMetrics(name) for name in self.eval_names)
        if self.teacher_cache is not None:
            self.eval_teacher_caches = [TeacherLogitCache() for _ in self.eval_names]
        self.regression = self.metrics[0].is_regression

    def logits(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.model(**model_inputs(batch), labels=batch.get("labels"))
        return out.logits, out.loss  # (B, C), task loss (CE or MSE)

    def teacher_logits(self, batch: Batch, train: bool, dataloader_idx: int = 0) -> torch.Tensor:
        """The teacher's logits (B, C) on a training batch, or on a batch of evaluation dataloader
        `dataloader_idx`: cached by example index when caching is on."""
        def compute() -> torch.Tensor:
            return self.run_teacher(batch).logits  # (B, C)

        cache = self.teacher_cache if train else (self.eval_teacher_caches or [None])[dataloader_idx]
        if cache is not None and "idx" in batch:
            return cache.lookup(batch["idx"], compute)
        return compute()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits, task_loss = self.logits(batch)
        loss = task_loss
        if self.teacher is not None and self.kd_weight > 0:
            kd = task_kd_loss(logits, self.teacher_logits(batch, train=True), self.regression, self.temperature)
            loss = (1 - self.kd_weight) * task_loss + self.kd_weight * kd
            self.log("train/kd", kd)
        self.log_dict({"train/loss": loss, "train/task_loss": task_loss}, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits, loss = self.logits(batch)
        teacher = self.teacher_logits(batch, False, dataloader_idx) if self.teacher is not None else None
        self.metrics[dataloader_idx].update(batch["idx"], logits, batch["labels"], teacher)
        self.log(f"val/{self.eval_names[dataloader_idx]}/loss", loss, sync_dist=True, add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        """Every example once (de-duplicated across ranks), then `val/score`: the mean combined score."""
        scores = []
        for name, metric in zip(self.eval_names, self.metrics):
            values = metric.compute()
            metric.reset()
            scores.append(values["combined_score"])
            for key, value in values.items():
                if key == "num_examples":
                    self.log(f"val/glue/{name}/{key}", float(value), sync_dist=False)
                else:
                    self.log_best(f"glue/{name}/{key}", float(value))
        self.log("val/score", sum(scores) / len(scores), prog_bar=True)
        if self.teacher is not None and not self.trainer.sanity_checking:
            self.keep_teacher_logits()

    def predict_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        logits, _ = self.logits({k: v for k, v in batch.items() if k != "labels"})
        preds = logits.reshape(-1) if self.regression else logits.argmax(-1)
        return {"idx": batch["idx"], "prediction": preds, "dataloader_idx": torch.full_like(batch["idx"],
                                                                                             dataloader_idx)}


class SquadFineTuning(TaskDistillation):
    """Span extraction (SQuAD v1.1 / v2.0): start/end CE, KD on both distributions over tokens.

    Evaluation gathers every feature's logits once (by `feature_idx`), post-processes them into answers
    (`metrics.squad_postprocess`, with the DataModule's n-best, max answer length, v2 null threshold) and logs
    `val/squad/exact_match`, `val/squad/f1` (v2 also HasAns_/NoAns_), best values as `best/squad/...`, and with a
    teacher its loyalty: `label_loyalty` (share of identical normalised answers) and `f1_loyalty` (F1 of the
    student's answer against the teacher's).
    """

    def __init__(self, model: nn.Module, optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, teacher: FrozenTeacher | None = None,
                 kd_weight: float = 0.5, temperature: float = 1.0,
                 compile: bool | dict[str, Any] | None = None) -> None:
        # teacher logits on the fly: training features carry no index to cache them by
        super().__init__(model, optimizer, scheduler, teacher, kd_weight, temperature, cache_teacher_logits=False,
                         compile=compile)
        from nas_bert.metrics import DedupMetric

        fields = ("start_logits", "end_logits") + (("teacher_start", "teacher_end") if teacher is not None else ())
        self.features = DedupMetric(fields)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        out = self.model(**model_inputs(batch), start_positions=batch["start_positions"],
                         end_positions=batch["end_positions"])
        loss = out.loss
        if self.teacher is not None and self.kd_weight > 0:
            teacher = self.run_teacher(batch)  # start / end logits (B, T)
            kd = (soft_cross_entropy(out.start_logits, teacher.start_logits, self.temperature)
                  + soft_cross_entropy(out.end_logits, teacher.end_logits, self.temperature)) / 2
            loss = (1 - self.kd_weight) * out.loss + self.kd_weight * kd
            self.log("train/kd", kd)
        self.log_dict({"train/loss": loss, "train/task_loss": out.loss}, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self.model(**model_inputs(batch))
        rows = {"start_logits": out.start_logits, "end_logits": out.end_logits}  # (B, T) each
        if self.teacher is not None:
            teacher = self.run_teacher(batch)
            rows |= {"teacher_start": teacher.start_logits, "teacher_end": teacher.end_logits}
        self.features.update(batch["feature_idx"], **rows)

    def on_validation_epoch_end(self) -> None:
        from nas_bert.metrics import squad_scores
        from nas_bert.metrics.squad_postprocess import squad_predictions

        rows = self.features.compute()  # every feature once, gathered from all ranks
        self.features.reset()
        data = self.trainer.datamodule
        answers_of = partial(squad_predictions, data.eval_examples, data.eval_features, data.answer_settings,
                             rows["idx"])
        result = answers_of(rows["start_logits"], rows["end_logits"])
        answers = {p["id"]: p["prediction_text"] for p in result.preds}
        values = squad_scores(answers, result.gold_answers, version_2=data.answer_settings.version_2)
        if self.teacher is not None:
            teacher = answers_of(rows["teacher_start"], rows["teacher_end"])
            agreement = squad_scores(answers, {p["id"]: [p["prediction_text"]] for p in teacher.preds},
                                     version_2=data.answer_settings.version_2)
            values |= {"label_loyalty": agreement["exact_match"] / 100, "f1_loyalty": agreement["f1"] / 100}
        for key, value in values.items():
            if key.endswith("total"):
                self.log(f"val/squad/{key}", float(value))
            else:
                self.log_best(f"squad/{key}", float(value))
        self.log("val/score", float(values["f1"]), prog_bar=True)
