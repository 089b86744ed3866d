"""`torch.compile` for the fixed-architecture modules of a step (students, task models, the teacher's forward)."""

from __future__ import annotations

from typing import Any

from torch import nn

MLM_HEADS = ("lm_head", "cls", "head")  # NAS-BERT / RoBERTa, BERT, a fitted TeacherMLMHead


def called_parts(model: nn.Module) -> list[nn.Module]:
    """The modules a step calls: an MLM model's encoder and head separately (pre-training runs the head on the
    masked positions only), else the model itself."""
    base = getattr(model, "base_model", None)
    heads = [getattr(model, n) for n in MLM_HEADS if isinstance(getattr(model, n, None), nn.Module)]
    if base is None or base is model or not heads:
        return [model]
    return [base, heads[0]]


def compile_options(compile: bool | dict[str, Any] | None) -> dict[str, Any] | None:
    """None / False: no compilation; True: torch.compile's defaults; a dict: its keyword arguments."""
    if not compile:
        return None
    if compile is True:
        return {}
    if not isinstance(compile, dict):
        raise TypeError(f"compile must be null, true or a dict of torch.compile arguments, got {compile!r}")
    return dict(compile)


def compile_in_place(models: list[nn.Module], options: dict[str, Any]) -> None:
    """`nn.Module.compile` each called part: compiled lazily at its first call, state_dict keys unchanged."""
    for model in models:
        for part in called_parts(model):
            part.compile(**options)
