"""Progressive shrinking of the search space (NAS-BERT section 3), as a Lightning callback.

Candidates of a block fall into B bins by parameters and by latency relative to the largest
candidate; candidates whose two bins disagree are dropped. After `warmup_epochs`, at each epoch
end, every bin of every block scores up to E of its alive candidates by block loss on K fixed
validation batches and drops the worse half (never below m). Training samples only the alive
candidates. When every bin holds at most m candidates, supernet training stops. The alive sets
are saved in checkpoints and restored on resume.

With `settle_tau`, shrinking waits past the warm-up until the ranking has settled: at each epoch end a fixed set
of probe candidates per block (spread over every width and depth) is scored, and the first round runs once every
block's Kendall tau between this epoch's and the previous epoch's probe losses reaches `settle_tau` (or after
`max_settle_epochs` more epochs, with a warning).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from nas_bert.nas.ranking import kendall, probe_candidates
from nas_bert.utils.batch import first_batches

log = logging.getLogger(__name__)


def assign_bins(params: np.ndarray, latency: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin of each candidate (0..B-1), or -1 where its parameter and latency bins disagree.

    Bin b (1-based) holds x with (b-1)/B * max < x <= b/B * max, for params and latency alike.
    """
    def bin_of(x: np.ndarray) -> np.ndarray:
        return np.clip(np.ceil(x / x.max() * num_bins - 1e-9), 1, num_bins).astype(np.int64)

    by_params, by_latency = bin_of(params.astype(np.float64)), bin_of(latency.astype(np.float64))
    return np.where(by_params == by_latency, by_params - 1, -1)


