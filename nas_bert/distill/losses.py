"""Distillation losses shared by the supernet and the students."""

from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE averaged over hidden units, then over real (mask = 1) tokens; computed in fp32.

    pred, target: (B, T, D); mask: (B, T) with 1 for real tokens and 0 for padding.
    """
    per_token = (pred.float() - target.float()).pow(2).mean(dim=-1)  # (B, T)
    if mask is None:
        return per_token.mean()
    weights = mask.to(per_token.dtype)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def masked_cosine(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1 - cosine similarity of the hidden vectors, averaged over real (mask = 1) tokens; computed in fp32.

    pred, target: (B, T, D) or (B, D); mask: (B, T) with 1 for real tokens (unused for (B, D)).
    """
    per_row = 1.0 - torch.nn.functional.cosine_similarity(pred.float(), target.float(), dim=-1)  # (B, T) or (B,)
    if mask is None or per_row.dim() == 1:
        return per_row.mean()
    weights = mask.to(per_row.dtype)
    return (per_row * weights).sum() / weights.sum().clamp_min(1.0)


def mean_pool(states: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of (B, T, D) states over real (mask = 1) tokens: (B, D), the sentence embedding of
    Sentence-BERT models (e.g. all-MiniLM-L6-v2); computed in fp32."""
    if mask is None:
        return states.float().mean(dim=1)
    weights = mask.to(torch.float32)[..., None]  # (B, T, 1)
    return (states.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def check_kd_mix(kd_weight: float, temperature: float) -> None:
    """ValueError unless the KD share of a loss is in [0, 1] and the softmax temperature is positive."""
    if not 0.0 <= kd_weight <= 1.0 or temperature <= 0:
        raise ValueError(f"kd_weight must be in [0, 1] and temperature > 0, got {kd_weight}, {temperature}")


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the softened distributions, averaged over the selected positions.

    logits: (..., V); mask: (...) with 1 where the term counts. The T^2 factor keeps gradient scales
    comparable across temperatures (Hinton et al.). Computed in fp32.
    """
    t = float(temperature)
    log_p_student = torch.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = torch.log_softmax(teacher_logits.float() / t, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)  # (...)
    if mask is None:
        return kl.mean() * t * t
    weights = mask.to(kl.dtype)
    return (kl * weights).sum() / weights.sum().clamp_min(1.0) * t * t


def prediction_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                       kd_weight: float = 0.5, temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """NAS-BERT's two-stage KD loss on MLM logits: (1 - lambda) * MLM + lambda * KD.

    Both terms are taken on the masked positions (labels != -100), where the MLM task is defined.
    logits: (B, T, V); labels: (B, T). Returns the total and both parts.
    """
    masked = labels != -100  # (B, T)
    mlm = torch.nn.functional.cross_entropy(student_logits.float()[masked], labels[masked]) if masked.any() \
        else student_logits.sum() * 0.0
    kd = soft_cross_entropy(student_logits, teacher_logits, temperature, masked)
    return {"loss": (1.0 - kd_weight) * mlm + kd_weight * kd, "mlm": mlm, "kd": kd}
