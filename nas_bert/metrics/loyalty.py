"""Loyalty of a compressed student to its teacher (Xu et al., 2021, "Beyond Preserved Accuracy").

- label loyalty: share of examples where student and teacher predict the same label;
- probability loyalty: 1 - Jensen-Shannon distance between teacher and student softmax distributions,
  averaged over examples. The distance is what `scipy.spatial.distance.jensenshannon` returns with its
  default natural-log base: sqrt of the JS divergence, so it lies in [0, sqrt(ln 2)].
- regression (STS-B) has no labels or distributions; `regression_loyalty` = 1 - mean(min(|s - t|, R) / R)
  with R the label range (5 for STS-B), i.e. 1 when the student reproduces the teacher's scores exactly and 0
  when it is off by the whole range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def label_loyalty(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Share of rows (N, C) whose argmax agrees."""
    return (student_logits.argmax(-1) == teacher_logits.argmax(-1)).double().mean().item()


def js_distance(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Jensen-Shannon distance (natural log) between the softmax distributions of each row: (N, C) -> (N,)."""
    log_p = torch.log_softmax(teacher_logits.double(), dim=-1)  # (N, C)
    log_q = torch.log_softmax(student_logits.double(), dim=-1)  # (N, C)
    log_m = torch.logaddexp(log_p, log_q) - math.log(2.0)  # (N, C) log of the mixture (p + q) / 2
    return ((_kl(log_p, log_m) + _kl(log_q, log_m)) / 2).clamp_min(0).sqrt()


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) per row from log-probabilities (N, C) -> (N,); a zero probability of `a` contributes 0."""
    a = log_a.exp()
    return torch.where(a > 0, a * (log_a - log_b), torch.zeros_like(a)).sum(-1)


def prob_loyalty(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """1 - mean Jensen-Shannon distance between teacher and student distributions; rows (N, C)."""
    return 1.0 - js_distance(student_logits, teacher_logits).mean().item()


def regression_loyalty(student: Tensor, teacher: Tensor, value_range: float = 5.0) -> float:
    """1 - mean(min(|student - teacher|, value_range) / value_range) over scores (N,)."""
    diff = (student.double() - teacher.double()).abs().clamp_max(value_range)
    return 1.0 - (diff / value_range).mean().item()