def halve(alive: np.ndarray, scores: np.ndarray, chosen: np.ndarray, min_alive: int) -> np.ndarray:
    """Drop the worse half of `chosen` (highest scores) from `alive`, keeping at least `min_alive`."""
    n_drop = min(len(chosen) // 2, len(alive) - min_alive)
    if n_drop <= 0:
        return alive
    order = np.lexsort((chosen, scores))  # by score, ties by index: deterministic
    dropped = chosen[order[len(chosen) - n_drop:]]
    return np.setdiff1d(alive, dropped)


class ProgressiveShrinking(L.Callback):
    """Shrinks every block's alive candidates bin by bin; stops supernet training when done.

    Args:
        num_bins: B, bins per block by parameters and latency.
        candidates_per_bin: E, candidates scored per bin and round (all when fewer are alive).
        eval_batches: K, validation batches each candidate is scored on (the same for all).
        min_per_bin: m, candidates a bin keeps at the end.
        warmup_epochs: epochs trained before the first round.
        candidate_latency: predicted latency of every block candidate, shape (num_candidates,);
            None falls back to FLOPs as the latency measure.
        eval_batch_size: batch size of the scoring batches (default: the data's eval batch size).
        seed: seeds which E candidates of a bin are scored in each round.
        settle_tau: wait for the ranking to settle before the first round (None: start after the warm-up).
        settle_probes: probe candidates per block scored to judge it.
        max_settle_epochs: epochs past the warm-up after which shrinking starts even if unsettled.
        state_file: JSON file the alive sets are written to after every round (global rank 0), for
            the selection stage and for people; the checkpoint holds the same state for resuming.
    """

    def __init__(self, num_bins: int = 10, candidates_per_bin: int = 2000, eval_batches: int = 5,
                 min_per_bin: int = 10, warmup_epochs: int = 3, candidate_latency: np.ndarray | None = None,
                 eval_batch_size: int | None = None, seed: int = 0, state_file: str | None = None,
                 settle_tau: float | None = None, settle_probes: int = 60, max_settle_epochs: int = 10) -> None:
        if min(num_bins, candidates_per_bin, eval_batches, min_per_bin) < 1 or warmup_epochs < 0:
            raise ValueError("num_bins, candidates_per_bin, eval_batches, min_per_bin must be >= 1, warmup >= 0")
        if candidates_per_bin < 2:
            raise ValueError("candidates_per_bin must be >= 2 to drop a worse half")
        self.num_bins, self.candidates_per_bin, self.eval_batches = num_bins, candidates_per_bin, eval_batches
        self.min_per_bin, self.warmup_epochs, self.seed = min_per_bin, warmup_epochs, seed
        self.candidate_latency = None if candidate_latency is None else np.asarray(candidate_latency)
        self.eval_batch_size = eval_batch_size
        self.state_file = None if state_file is None else Path(state_file)
        self.bins: np.ndarray | None = None  # (num_candidates,) bin per candidate, -1 dropped
        self.alive: list[np.ndarray] | None = None  # per block, sorted candidate indices
        self.rounds = 0
        self.done = False
        self.last_epoch = -1  # the latest epoch whose end was handled (resume runs missed ones)
        if settle_tau is not None and not -1 <= settle_tau <= 1:
            raise ValueError(f"settle_tau is a Kendall tau in [-1, 1] (or null), got {settle_tau}")
        self.settle_tau, self.settle_probes, self.max_settle_epochs = settle_tau, settle_probes, max_settle_epochs
        self.settled = settle_tau is None
        self.probe_losses: list[list[float]] | None = None  # the previous epoch's, per block
        self.settle_epochs = 0

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"alive": None if self.alive is None else [a.tolist() for a in self.alive],
                "rounds": self.rounds, "done": self.done, "last_epoch": self.last_epoch, "settled": self.settled,
                "probe_losses": self.probe_losses, "settle_epochs": self.settle_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.alive = None if state["alive"] is None else [np.asarray(a, dtype=np.int64) for a in state["alive"]]
        self.rounds, self.done = state["rounds"], state["done"]
        self.last_epoch = state.get("last_epoch", -1)
        self.settled = state.get("settled", self.settle_tau is None)
        self.probe_losses, self.settle_epochs = state.get("probe_losses"), state.get("settle_epochs", 0)

    def alive_per_bin(self) -> np.ndarray:
        """Counts, shape (num_blocks, num_bins)."""
        return np.stack([np.bincount(self.bins[a], minlength=self.num_bins) for a in self.alive])

    def is_finished(self) -> bool:
        return bool((self.alive_per_bin() <= self.min_per_bin).all())

    def write_state(self) -> None:
        """The alive sets and per-bin counts as JSON (see `read_alive`)."""
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        data = {**self.state_dict(), "num_bins": self.num_bins, "min_per_bin": self.min_per_bin,
                "alive_per_bin": self.alive_per_bin().tolist()}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.state_file)  # atomic: readers never see half a file

    # -- hooks ---------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        space = pl_module.space
        latency = self.candidate_latency
        if latency is None:
            latency = space.candidate_flops(128).astype(np.float64)
        if latency.shape != (space.num_candidates,):
            raise ValueError(
                f"candidate_latency has shape {latency.shape}, the space {space.name!r} has "
                f"{space.num_candidates} candidates per block: measure the latency table for this space"
            )
        self.bins = assign_bins(space.candidate_params, latency, self.num_bins)
        if not (self.bins >= 0).any():
            raise ValueError(
                f"no candidate of the space {space.name!r} has matching parameter and latency bins with "
                f"num_bins={self.num_bins}: use fewer bins, or re-measure the latency table "
                f"(search.latency.remeasure=true) if it was measured on a busy machine"
            )
        if self.alive is None:
            kept = np.flatnonzero(self.bins >= 0)
            self.alive = [kept.copy() for _ in range(space.num_blocks)]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.alive = self.alive  # restored state included: training samples only alive candidates
        # A checkpoint written on the last batch of an epoch precedes that epoch's round, and a resumed run
        # starts at the next epoch: run the missed round now, on the same (checkpointed) weights.
        for epoch in range(self.last_epoch + 1, trainer.current_epoch):
            self.end_of_epoch(trainer, pl_module, epoch)
        if trainer.is_global_zero:
            self.write_state()  # here, not in setup: a resumed run's state is restored only after setup
        if self.done:
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end_of_epoch(trainer, pl_module, trainer.current_epoch)

    def end_of_epoch(self, trainer: L.Trainer, pl_module: L.LightningModule, epoch: int) -> None:
        """The shrinking round after `epoch` (none during warm-up or once finished)."""
        self.last_epoch = epoch
        if self.done or epoch + 1 < self.warmup_epochs:
            return
        states, masks = pl_module.reference_states(self._scoring_batches(trainer))
        if not self.settled and not self._settle(trainer, pl_module, states, masks):
            return
        rng = np.random.default_rng([self.seed, epoch])
        was_training = pl_module.training
        pl_module.eval()
        try:
            for n in range(len(self.alive)):
                all_scores = self._shrink_block(trainer, pl_module, n, states, masks, rng)
                if all_scores.size:
                    pl_module.log_dict({f"search/block{n}_score_min": float(all_scores.min()),
                                        f"search/block{n}_score_median": float(np.median(all_scores)),
                                        f"search/block{n}_score_max": float(all_scores.max())})
                    log_histogram(trainer, f"search/block{n}_scores", all_scores)
        finally:
            pl_module.train(was_training)
        self.rounds += 1
        pl_module.alive = self.alive
        counts = self.alive_per_bin()
        for n, row in enumerate(counts):
            pl_module.log(f"search/block{n}_alive", float(row.sum()))
            pl_module.log_dict({f"search/alive/block{n}_bin{b}": float(c) for b, c in enumerate(row)})
        log.info("shrinking round %d: alive per block and bin\n%s", self.rounds, counts)
        if self.is_finished():
            self.done = True
            trainer.should_stop = True
            log.info("shrinking finished after %d rounds: every bin holds <= %d candidates",
                     self.rounds, self.min_per_bin)
        if trainer.is_global_zero:
            self.write_state()

    # -- internals -----------------------------------------------------------------------------
    def _settle(self, trainer, pl_module, states, masks) -> bool:
        """Score the probes; whether the ranking has settled (then the rounds start)."""
        space = pl_module.space
        was_training = pl_module.training
        pl_module.eval()
        try:
            losses = [self._score(trainer, pl_module, n, probe_candidates(space, self.settle_probes, self.seed + n),
                                  states, masks).tolist() for n in range(len(self.alive))]
        finally:
            pl_module.train(was_training)
        taus = [kendall(a, b) for a, b in zip(losses, self.probe_losses)] if self.probe_losses else []
        self.probe_losses, self.settle_epochs = losses, self.settle_epochs + 1
        for n, tau in enumerate(taus):
            pl_module.log(f"search/block{n}_settle_tau", tau)
        if taus and min(taus) >= self.settle_tau:
            log.info("the ranking has settled (Kendall tau per block %s >= %s): shrinking starts",
                     [round(t, 3) for t in taus], self.settle_tau)
            self.settled = True
        elif self.settle_epochs > self.max_settle_epochs:
            log.warning("the ranking has not settled after %d epochs (Kendall tau per block %s < %s): shrinking "
                        "starts anyway", self.max_settle_epochs, [round(t, 3) for t in taus], self.settle_tau)
            self.settled = True
        return self.settled

    def _shrink_block(self, trainer, pl_module, n: int, states, masks, rng) -> np.ndarray:
        alive, scored = self.alive[n], []
        for b in range(self.num_bins):
            in_bin = alive[self.bins[alive] == b]
            if len(in_bin) <= self.min_per_bin:
                continue
            chosen = in_bin if len(in_bin) <= self.candidates_per_bin else np.sort(
                rng.choice(in_bin, self.candidates_per_bin, replace=False))
            scores = self._score(trainer, pl_module, n, chosen, states, masks)
            alive = np.concatenate([alive[self.bins[alive] != b], halve(in_bin, scores, chosen, self.min_per_bin)])
            scored.append(scores)
        self.alive[n] = np.sort(alive)
        return np.concatenate(scored) if scored else np.zeros(0)

    def _score(self, trainer, pl_module, n: int, chosen: np.ndarray, states, masks) -> np.ndarray:
        """Block loss of each chosen candidate; ranks split the work and sum their parts."""
        rank, world = trainer.global_rank, trainer.world_size
        scores = torch.zeros(len(chosen), dtype=torch.float64, device=pl_module.device)
        space = pl_module.space
        for i in range(rank, len(chosen), world):
            scores[i] = pl_module.score_block(n, space.candidate(int(chosen[i])), states, masks)
        if world > 1:
            scores = trainer.strategy.reduce(scores, reduce_op="sum")
        return scores.cpu().numpy()

    def _scoring_batches(self, trainer: L.Trainer) -> list[dict[str, torch.Tensor]]:
        """The first K batches of the validation set: identical on every rank and every round."""
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "val_dataset", None)
        if dataset is None or len(dataset) == 0:
            raise ValueError("progressive shrinking scores candidates on validation data, but the data has none: "
                             "set data.validation_files or data.validation_fraction")
        size = self.eval_batch_size or getattr(datamodule, "eval_batch_size", None) or 8
        return first_batches(dataset, size, self.eval_batches)


def log_histogram(trainer: L.Trainer, key: str, values: np.ndarray) -> None:
    """A score distribution, to W&B (other loggers get the min/median/max scalars only)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger) and trainer.is_global_zero:
            import wandb

            logger.experiment.log({key: wandb.Histogram(values), "trainer/global_step": trainer.global_step})


def read_alive(state_file: str | Path) -> list[np.ndarray]:
    """The alive sets a `ProgressiveShrinking.state_file` holds."""
    path = Path(state_file)
    if not path.is_file():
        raise FileNotFoundError(f"no shrinking state at {path}; run `python search.py` (with shrinking) first")
    alive = json.loads(path.read_text())["alive"]
    return [np.asarray(a, dtype=np.int64) for a in alive]
