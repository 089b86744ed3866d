"""The generic stage: fit the configured LightningModule on the configured data."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from nas_bert.stages.common import build, build_trainer, finish_loggers, start_run


def prepare(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None,
            ) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """Seed, save the recipe, and build module, data and trainer (the module first, so a bad
    teacher is reported as such rather than as a tokenizer error)."""
    model, datamodule = prepare_module_and_data(cfg)
    return model, datamodule, build_trainer(cfg, extra_callbacks)


def prepare_module_and_data(cfg: DictConfig) -> tuple[L.LightningModule, L.LightningDataModule]:
    start_run(cfg)
    return build(cfg.model), build(cfg.data)


def run_fit(cfg: DictConfig) -> dict[str, float]:
    """Fit (resuming from `ckpt_path` if set), optionally test, and return the last metrics."""
    model, datamodule, trainer = prepare(cfg)
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        if cfg.get("test_after_training"):
            trainer.test(model, datamodule=datamodule)
    finally:
        finish_loggers(trainer)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
