"""Callbacks for exact resume (with `nas_bert.data.loading` for the data order).

- `RngStates`: the random number generators' states travel in checkpoints, so that a resumed run draws
  the same dropout masks (and any other global-RNG draw) as the uninterrupted one. Lightning does not
  checkpoint RNG states. Every rank starts from the same seed and draws the same numbers, so the
  global-rank-0 state that the checkpoint holds is every rank's state. The state is kept in types that
  `torch.load(weights_only=True)` accepts.
- `RestoreLoaderState`: works around Lightning issue #20550 (the training loader's position is not restored
  when `configure_optimizers` reads `trainer.estimated_stepping_batches`, as every module here does).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.data import _set_sampler_epoch


def collect_rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "python": list(random.getstate()),  # (version, tuple of 625 ints, gauss)
    }


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Leaves the torch / CUDA / numpy / python RNG states as they were, also when the body raises."""
    states = collect_rng_states()
    try:
        yield
    finally:
        set_rng_states(states)


class RngStates(L.Callback):
    """Saves the torch / CUDA / numpy / python RNG states with each checkpoint and restores them on resume."""

    def state_dict(self) -> dict[str, Any]:
        return collect_rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_states(state_dict)


class RestoreLoaderState(L.Callback):
    """Restores the training loader's position from the checkpoint (Lightning leaves it pending).

    `estimated_stepping_batches` builds the loader before the checkpoint's loop state is restored; the fit
    loop then keeps that loader and iterator and never loads the saved position into them. At train start
    (after the restore, before the first batch is fetched) this does it. A checkpoint written on the last
    batch of an epoch resumes at the next epoch, which starts from its beginning: whatever position was
    loaded (by this callback or by Lightning) is forgotten there. A no-op on a fresh start.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loop = trainer.fit_loop
        if loop._combined_loader is None:
            return
        pending, loop._combined_loader_states_to_load = loop._combined_loader_states_to_load, []
        epoch_done = loop.epoch_loop.batch_progress.current.ready >= trainer.num_training_batches
        if pending and not epoch_done:
            loop._combined_loader._load_state_dicts(pending)  # mid-epoch: continue where it stopped
        elif loop.restarting and epoch_done:
            for loader in loop._combined_loader.flattened:  # the saved epoch was complete: a new one
                forget_position(loader)
                _set_sampler_epoch(loader, trainer.current_epoch)
        else:
            return
        iter(loop._data_fetcher)  # a new iterator, from that position


def forget_position(loader: Any) -> None:
    """Make the next iterator of a loader start at the beginning of its sampler's epoch."""
    if hasattr(loader, "next_iter_state"):  # a StatefulDataLoader holding a loaded position
        loader.next_iter_state = None
    restart = getattr(getattr(loader, "sampler", None), "restart", None)
    if callable(restart):
        restart()
