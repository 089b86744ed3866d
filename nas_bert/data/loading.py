"""DataLoaders that resume mid-epoch exactly: the training order is a pure function of (seed, epoch),
and the position inside the epoch travels in Lightning checkpoints.

Lightning saves the `state_dict` of every stateful training loader in its checkpoints and restores it
on resume; torchdata's `StatefulDataLoader` supplies that interface. The sampler also records its epoch,
since on resume the loader's iterator is created before Lightning sets the epoch again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import StatefulDistributedSampler


class ResumableSampler(StatefulDistributedSampler):
    """A seeded shuffle per epoch, sharded over DDP ranks, whose state is (epoch, samples yielded)."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "epoch": self.epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.set_epoch(state_dict.get("epoch", 0))

    def restart(self) -> None:
        """Forget a loaded position: the next iterator starts at the beginning of the epoch."""
        self.next_yielded, self.yielded = None, 0


class _GroupedByLength(DistributedSampler):
    """This rank's shuffled indices, sorted by length (longest first) within groups of `group_size`: batches of
    similar lengths pad little, and the groups still come in a random order (as Hugging Face's
    `LengthGroupedSampler`, here inside the resumable sampler)."""

    lengths: Sequence[int]
    group_size: int

    def __iter__(self) -> Iterator[int]:
        order = list(super().__iter__())
        grouped = []
        for start in range(0, len(order), self.group_size):
            grouped += sorted(order[start: start + self.group_size], key=lambda i: -self.lengths[i])
        return iter(grouped)


class LengthGroupedSampler(ResumableSampler, _GroupedByLength):
    """`ResumableSampler` whose epoch order groups examples of similar length (see `_GroupedByLength`)."""

    def __init__(self, dataset: Dataset, lengths: Sequence[int], group_size: int, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        if len(lengths) != len(dataset):
            raise ValueError(f"{len(lengths)} lengths for {len(dataset)} examples")
        self.lengths, self.group_size = list(lengths), group_size


def training_seed() -> int:
    """The run's seed, as `lightning.seed_everything` exports it (Lightning's own DDP sampler reads it too)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, collate_fn: Callable[[list], Any],
                num_workers: int = 0, trainer: L.Trainer | None = None, lengths: Sequence[int] | None = None,
                length_groups: int = 50) -> DataLoader:
    """The training loader (shuffle=True, resumable, sharded here over the trainer's ranks) or an evaluation
    loader (in order; Lightning shards it under DDP). With `lengths` (one per example), training batches are
    drawn from groups of `length_groups` batches sorted by length, so dynamic padding pads little."""
    # A private generator: creating an iterator (every epoch, every validation) draws a worker base seed
    # from it, not from the global RNG, whose state (dropout) a resumed run restores from the checkpoint.
    generator = torch.Generator().manual_seed(training_seed())
    common = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn, generator=generator,
                  pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0)
    if not shuffle:
        return DataLoader(dataset, shuffle=False, **common)
    world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    settings = dict(num_replicas=world, rank=rank, shuffle=True, seed=training_seed())
    sampler = (ResumableSampler(dataset, **settings) if lengths is None else
               LengthGroupedSampler(dataset, lengths, length_groups * batch_size, **settings))
    return StatefulDataLoader(dataset, sampler=sampler, **common)
