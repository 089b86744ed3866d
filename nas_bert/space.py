"""The search space: which ops and widths a block may use, every block candidate, and its cost.

Candidates of a block are enumerated once, in a fixed order (hidden size, then depth, then
ops in lexicographic order), as integer arrays; parameter and FLOP counts are analytic and
vectorised over all candidates. `index_of` and `candidate` convert between an index and a
`BlockArch` without searching.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from nas_bert.arch import FFN, IDENTITY, MHA, Arch, ArchitectureError, BlockArch, is_known_op, sepconv_kernel

PAPER_OPS = (MHA, FFN, "sepconv3", "sepconv5", "sepconv7")


def op_params(op: str, hidden: int, ffn_ratio: int = 4) -> int:
    """Parameters of one op at one width, its post-LN LayerNorm included."""
    h = hidden
    if op == IDENTITY:
        return 0
    if op == MHA:  # fused qkv (3h^2 + 3h) + output (h^2 + h) + LayerNorm (2h)
        return 4 * h * h + 6 * h
    if op == FFN:  # h -> r*h -> h with biases + LayerNorm
        return 2 * ffn_ratio * h * h + ffn_ratio * h + 3 * h
    # sepconv: depthwise (k*h + h) + pointwise (h^2 + h) + LayerNorm (2h)
    return h * h + (sepconv_kernel(op) + 4) * h


def op_flops(op: str, hidden: int, seq_len: int, ffn_ratio: int = 4) -> int:
    """Matmul/conv FLOPs (2 per multiply-add) of one op on one sequence; norms and activations omitted."""
    h, t = hidden, seq_len
    if op == IDENTITY:
        return 0
    if op == MHA:  # qkv + output projections, then QK^T and attention @ V
        return 8 * t * h * h + 4 * t * t * h
    if op == FFN:
        return 4 * ffn_ratio * t * h * h
    return 2 * t * h * sepconv_kernel(op) + 2 * t * h * h


def projection_params(width_in: int, width_out: int) -> int:
    """A width projection is a Linear with bias, or nothing when the widths match."""
    return 0 if width_in == width_out else width_in * width_out + width_out


def projection_flops(width_in: int, width_out: int, seq_len: int) -> int:
    return 0 if width_in == width_out else 2 * seq_len * width_in * width_out


@dataclass(frozen=True)
class SearchSpace:
    """N blocks of S slots; each slot one of `ops` (or identity at a block's end) at the block's width."""

    hidden_sizes: tuple[int, ...]
    ops: tuple[str, ...] = PAPER_OPS
    num_blocks: int = 4
    slots_per_block: int = 6
    head_dim: int = 64
    ffn_ratio: int = 4
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.hidden_sizes or list(self.hidden_sizes) != sorted(set(self.hidden_sizes)):
            raise ArchitectureError(f"hidden_sizes must be non-empty, unique, ascending: {self.hidden_sizes}")
        for op in self.ops:
            if op == IDENTITY:
                raise ArchitectureError("do not list identity in ops: it is always allowed at a block's end")
            if not is_known_op(op):
                raise ArchitectureError(f"unknown op {op!r} in the space; use mha, ffn or sepconv<odd k>")
        if len(set(self.ops)) != len(self.ops) or not self.ops:
            raise ArchitectureError(f"ops must be non-empty and unique: {self.ops}")
        if MHA in self.ops:
            bad = [h for h in self.hidden_sizes if h % self.head_dim]
            if bad:
                raise ArchitectureError(f"hidden sizes {bad} are not multiples of head_dim={self.head_dim}")
        if self.num_blocks < 1 or self.slots_per_block < 1:
            raise ArchitectureError("num_blocks and slots_per_block must be >= 1")

    # -- serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_sizes"], d["ops"] = list(self.hidden_sizes), list(self.ops)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        return cls(**{k: v for k, v in data.items() if k != "_target_"})

    # -- enumeration ---------------------------------------------------------------------------
    @property
    def identity_code(self) -> int:
        """The op code of identity in `codes` arrays (the other ops are 0..len(ops)-1)."""
        return len(self.ops)

    @property
    def num_candidates(self) -> int:
        """Candidates per block: H * sum_{L=1..S} K^L (K real ops, identity only at the end)."""
        k = len(self.ops)
        return len(self.hidden_sizes) * sum(k**depth for depth in range(1, self.slots_per_block + 1))

    @cached_property
    def _per_hidden(self) -> int:
        return self.num_candidates // len(self.hidden_sizes)

    @cached_property
    def _depth_offsets(self) -> np.ndarray:
        """Index of the first candidate of each depth within one hidden size; shape (S + 1,)."""
        k = len(self.ops)
        return np.concatenate([[0], np.cumsum([k**d for d in range(1, self.slots_per_block + 1)])])

    @cached_property
    def candidate_hidden(self) -> np.ndarray:
        """Hidden size of every candidate, shape (num_candidates,)."""
        return np.repeat(np.array(self.hidden_sizes, dtype=np.int64), self._per_hidden)

    @cached_property
    def candidate_codes(self) -> np.ndarray:
        """Op code per slot of every candidate, shape (num_candidates, S), int8; identity = identity_code."""
        k, s = len(self.ops), self.slots_per_block
        per_depth = []
        for depth in range(1, s + 1):
            real = np.indices((k,) * depth).reshape(depth, -1).T  # (k^depth, depth), lexicographic
            pad = np.full((real.shape[0], s - depth), self.identity_code)
            per_depth.append(np.concatenate([real, pad], axis=1))
        one_hidden = np.concatenate(per_depth).astype(np.int8)  # (per_hidden, S)
        codes = np.tile(one_hidden, (len(self.hidden_sizes), 1))
        codes.setflags(write=False)
        return codes

    @cached_property
    def candidate_depth(self) -> np.ndarray:
        """Number of real (non-identity) ops of every candidate, shape (num_candidates,)."""
        return (self.candidate_codes != self.identity_code).sum(axis=1)

    def candidate(self, index: int) -> BlockArch:
        """The block candidate at `index` of the enumeration."""
        if not 0 <= index < self.num_candidates:
            raise IndexError(f"candidate index {index} outside [0, {self.num_candidates})")
        names = (*self.ops, IDENTITY)
        return BlockArch(
            hidden=int(self.candidate_hidden[index]),
            ops=tuple(names[c] for c in self.candidate_codes[index]),
        )

    def index_of(self, block: BlockArch) -> int:
        """Inverse of `candidate`; raises ArchitectureError for a block outside the space."""
        self.validate_block(block)
        k = len(self.ops)
        real = [self.ops.index(op) for op in block.ops if op != IDENTITY]
        within_depth = 0
        for code in real:
            within_depth = within_depth * k + code
        h = self.hidden_sizes.index(block.hidden)
        return h * self._per_hidden + int(self._depth_offsets[len(real) - 1]) + within_depth

    # -- validation ----------------------------------------------------------------------------
    def validate_block(self, block: BlockArch, where: str = "block") -> None:
        if block.hidden not in self.hidden_sizes:
            raise ArchitectureError(
                f"{where}: hidden size {block.hidden} is not in the space {self.name!r} "
                f"(choose one of {list(self.hidden_sizes)})"
            )
        if len(block.ops) != self.slots_per_block:
            raise ArchitectureError(
                f"{where} has {len(block.ops)} slots but the space {self.name!r} has {self.slots_per_block} "
                f"per block (pad the end with identity)"
            )
        unknown = sorted({op for op in block.ops if op != IDENTITY and op not in self.ops})
        if unknown:
            slot = next(i for i, op in enumerate(block.ops) if op in unknown)
            raise ArchitectureError(
                f"{where}, slot {slot}: ops {unknown} are not in the space {self.name!r} "
                f"(allowed: {list(self.ops)} + identity)"
            )

    def validate(self, arch: Arch) -> Arch:
        """Check that `arch` lies in this space; returns it unchanged."""
        if len(arch.blocks) != self.num_blocks:
            raise ArchitectureError(
                f"architecture has {len(arch.blocks)} blocks but the space {self.name!r} has {self.num_blocks}"
            )
        for i, block in enumerate(arch.blocks):
            self.validate_block(block, where=f"block {i}")
        return arch

    # -- analytic costs ------------------------------------------------------------------------
    def _per_op_table(self, cost) -> np.ndarray:
        """cost(op, hidden) for every (hidden index, op code); identity column is 0. Shape (H, K + 1)."""
        table = np.zeros((len(self.hidden_sizes), len(self.ops) + 1), dtype=np.int64)
        for i, h in enumerate(self.hidden_sizes):
            for j, op in enumerate(self.ops):
                table[i, j] = cost(op, h)
        return table

    def _hidden_index(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.hidden_sizes)), self._per_hidden)

    @cached_property
    def candidate_params(self) -> np.ndarray:
        """Parameters of every candidate's ops (no width projections), shape (num_candidates,)."""
        table = self._per_op_table(lambda op, h: op_params(op, h, self.ffn_ratio))
        return table[self._hidden_index()[:, None], self.candidate_codes].sum(axis=1)

    def candidate_flops(self, seq_len: int = 128) -> np.ndarray:
        """FLOPs of every candidate's ops on one sequence of `seq_len` tokens, shape (num_candidates,)."""
        table = self._per_op_table(lambda op, h: op_flops(op, h, seq_len, self.ffn_ratio))
        return table[self._hidden_index()[:, None], self.candidate_codes].sum(axis=1)

    def block_params(self, block: BlockArch) -> int:
        return sum(op_params(op, block.hidden, self.ffn_ratio) for op in block.ops)

    def block_flops(self, block: BlockArch, seq_len: int = 128) -> int:
        return sum(op_flops(op, block.hidden, seq_len, self.ffn_ratio) for op in block.ops)

    # -- convenient architectures --------------------------------------------------------------
    def reference_block(self) -> BlockArch:
        """A fixed BERT-like block (MHA/FFN alternating at the largest width) for comparable curves."""
        pattern = [op for op in (MHA, FFN) if op in self.ops] or [self.ops[0]]
        ops = tuple(pattern[i % len(pattern)] for i in range(self.slots_per_block))
        return BlockArch(hidden=self.hidden_sizes[-1], ops=ops)

    def reference_arch(self) -> Arch:
        return Arch(blocks=tuple(self.reference_block() for _ in range(self.num_blocks)))

    def sample_index(self, rng: np.random.Generator, alive: np.ndarray | None = None) -> int:
        """A candidate index drawn uniformly from `alive` (all candidates when None)."""
        if alive is None:
            return int(rng.integers(self.num_candidates))
        if len(alive) == 0:
            raise ValueError("no candidate is alive in this block; nothing to sample")
        return int(alive[rng.integers(len(alive))])

    def sample(self, rng: np.random.Generator, alive: list[np.ndarray] | None = None) -> Arch:
        """One architecture, each block drawn uniformly from its alive candidates."""
        return Arch(
            blocks=tuple(
                self.candidate(self.sample_index(rng, None if alive is None else alive[n]))
                for n in range(self.num_blocks)
            )
        )
