"""Fault injection for resume tests (added to a run with `+callbacks.kill=...`; PYTHONPATH must hold tests/)."""

from __future__ import annotations

import os
import signal

import lightning as L


class KillAfterStep(L.Callback):
    """SIGKILLs the process right after optimizer step `step`: no clean-up, no final checkpoint."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordSteps(L.Callback):
    """Appends (global step, batch checksum, loss) of every training step to `path` (JSON lines)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        import json

        with open(self.path, "a") as f:
            f.write(json.dumps({"step": trainer.global_step, "batch": int(batch["input_ids"].sum()),
                                "loss": float(outputs["loss"]), "epoch": trainer.current_epoch}) + "\n")
