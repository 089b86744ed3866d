"""GLUE metrics (as Hugging Face `run_glue` reports them), loyalty to the teacher, and the GLUE average.

Values are fractions in [0, 1] (correlations in [-1, 1]), not percentages. Each task's labels and metric
names come from the data registry (`nas_bert.data.glue.GLUE_TASKS`); here an evaluation set may also be
one of MNLI's two (`mnli_matched`, `mnli_mismatched`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor
from torchmetrics.functional import pearson_corrcoef, spearman_corrcoef
from torchmetrics.functional.classification import (
    binary_f1_score,
    binary_matthews_corrcoef,
    multiclass_accuracy,
)

from nas_bert.data.glue import GLUE_TASKS, GlueTask, normalize_task_name
from nas_bert.metrics.dedup import DedupMetric
from nas_bert.metrics.loyalty import label_loyalty, prob_loyalty, regression_loyalty

# Evaluation sets that are not task names, and their task ("mnli" alone is the matched set).
_EVAL_SETS = {"mnli_matched": "mnli", "mnli_mismatched": "mnli"}
_ALIASES = {normalize_task_name(k): k for k in [*GLUE_TASKS, *_EVAL_SETS]} | {"mnlim": "mnli_matched",
                                                                              "mnlimm": "mnli_mismatched"}


def canonical_task(task: str) -> str:
    """Task or evaluation-set name ignoring case and punctuation ('SST-2' -> 'sst2', 'STS-B' -> 'stsb',
    'MNLI-mm' -> 'mnli_mismatched', 'mnli_matched' stays)."""
    name = _ALIASES.get(normalize_task_name(task))
    if name is None:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {sorted({*GLUE_TASKS, *_EVAL_SETS})}")
    return name


def task_of(name: str) -> GlueTask:
    """The registry entry of a task or evaluation set ('mnli_mismatched' -> the MNLI task)."""
    name = canonical_task(name)
    return GLUE_TASKS[_EVAL_SETS.get(name, name)]


def glue_scores(task: str, logits: Tensor, labels: Tensor) -> dict[str, float]:
    """The task's metrics from logits (N, C) (regression: (N, 1) or (N,)) and labels (N,)."""
    spec = task_of(task)
    if spec.is_regression:
        preds, target = logits.reshape(-1).double(), labels.reshape(-1).double()  # (N,)
        return {"pearson": pearson_corrcoef(preds, target).item(),
                "spearmanr": spearman_corrcoef(preds, target).item()}
    preds, target = logits.argmax(-1), labels.reshape(-1).long()  # (N,)
    out: dict[str, float] = {}
    for name in spec.metrics:
        if name == "accuracy":
            out[name] = multiclass_accuracy(preds, target, num_classes=logits.shape[-1], average="micro").item()
        elif name == "f1":
            out[name] = binary_f1_score(preds, target).item()  # positive class 1
        elif name == "matthews_correlation":
            # scikit-learn (what the GLUE/HF metric uses) gives 0 when either side is constant; torchmetrics
            # gives 1 when both are the same constant.
            constant = preds.unique().numel() < 2 or target.unique().numel() < 2
            out[name] = 0.0 if constant else binary_matthews_corrcoef(preds, target).item()
    return out


class GlueMetrics(DedupMetric):
    """A GLUE task's metrics over the eval set, each example counted once (also under DDP padding).

    `compute()` returns a dict of floats: the task metrics (`accuracy`, `f1`, `matthews_correlation`,
    `pearson`, `spearmanr` as the task has them), `combined_score` (their mean, as `run_glue`), and, when
    teacher logits were given, `label_loyalty` and `prob_loyalty` (classification) or only `label_loyalty`
    = 1 - mean(min(|student - teacher|, R) / R) with R = `value_range` (regression, see `loyalty.py`); and
    `num_examples`, the number of distinct examples seen.
    """

    higher_is_better = True

    def __init__(self, task: str, num_labels: int | None = None, is_regression: bool | None = None,
                 value_range: float = 5.0, **kwargs: Any) -> None:
        super().__init__(fields=("logits", "labels", "teacher_logits"), **kwargs)
        self.task = canonical_task(task)
        spec = task_of(self.task)
        if num_labels is not None and num_labels != spec.num_labels:
            raise ValueError(f"{self.task} has {spec.num_labels} labels, got num_labels={num_labels}")
        if is_regression is not None and is_regression != spec.is_regression:
            raise ValueError(f"{self.task} is{'' if spec.is_regression else ' not'} a regression task")
        self.num_labels, self.is_regression, self.value_range = spec.num_labels, spec.is_regression, value_range

    def update(self, idx: Tensor, logits: Tensor, labels: Tensor,  # type: ignore[override]
               teacher_logits: Tensor | None = None) -> None:
        """idx (B,) int64; logits and teacher_logits (B, C) (regression: (B, 1) or (B,)); labels (B,)."""
        n = idx.numel()
        super().update(idx, logits=logits.reshape(n, -1), labels=labels.reshape(n),
                       teacher_logits=None if teacher_logits is None else teacher_logits.reshape(n, -1))

    def compute(self) -> dict[str, float]:  # type: ignore[override]
        rows = self.rows()
        logits = rows["logits"]  # (N, C)
        out = glue_scores(self.task, logits, rows["labels"])
        out["combined_score"] = sum(out.values()) / len(out)
        teacher = rows.get("teacher_logits")  # (N, C) or absent
        if teacher is not None:
            if self.is_regression:
                out["label_loyalty"] = regression_loyalty(logits[:, 0], teacher[:, 0], self.value_range)
            else:
                out["label_loyalty"] = label_loyalty(logits, teacher)
                out["prob_loyalty"] = prob_loyalty(logits, teacher)
        out["num_examples"] = int(rows["idx"].numel())
        return out


def glue_average(results: dict[str, dict[str, float]]) -> float:
    """The GLUE score: the mean over tasks of each task's `combined_score` (mean of its metrics).

    As on the GLUE leaderboard, MNLI is one task whose score is the mean of its matched (`mnli` or
    `mnli_matched`) and mismatched (`mnli_mismatched`) accuracies, whichever of the two are given. Only the
    tasks passed are averaged: leave out WNLI for the average most papers (BERT, NAS-BERT) report.
    """
    scores: dict[str, float] = {}
    mnli: dict[str, float] = {}
    for task, metrics in results.items():
        name = canonical_task(task)
        score = metrics.get("combined_score")
        if score is None:
            names = task_of(name).metrics
            score = sum(metrics[m] for m in names) / len(names)
        if name.startswith("mnli"):
            part = "mismatched" if name == "mnli_mismatched" else "matched"
            if part in mnli:
                raise ValueError(f"MNLI {part} given twice")
            mnli[part] = float(score)
        else:
            scores[name] = float(score)
    if mnli:
        scores["mnli"] = sum(mnli.values()) / len(mnli)
    if not scores:
        raise ValueError("no GLUE results to average")
    return sum(scores.values()) / len(scores)
