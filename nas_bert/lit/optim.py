"""Optimizer and scheduler wiring shared by every LightningModule (factories come from the config)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import nn


def weight_decay_groups(module: nn.Module, skip: nn.Module | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Two groups: matrices (decayed with the optimizer's weight_decay), biases and norms (not decayed);
    parameters of `skip` are left out, `settings` (e.g. lr) go into both groups."""
    skipped = {id(p) for p in skip.parameters()} if skip is not None else set()
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad and id(p) not in skipped:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, **settings}, {"params": no_decay, **settings, "weight_decay": 0.0}]


def configure_optimization(trained: nn.Module, trainer: L.Trainer,
                           optimizer: Callable[..., torch.optim.Optimizer],
                           scheduler: Callable[..., Any] | None,
                           groups: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """`configure_optimizers` output: the optimizer over `trained` (or over parameter `groups`), and a per-step
    scheduler if given (called with `optimizer=` and `num_training_steps=`, e.g. `transformers.get_scheduler`)."""
    built = optimizer(params=groups if groups is not None else weight_decay_groups(trained))
    if scheduler is None:
        return {"optimizer": built}
    schedule = scheduler(optimizer=built, num_training_steps=trainer.estimated_stepping_batches)
    return {"optimizer": built, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
