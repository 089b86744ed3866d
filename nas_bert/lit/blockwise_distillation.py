"""`SupernetDistillation`: block-wise knowledge distillation of a NAS-BERT supernet (stage 1).

Each step runs the frozen teacher once (Y_0..Y_N), samples its paths (`nas_bert.nas.sampling`: one uniform path
by default, as the paper) and trains block n of each to map Y_{n-1} to Y_n (masked MSE); the loss is the sum over
blocks and paths. Paths are drawn from a generator seeded by (seed, global step) alone, so every DDP rank and every
micro-batch of an accumulated step trains the same paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.distill import masked_mse
from nas_bert.distill.state_cache import TeacherStateCache
from nas_bert.lit.optim import configure_optimization
from nas_bert.nas.sampling import SAMPLINGS, sample_paths
from nas_bert.nas.supernet import Supernet
from nas_bert.space import SearchSpace
from nas_bert.teacher import FrozenTeacher
from nas_bert.utils.batch import SUMMARY_SEQ_LEN

Batch = dict[str, torch.Tensor]
CHECKPOINT_KEY = "nas_bert"


class SupernetDistillation(L.LightningModule):
    """Trains a `Supernet` over `space` to reproduce the teacher's block outputs."""

    def __init__(
        self,
        space: SearchSpace,
        teacher: FrozenTeacher,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        dropout: float = 0.0,
        seed: int = 0,
        reference_arch: dict[str, Any] | None = None,
        sampling: str = "uniform",
        paths_per_step: int = 1,
        teacher_cache: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["space", "teacher", "optimizer", "scheduler"], logger=False)
        if space.num_blocks != teacher.num_blocks:
            raise ArchitectureError(
                f"space has {space.num_blocks} blocks but the teacher was cut into {teacher.num_blocks}; "
                f"set teacher.num_blocks: ${{space.num_blocks}}"
            )
        if sampling not in SAMPLINGS or paths_per_step < 1 or (sampling == "sandwich" and paths_per_step < 2):
            raise ValueError(f"model.sampling={sampling!r}, model.paths_per_step={paths_per_step}: sampling is one of "
                             f"{', '.join(SAMPLINGS)}, paths_per_step >= 1 (sandwich: >= 2; fair: one per op)")
        self.sampling, self.paths_per_step = sampling, paths_per_step
        # {"dir", "capacity"} (nas_bert.distill.state_cache.cache_spec): the teacher's training states kept on disk
        self.teacher_cache_spec = dict(teacher_cache) if teacher_cache else None
        self.teacher_cache: TeacherStateCache | None = None
        self.space = space
        self.supernet = Supernet(space, teacher.hidden_size, dropout=dropout)
        self.teacher = teacher  # a FrozenTeacher is no nn.Module: outside the module tree
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.seed = seed
        self.reference = space.validate(Arch.from_dict(reference_arch) if reference_arch else space.reference_arch())
        # Candidate indices each block may sample from (None: all); progressive shrinking narrows them.
        self.alive: list[np.ndarray] | None = None
        self.last_arch: Arch | None = None  # the (first) path trained by the latest step
        self.flops_per_batch = 0  # analytic FLOPs of the last step's path (read by ThroughputMonitor)
        states = [torch.zeros(1, SUMMARY_SEQ_LEN, teacher.hidden_size)] * space.num_blocks  # one sequence: the
        self.example_input_array = (states, torch.ones(1, SUMMARY_SEQ_LEN, dtype=torch.long))  # summary's FLOPs

    def forward(self, states: list[torch.Tensor], mask: torch.Tensor) -> list[torch.Tensor]:
        """The reference path's blocks, each on its teacher input state Y_{n-1} (B, T, D)."""
        return self.supernet(states, mask, self.reference)

    # -- helpers -------------------------------------------------------------------------------
    def teacher_states(self, batch: Batch, train: bool = False) -> list[torch.Tensor]:
        """Y_0..Y_N from the frozen teacher, each (B, T, D); training batches read the state cache when it is on
        (float16 as stored, whether computed now or read back)."""
        if not (train and self.teacher_cache_spec):
            return self.teacher.block_states(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        if self.teacher_cache is None:  # opened at the first step: the sequence length is the batch's
            self.teacher_cache = TeacherStateCache.for_rank(
                self.teacher_cache_spec, self.global_rank, self.trainer.world_size if self._trainer else 1,
                self.teacher.num_layers, batch["input_ids"].shape[1], self.teacher.hidden_size)

        def compute(rows: torch.Tensor) -> dict[int, torch.Tensor]:
            sub = {k: v[rows] for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            return dict(enumerate(self.teacher.hidden_states(**sub)))

        states = self.teacher_cache.lookup(batch["input_ids"], batch["attention_mask"], compute)
        return [states[n * self.teacher.layers_per_block] for n in range(self.space.num_blocks + 1)]

    def sample_paths(self) -> list[Arch]:
        """The paths of this optimizer step: a pure function of (seed, global step) and the alive candidates."""
        rng = np.random.default_rng([self.seed, self.global_step])
        return sample_paths(self.space, self.sampling, rng, self.alive, self.paths_per_step)

    def block_losses(self, batch: Batch, arch: Arch, states: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Masked MSE of every block of `arch` against the teacher's next state (`states`: Y_0..Y_N when already
        computed for this batch)."""
        states = self.teacher_states(batch) if states is None else states
        mask = batch["attention_mask"]
        preds = self.supernet(states[:-1], mask, arch)
        return [masked_mse(pred, target, mask) for pred, target in zip(preds, states[1:])]

    @torch.no_grad()
    def score_block(
        self, n: int, block: BlockArch, states: list[list[torch.Tensor]], masks: list[torch.Tensor]
    ) -> float:
        """Mean block-n loss of one candidate over fixed batches (states[i] = Y_0..Y_N of batch i)."""
        losses = [
            masked_mse(self.supernet.forward_block(n, ys[n], mask, block), ys[n + 1], mask)
            for ys, mask in zip(states, masks)
        ]
        return float(torch.stack(losses).mean())

    @torch.no_grad()
    def score_model(self, arch: Arch, states: list[list[torch.Tensor]], masks: list[torch.Tensor]) -> float:
        """Whole-model loss: the path's blocks chained from Y_0, against the teacher's last state Y_N."""
        losses = []
        for ys, mask in zip(states, masks):
            x = ys[0]
            for n, block in enumerate(arch.blocks):
                x = self.supernet.forward_block(n, x, mask, block)
            losses.append(masked_mse(x, ys[-1], mask))
        return float(torch.stack(losses).mean())

    @torch.no_grad()
    def reference_states(self, batches: list[Batch]) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        """Teacher states and masks of fixed batches, on this module's device (for scoring)."""
        batches = [{k: v.to(self.device) for k, v in b.items()} for b in batches]
        return [self.teacher_states(b) for b in batches], [b["attention_mask"] for b in batches]

    def _path_flops(self, arch: Arch, batch: Batch, train: bool) -> int:
        """The path's ops on the batch (`block_flops`), 3x when training (forward + backward); the teacher and the
        blocks' width projections are not counted."""
        b, t = batch["input_ids"].shape
        return (3 if train else 1) * b * sum(self.space.block_flops(block, t) for block in arch.blocks)

    # -- Lightning hooks -----------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        paths = self.sample_paths()
        self.last_arch = paths[0]
        states = self.teacher_states(batch, train=True)  # once, for every path
        losses = torch.stack([torch.stack(self.block_losses(batch, arch, states)) for arch in paths])  # (paths, N)
        self.flops_per_batch = sum(self._path_flops(arch, batch, train=True) for arch in paths)
        per_path = losses.detach().mean(dim=0)
        self.log("train/loss", per_path.sum(), prog_bar=True)  # per path, as with one path per step
        path_params = [sum(self.space.block_params(b) for b in arch.blocks) for arch in paths]
        self.log("train/path_params", float(np.mean(path_params)))
        for n, mse in enumerate(per_path):
            self.log(f"train/block{n}_mse", mse)
        if self.teacher_cache is not None:
            self.log("train/teacher_cache_hit_rate", self.teacher_cache.hit_rate())
        return losses.sum()

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses = self.block_losses(batch, self.reference)
        self.flops_per_batch = self._path_flops(self.reference, batch, train=False)
        self.log("val/loss", torch.stack(losses).sum(), prog_bar=True, sync_dist=True)
        for n, mse in enumerate(losses):
            self.log(f"val/block{n}_mse", mse, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimization(self.supernet, self.trainer, self.optimizer_factory, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "space": self.space.to_dict(),
            "teacher": self.teacher.name_or_path,
            "teacher_hidden": self.teacher.hidden_size,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            raise ArchitectureError("this checkpoint was not written by SupernetDistillation (no 'nas_bert' entry)")
        check_same_space(SearchSpace.from_dict(saved["space"]), self.space, saved.get("teacher_hidden"),
                         self.teacher.hidden_size)


def check_same_space(saved: SearchSpace, current: SearchSpace, saved_width: int | None, width: int) -> None:
    """Refuse a checkpoint trained over another space or for a teacher of another width."""
    if saved != current:
        diff = {k: (v, current.to_dict()[k]) for k, v in saved.to_dict().items() if v != current.to_dict()[k]}
        raise ArchitectureError(
            f"checkpoint space {saved.name!r} differs from the configured space {current.name!r} in "
            f"{', '.join(f'{k}: {a} != {b}' for k, (a, b) in diff.items() if k != 'name')}; "
            f"use the space the supernet was trained with (space={saved.name})"
        )
    if saved_width is not None and saved_width != width:
        raise ArchitectureError(
            f"checkpoint was trained for a teacher of width {saved_width}, the configured teacher has {width}"
        )

