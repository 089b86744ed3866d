"""The architecture schema: the one small, JSON-serialisable description of a NAS-BERT model.

Every stage speaks it: the search space enumerates it, the supernet trains it, the search
scores it, the student models are built from it. An architecture is a list of blocks; a
block has one hidden size and a fixed number of slots, each holding one op. Identity may
only fill the end of a block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MHA, FFN, IDENTITY = "mha", "ffn", "identity"
SEPCONV_PREFIX = "sepconv"


class ArchitectureError(ValueError):
    """An architecture description that is malformed or does not fit a search space."""


def sepconv_kernel(op: str) -> int:
    """Kernel size of a `sepconv<k>` op name."""
    return int(op[len(SEPCONV_PREFIX):])


def is_known_op(op: str) -> bool:
    """True for mha, ffn, identity and sepconv<k> with an odd kernel k >= 1."""
    if op in (MHA, FFN, IDENTITY):
        return True
    if op.startswith(SEPCONV_PREFIX) and op[len(SEPCONV_PREFIX):].isdigit():
        return sepconv_kernel(op) % 2 == 1
    return False


def _split_layer_token(token: str) -> tuple[str, int | None]:
    """'ffn_256' -> ('ffn', 256); 'ffn' -> ('ffn', None)."""
    op, sep, width = token.rpartition("_")
    if sep and width.isdigit():
        return op, int(width)
    return token, None


@dataclass(frozen=True)
class BlockArch:
    """One block: a hidden size shared by all its slots and one op per slot."""

    hidden: int
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if not isinstance(self.hidden, int) or self.hidden <= 0:
            raise ArchitectureError(f"block hidden size must be a positive integer, got {self.hidden!r}")
        if not self.ops:
            raise ArchitectureError("a block needs at least one slot (ops is empty)")
        for slot, op in enumerate(self.ops):
            if not is_known_op(op):
                raise ArchitectureError(
                    f"slot {slot}: unknown op {op!r}; known ops are mha, ffn, sepconv<k> (odd k, e.g. sepconv3) "
                    f"and identity"
                )
        if all(op == IDENTITY for op in self.ops):
            raise ArchitectureError(f"block {self.ops} is all identity; a block needs at least one real op")
        first_identity = self.ops.index(IDENTITY) if IDENTITY in self.ops else len(self.ops)
        if any(op != IDENTITY for op in self.ops[first_identity:]):
            raise ArchitectureError(
                f"identity may only fill the end of a block, got {list(self.ops)}; "
                f"move the identity ops after the last real op"
            )

    @property
    def depth(self) -> int:
        """Number of non-identity ops."""
        return sum(op != IDENTITY for op in self.ops)

    @property
    def layers(self) -> list[str]:
        """Per-slot names with the width, e.g. ['mha_256', 'ffn_256', 'identity']."""
        return [op if op == IDENTITY else f"{op}_{self.hidden}" for op in self.ops]

    def to_dict(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "block") -> BlockArch:
        """Read {'hidden': 256, 'ops': [...]}; ops may carry their width ('ffn_256'), which must match."""
        if not isinstance(data, dict) or "ops" not in data:
            raise ArchitectureError(f"{where}: expected a mapping with 'hidden' and 'ops', got {data!r}")
        ops, widths = [], set()
        for token in data["ops"]:
            op, width = _split_layer_token(str(token))
            ops.append(op)
            if width is not None and op != IDENTITY:
                widths.add(width)
        hidden = data.get("hidden")
        if hidden is not None:
            widths.add(int(hidden))
        if len(widths) > 1:
            raise ArchitectureError(
                f"{where} mixes hidden sizes {sorted(widths)}; all ops of a block share one hidden size "
                f"(put ops of another width in another block)"
            )
        if not widths:
            raise ArchitectureError(f"{where}: no hidden size given; add 'hidden: <int>'")
        try:
            return cls(hidden=widths.pop(), ops=tuple(ops))
        except ArchitectureError as err:
            raise ArchitectureError(f"{where}: {err}") from None


@dataclass(frozen=True)
class Arch:
    """A whole model: its blocks in order and the embedding size (None: the first block's hidden)."""

    blocks: tuple[BlockArch, ...]
    embed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if not self.blocks:
            raise ArchitectureError("an architecture needs at least one block")

    @property
    def embed_size(self) -> int:
        return self.embed if self.embed is not None else self.blocks[0].hidden

    @property
    def layers(self) -> list[str]:
        return [layer for block in self.blocks for layer in block.layers]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"embed": self.embed, "blocks": [b.to_dict() for b in self.blocks]}
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        if not isinstance(data, dict) or not isinstance(data.get("blocks"), (list, tuple)):
            raise ArchitectureError(f"expected a mapping with a 'blocks' list, got {type(data).__name__}")
        blocks = tuple(BlockArch.from_dict(b, where=f"block {i}") for i, b in enumerate(data["blocks"]))
        return cls(blocks=blocks, embed=data.get("embed"), meta=dict(data.get("meta") or {}))

    def save(self, path: str | Path) -> Path:
        """Write YAML (or JSON for a .json suffix)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = (
            json.dumps(self.to_dict(), indent=2)
            if path.suffix == ".json"
            else yaml.safe_dump(self.to_dict(), sort_keys=False)
        )
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Arch:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"architecture file {path} does not exist; `search.py` writes them")
        try:
            data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as err:
            raise ArchitectureError(f"{path} is not valid YAML/JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except ArchitectureError as err:
            raise ArchitectureError(f"{path}: {err}") from None
