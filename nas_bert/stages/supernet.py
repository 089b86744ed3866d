"""Stage 1: train the supernet by block-wise distillation and report per-block progress."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig
from rich.table import Table

from nas_bert.stages.common import finish_loggers
from nas_bert.stages.fit import prepare
from nas_bert.utils import wide_console

log = logging.getLogger(__name__)


def block_progress(start: dict[str, float], end: dict[str, float]) -> list[dict[str, float]]:
    """Per-block val MSE before and after training, from two validation results."""
    rows = []
    for key in sorted(k for k in end if k.startswith("val/block")):
        rows.append({"metric": key, "start": start.get(key, float("nan")), "end": end[key]})
    return rows


def print_progress(rows: list[dict[str, float]]) -> None:
    table = Table(title="Supernet: validation MSE on the reference path")
    for col in ("metric", "step 0", "end", "end / step 0"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["metric"], f"{r['start']:.4f}", f"{r['end']:.4f}", f"{r['end'] / r['start']:.3f}")
    wide_console().print(table)


def run_supernet(cfg: DictConfig) -> dict[str, float]:
    """Compose data, module and trainer from `cfg`, train, and return the final validation metrics."""
    output_dir = Path(cfg.paths.output_dir)
    model, datamodule, trainer = prepare(cfg)
    try:
        start = {}
        if cfg.get("validate_before_training") and not cfg.get("ckpt_path"):
            start = trainer.validate(model, datamodule=datamodule)[0]
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        end = trainer.validate(model, datamodule=datamodule)[0]
    finally:
        finish_loggers(trainer)

    rows = block_progress(start, end)
    if trainer.is_global_zero:
        if start:
            print_progress(rows)
        summary = {"final": end, "initial": start, "checkpoint": str(output_dir / "checkpoints" / "last.ckpt")}
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log.info("supernet checkpoint: %s", summary["checkpoint"])
    return {k: float(v) for k, v in end.items()}
