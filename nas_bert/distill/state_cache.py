"""The teacher's hidden states of training sequences, computed once and kept on disk.

With a representation-only objective the inputs are not masked, so what the teacher says about a sequence
never changes: every student of a study (and every epoch past the first, and every re-run of a sweep)
can read it instead of running the teacher again. The teacher's forward costs more than a small
student's training step, so this is what makes large token budgets affordable on a CPU.

Every layer's states are kept (0 .. L), so any student, whatever its blocks, and any term (block boundaries,
attention scores and MiniLM relations, whose q / k / v are computed from a layer's input) reads the same rows.
Layout of a cache folder (one per teacher and sequence length; keyed by content, so any corpus and any order
hit the same rows):
* `states.npy`: (capacity, L + 1, T, D) float16 memory map;
* `keys.bin`: one uint64 per filled row, in row order (a row's key is written after its states, so a run
  killed mid-write leaves at worst a row that is recomputed).
Each process of a multi-process run keeps its own folder (`rank<r>of<w>`).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

KEY_DTYPE = np.dtype("<u8")


def sequence_keys(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[int]:
    """A 64-bit content key per row of (B, T) ids (and mask): equal rows, equal keys."""
    ids = input_ids.detach().to("cpu", torch.int64).numpy()
    mask = None if attention_mask is None else attention_mask.detach().to("cpu", torch.int8).numpy()
    keys = []
    for b in range(ids.shape[0]):
        digest = hashlib.blake2b(ids[b].tobytes(), digest_size=8)
        if mask is not None and not mask[b].all():
            digest.update(mask[b].tobytes())
        keys.append(int.from_bytes(digest.digest(), "little"))
    return keys


def cache_spec(directory: str | None, max_gib: float, name_or_path: str, layers: int, hidden: int, seq_len: int,
               sequences: int) -> dict | None:
    """{"dir", "capacity"} of the cache of a teacher (`layers` + 1 states of width `hidden`) for `sequences`
    sequences of `seq_len` tokens, at most `max_gib` (float16); None when `directory` is null. One folder per
    teacher (its resolved path and config) and sequence length, so every run of that teacher shares it."""
    from nas_bert.teacher import resolve_model_path

    if not directory:
        return None
    resolved = Path(resolve_model_path(name_or_path))
    identity = (resolved / "config.json").read_bytes() if (resolved / "config.json").is_file() else b""
    digest = hashlib.sha256(str(resolved).encode() + identity).hexdigest()[:8]
    name = re.sub(r"[^A-Za-z0-9]+", "-", name_or_path).strip("-")[-80:]
    row_bytes = (layers + 1) * seq_len * hidden * 2  # float16
    capacity = min(sequences, int(float(max_gib) * 2**30 // row_bytes))
    return {"dir": str(Path(directory) / f"{name}-{digest}-t{seq_len}"), "capacity": max(capacity, 1)}


class TeacherStateCache:
    """Hidden states of `layers` (len(layers), T, D) of up to `capacity` sequences of length `seq_len`, on disk.

    `lookup(input_ids, attention_mask, compute)` returns {layer: (B, T, D)} for `layers`, reading
    cached rows and running `compute` (the teacher) only on the rows it has not seen; new rows are stored
    while there is room. Sequences of another length are computed and not stored.
    """

    @classmethod
    def for_rank(cls, spec: dict, rank: int, world: int, layers: int, seq_len: int, hidden: int) -> TeacherStateCache:
        """The cache of `spec` (`cache_spec`) for one process of a `world`-process run: its own folder, every one
        of the teacher's `layers` + 1 states."""
        return cls(Path(spec["dir"]) / f"rank{rank}of{world}", list(range(layers + 1)), seq_len, hidden,
                   int(spec["capacity"]))

    def __init__(self, directory: str | Path, layers: list[int], seq_len: int, hidden: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the teacher state cache needs a capacity of at least 1 sequence, got {capacity}")
        self.directory, self.layers, self.seq_len, self.hidden = Path(directory), list(layers), seq_len, hidden
        self.directory.mkdir(parents=True, exist_ok=True)
        shape = (capacity, len(self.layers), seq_len, hidden)
        path = self.directory / "states.npy"
        existing = np.load(path, mmap_mode="r") if path.is_file() else None
        if existing is not None and existing.shape[1:] == shape[1:] and existing.shape[0] >= capacity:
            self.states = np.load(path, mmap_mode="r+")
        else:  # a new cache, or one of another shape / too small: start again
            if existing is not None:
                log.warning("teacher state cache %s holds %s, this run needs %s: rebuilding it", path,
                            existing.shape, shape)
            del existing
            self.states = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
            (self.directory / "keys.bin").write_bytes(b"")
        self.keys_file = self.directory / "keys.bin"
        raw = self.keys_file.read_bytes() if self.keys_file.is_file() else b""
        stored = np.frombuffer(raw[: len(raw) // 8 * 8], dtype=KEY_DTYPE)
        self.rows: dict[int, int] = {int(k): i for i, k in enumerate(stored)}
        self.filled = len(stored)
        self.hits = self.misses = 0
        gib = self.states.nbytes / 2**30
        log.info("teacher state cache %s: %d of %d sequences filled (%.1f GiB on disk)", self.directory,
                 self.filled, len(self.states), gib)

    @property
    def capacity(self) -> int:
        return len(self.states)

    def lookup(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               compute: Callable[[torch.Tensor], dict[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
        """{layer: (B, T, D) float32} for the batch; `compute(rows)` runs the teacher on the missing rows (R,)."""
        b, t = input_ids.shape
        keys = sequence_keys(input_ids, attention_mask)
        cached = [self.rows.get(k) if t == self.seq_len else None for k in keys]
        missing = [i for i, row in enumerate(cached) if row is None]
        self.hits += b - len(missing)
        self.misses += len(missing)
        out = torch.empty((len(self.layers), b, t, self.hidden), dtype=torch.float32)  # (layers, B, T, D)
        present = [i for i, row in enumerate(cached) if row is not None]
        if present:
            rows = np.asarray([cached[i] for i in present])
            out[:, present] = torch.from_numpy(self.states[rows].astype(np.float32)).transpose(0, 1)
        if missing:
            fresh = compute(torch.tensor(missing, device=input_ids.device))
            # float16 as stored: a step sees the same states whether they were computed now or read back, so a
            # run (and a resumed one) does not depend on what the cache already holds
            computed = torch.stack([fresh[layer].cpu().half().float() for layer in self.layers])  # (layers, R, T, D)
            out[:, missing] = computed
            self.store([keys[i] for i in missing], computed, t)
        return {layer: out[n].to(input_ids.device) for n, layer in enumerate(self.layers)}

    def store(self, keys: list[int], states: torch.Tensor, seq_len: int) -> None:
        """Write the rows of `states` (layers, R, T, D) under `keys`, while there is room."""
        if seq_len != self.seq_len:
            return
        new = [(j, k) for j, k in enumerate(keys) if k not in self.rows][: self.capacity - self.filled]
        if not new:
            return
        start = self.filled
        self.states[start: start + len(new)] = states[:, [j for j, _ in new]].transpose(0, 1).numpy()
        self.states.flush()
        with self.keys_file.open("ab") as f:
            f.write(np.asarray([k for _, k in new], dtype=KEY_DTYPE).tobytes())
        for offset, (_, key) in enumerate(new):
            self.rows[key] = start + offset
        self.filled += len(new)

    def hit_rate(self) -> float:
        seen = self.hits + self.misses
        return self.hits / seen if seen else 0.0
