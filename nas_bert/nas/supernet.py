"""The supernet: every slot holds all its candidate ops; a path through it is one architecture.

Block n maps the teacher state Y_{n-1} (teacher width D) through an input projection to the
block's hidden size, through its ops, and back to width D with an output projection (one pair
of projections per hidden size). `sample` / `set_active` choose a path, `extract` copies a
path's weights into a standalone `BlockStack` holding nothing else.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from nas_bert.arch import IDENTITY, Arch, BlockArch
from nas_bert.ops import build_op, build_projection, init_weights
from nas_bert.space import SearchSpace


class PathBlock(nn.Module):
    """One block of one path: (B, T, D) -> hidden -> ops -> (B, T, D)."""

    def __init__(self, block: BlockArch, in_proj: nn.Module, layers: Sequence[nn.Module], out_proj: nn.Module):
        super().__init__()
        self.arch = block
        self.in_proj = in_proj
        self.layers = nn.ModuleList(layers)
        self.out_proj = out_proj

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.in_proj(x)  # (B, T, hidden)
        for layer in self.layers:
            h = layer(h, mask)
        return self.out_proj(h)  # (B, T, D)


class BlockStack(nn.Module):
    """An extracted path: N standalone blocks, each usable alone or chained."""

    def __init__(self, arch: Arch, blocks: Sequence[PathBlock]):
        super().__init__()
        self.arch = arch
        self.blocks = nn.ModuleList(blocks)

    def forward_block(self, n: int, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.blocks[n](x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Chain every block from Y_0: the whole assembled student body, (B, T, D) -> (B, T, D)."""
        for block in self.blocks:
            x = block(x, mask)
        return x


class SupernetBlock(nn.Module):
    """All candidate ops of one block: per slot one module per (op, hidden size)."""

    def __init__(self, space: SearchSpace, teacher_hidden: int, dropout: float = 0.0):
        super().__init__()
        self.in_proj = nn.ModuleDict({str(h): build_projection(teacher_hidden, h) for h in space.hidden_sizes})
        self.out_proj = nn.ModuleDict({str(h): build_projection(h, teacher_hidden) for h in space.hidden_sizes})
        self.slots = nn.ModuleList(
            nn.ModuleDict(
                {
                    f"{op}_{h}": build_op(op, h, space.head_dim, space.ffn_ratio, dropout)
                    for h in space.hidden_sizes
                    for op in space.ops
                }
            )
            for _ in range(space.slots_per_block)
        )

    def _layers(self, block: BlockArch) -> list[nn.Module]:
        return [self.slots[i][f"{op}_{block.hidden}"] for i, op in enumerate(block.ops) if op != IDENTITY]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, block: BlockArch) -> torch.Tensor:
        h = self.in_proj[str(block.hidden)](x)  # (B, T, hidden)
        for layer in self._layers(block):
            h = layer(h, mask)
        return self.out_proj[str(block.hidden)](h)  # (B, T, D)

    def extract(self, block: BlockArch) -> PathBlock:
        """A deep copy of exactly the weights on `block`'s path."""
        key = str(block.hidden)
        layers = [copy.deepcopy(m) for m in self._layers(block)]
        return PathBlock(block, copy.deepcopy(self.in_proj[key]), layers, copy.deepcopy(self.out_proj[key]))


class Supernet(nn.Module):
    """N supernet blocks over a search space, for a teacher of width `teacher_hidden`."""

    def __init__(self, space: SearchSpace, teacher_hidden: int, dropout: float = 0.0, init_std: float = 0.02):
        super().__init__()
        self.space = space
        self.teacher_hidden = teacher_hidden
        self.blocks = nn.ModuleList(
            SupernetBlock(space, teacher_hidden, dropout) for _ in range(space.num_blocks)
        )
        self.apply(lambda m: init_weights(m, init_std))
        self._active: Arch | None = None

    # -- choosing a path -----------------------------------------------------------------------
    def sample(self, rng: np.random.Generator, alive: list[np.ndarray] | None = None) -> Arch:
        """One architecture, each block uniform over its alive candidates (all when None)."""
        return self.space.sample(rng, alive)

    def set_active(self, arch: Arch) -> None:
        self._active = self.space.validate(arch)

    @property
    def active(self) -> Arch:
        if self._active is None:
            raise RuntimeError("no active architecture: call set_active(arch) or pass arch explicitly")
        return self._active

    # -- running a path ------------------------------------------------------------------------
    def forward_block(
        self, n: int, x: torch.Tensor, mask: torch.Tensor | None = None, block: BlockArch | None = None
    ) -> torch.Tensor:
        """Block n of the active (or given) path on Y_{n-1}: (B, T, D) -> (B, T, D)."""
        return self.blocks[n](x, mask, block if block is not None else self.active.blocks[n])

    def forward(
        self, inputs: Sequence[torch.Tensor], mask: torch.Tensor | None = None, arch: Arch | None = None
    ) -> list[torch.Tensor]:
        """Every block on its own input: inputs[n] = Y_n (n < N) -> predictions of Y_{n+1}."""
        arch = arch if arch is not None else self.active
        return [self.blocks[n](inputs[n], mask, arch.blocks[n]) for n in range(self.space.num_blocks)]

    def extract(self, arch: Arch | None = None) -> BlockStack:
        """A standalone copy of the path's weights (and nothing else)."""
        arch = self.space.validate(arch if arch is not None else self.active)
        return BlockStack(arch, [blk.extract(b) for blk, b in zip(self.blocks, arch.blocks)])
