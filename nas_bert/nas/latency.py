"""The latency lookup table: every op at every width measured once on the target device.

This module owns the `LatencyTable` (measure, save, load, compatibility check) and the latency
predictions built from it. A model's predicted latency (seconds, one forward of a batch) is the
sum of its parts:

* the `Embeddings` module at the model's embedding size (word/position/type lookups, LayerNorm),
* every width projection (a Linear at the start of a block whose width differs from the
  previous block's, or from the embedding size for block 0),
* every op of every block (MHA / FFN / SepConv at the block's width; identity costs 0).

It excludes task heads (pooler, classifier, MLM head: they belong to the downstream task, not to
the searched encoder; add them separately where a budget includes them) and the Python glue of
`StudentEncoder.forward` / `StudentBlock.forward` (not an op of the space; its cost is part of
the residual below). Per-op module-call overhead *is* included: each part is timed as real
module calls.

How parts are timed (`measure_latency_table`): eval mode, `torch.no_grad()` (inference latency),
the table's (batch, seq_len), a mask of ones passed to the ops, BERT initialisation as in
`StudentEncoder`, a warm-up, then the median of `torch.utils.benchmark.Timer.blocked_autorange`
(which synchronises CUDA) at the process's thread count (the `Timer` default of one thread would
silently measure another device). Two measures make the sum track whole models:

* chains: one timed call runs `chain` (default 4) distinct copies of an op, each on the previous
  one's output, as a model does. A single module timed in a loop keeps its weights cache-hot,
  which in a model they are not (the other layers evict them). On a 2-thread AMD EPYC VM, in
  paired runs, this took the batch-8 MAPE from 7.5 % to 5.1 % (max error 23 % -> 9 %); at batch 1
  it changes little (7.2 % -> 6.5 %).
* quiet timings (`nas_bert.nas.timing.time_calls`): entries are retried round-robin until they
  have `rounds` timings during which other processes used at most 10 % of the CPUs, and the least quiet
  median is kept. A table that could not be measured quietly says so (`contention`, and a warning).

What remains (benchmarks/latency_prediction.py, MiniLM space, 24 students of 2-11 M params,
2 threads, parts and models timed in the same passes): MAPE 4.9 % at batch 8 and 5.9 % at
batch 1. The sum underestimates whole models nearly uniformly (measured ~ 1.06 x predicted at
batch 1, residual < 1 % after that factor); no per-op or per-block constant fits it, so it is
left as is: it does not change the ranking of architectures, and budgets set from a predicted
reference latency see the same factor. At batch 8 the largest ops (FFN/MHA at width 256) also
vary run to run by up to ~1.5x (the same op, freshly allocated, in another process), which
gives single models errors up to ~15-20 %.

A table is only valid for the device, thread count, torch version (major.minor), search space and
(batch, seq_len) it was measured with; `check_compatible` refuses any mismatch and
`load_or_measure` never silently mixes tables.
"""

from __future__ import annotations

import datetime as _dt
import json
import warnings
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_bert.arch import IDENTITY, Arch
from nas_bert.encoder import Embeddings
from nas_bert.nas.timing import QUIET_SHARE, device_info, device_slug, slug, time_calls, torch_minor
from nas_bert.ops import build_op, build_projection, init_weights
from nas_bert.space import SearchSpace

TABLE_VERSION = 1
_DEVICE_KEYS = ("type", "name", "num_threads")


class LatencyTableError(ValueError):
    """A latency table that is malformed or was measured for another space, device or input shape."""


# -- keys --------------------------------------------------------------------------------------
def op_key(op: str, hidden: int) -> str:
    """'mha', 128 -> 'mha_128'."""
    return f"{op}_{hidden}"


def projection_key(width_in: int, width_out: int) -> str:
    """128, 192 -> '128->192'."""
    return f"{width_in}->{width_out}"


def default_table_path(directory: str | Path, space: SearchSpace, device: str | torch.device,
                       batch_size: int, seq_len: int) -> Path:
    """Tables are keyed by space, device and input shape: `latency_<space>_<device>_b<B>_t<T>.json`."""
    name = f"latency_{slug(space.name)}_{device_slug(device)}_b{batch_size}_t{seq_len}.json"
    return Path(directory) / name


# -- the table ---------------------------------------------------------------------------------
@dataclass
class LatencyTable:
    """Median seconds of every op at every width, every width projection and every embedding size."""

    device: dict[str, Any]
    space: dict[str, Any]
    batch_size: int
    seq_len: int
    vocab_size: int
    max_positions: int
    ops: dict[str, float]  # "mha_128" -> s
    projections: dict[str, float]  # "128->192" -> s
    embeddings: dict[str, float]  # "128" -> s
    chain: int = 1  # copies of each part run per timed call (see part_calls); 1 in tables of before chains
    contention: float | None = None  # largest other-process CPU share during a kept timing; None: not recorded
    measured_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat())
    version: int = TABLE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> Path:
        """Write the table as JSON (parents created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: Any, where: str = "latency table") -> LatencyTable:
        if not isinstance(data, dict):
            raise LatencyTableError(f"{where}: expected a JSON object, got {type(data).__name__}")
        version = data.get("version")
        if version != TABLE_VERSION:
            raise LatencyTableError(
                f"{where} has version {version!r} but this code reads version {TABLE_VERSION}; "
                f"measure a new table (delete the file or pass remeasure: true)"
            )
        required = {k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING
                    and f.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise LatencyTableError(f"{where} lacks the fields {missing}; measure a new table")
        for name in ("ops", "projections", "embeddings"):
            part = data[name]
            if not isinstance(part, dict) or not all(isinstance(v, (int, float)) for v in part.values()):
                raise LatencyTableError(f"{where}: '{name}' must map names to seconds, got {part!r:.200}")
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table written by `save`; clear errors for a missing, malformed or outdated file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"latency table {path} does not exist; measure one with measure_latency_table(...) "
                f"or load_or_measure(...)"
            )
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise LatencyTableError(
                f"latency table {path} is not valid JSON ({err}); delete it or pass remeasure: true"
            ) from None
        return cls.from_dict(data, where=f"latency table {path}")


# -- measuring ---------------------------------------------------------------------------------
def _chain_call(modules: list[torch.nn.Module], x: torch.Tensor, mask: torch.Tensor | None) -> Callable[[], Any]:
    """Run `modules` (same-width ops) one after another, each on the previous one's output."""
    for module in modules:
        module.eval()

    def run() -> torch.Tensor:
        y = x
        for module in modules:
            y = module(y, mask)
        return y

    return run


def _fanout_call(modules: list[torch.nn.Module], *args: torch.Tensor) -> Callable[[], Any]:
    """Run every module on the same inputs (for parts whose output does not fit their input)."""
    for module in modules:
        module.eval()
    return lambda: [module(*args) for module in modules]


def _prepared(module: torch.nn.Module, dev: torch.device) -> torch.nn.Module:
    module.apply(init_weights)  # as StudentEncoder does
    return module.to(dev)


def part_calls(space: SearchSpace, device: str | torch.device, batch_size: int = 8, seq_len: int = 128,
               vocab_size: int = 30522, max_positions: int = 512,
               chain: int = 4) -> dict[tuple[str, str], Callable[[], Any]]:
    """('ops' | 'projections' | 'embeddings', key) -> a call running `chain` copies of that part.

    Ops are chained output to input, as in a model, so their weights are not all cache-hot as in
    a one-module loop; projections run side by side on one input; the one embedding module (a
    vocab-sized table) runs `chain` times.
    """
    dev = torch.device(device)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long, device=dev)  # (B, T), as the data gives
    ids = torch.randint(1, vocab_size, (batch_size, seq_len), device=dev)  # (B, T)
    calls = {}
    for h in space.hidden_sizes:
        x = torch.randn(batch_size, seq_len, h, device=dev)  # (B, T, h)
        for op in space.ops:
            copies = [_prepared(build_op(op, h, space.head_dim, space.ffn_ratio, 0.0), dev) for _ in range(chain)]
            calls["ops", op_key(op, h)] = _chain_call(copies, x, mask)
        for h_out in space.hidden_sizes:
            if h_out != h:
                copies = [_prepared(build_projection(h, h_out), dev) for _ in range(chain)]
                calls["projections", projection_key(h, h_out)] = _fanout_call(copies, x)
        embeddings = _prepared(Embeddings(vocab_size, h, max_positions), dev)
        calls["embeddings", str(h)] = _fanout_call([embeddings] * chain, ids)
    return calls


def assemble_table(space: SearchSpace, device: str | torch.device, keys: list[tuple[str, str]],
                   seconds: list[float], contention: list[float], *, batch_size: int, seq_len: int,
                   vocab_size: int, max_positions: int, chain: int) -> LatencyTable:
    """The table from `time_calls` results for the calls of `part_calls` (in its order), per copy.

    Warns, naming them, about entries never timed quietly.
    """
    parts: dict[str, dict[str, float]] = {"ops": {}, "projections": {}, "embeddings": {}}
    for (part, key), s in zip(keys, seconds):
        parts[part][key] = s / chain
    loud = [f"{key} ({share:.0%})" for (_, key), share in zip(keys, contention) if share > QUIET_SHARE]
    if loud:
        warnings.warn(
            f"latency table for space {space.name!r}: {len(loud)} of {len(keys)} entries were only ever timed while "
            f"other processes used the CPUs ({', '.join(loud[:8])}{', ...' if len(loud) > 8 else ''}); their "
            f"times are likely too high. Measure again on an idle machine (remeasure: true)",
            stacklevel=3,
        )
    return LatencyTable(device=device_info(device), space=space.to_dict(), batch_size=batch_size, seq_len=seq_len,
                        vocab_size=vocab_size, max_positions=max_positions, chain=chain,
                        contention=max(contention, default=0.0), **parts)


def measure_latency_table(space: SearchSpace, device: str | torch.device = "cpu", batch_size: int = 8,
                          seq_len: int = 128, vocab_size: int = 30522, max_positions: int = 512,
                          min_run_time: float = 0.2, rounds: int = 3,
                          max_rounds: int | None = None, chain: int = 4) -> LatencyTable:
    """Time every op x width, every ordered pair of distinct widths and every embedding size.

    Each timed call runs `chain` freshly initialised copies of the part (see `part_calls`); the
    entry is the call's time / chain. Each entry is the least of `rounds` quiet medians (see
    `time_calls`); `contention` records the worst other-process CPU share among the kept timings,
    with a warning when it is above QUIET_SHARE.
    """
    # Random inputs and weights come from a forked RNG: measuring (or reading a cached table) leaves the
    # run's random stream, and so its training trajectory, unchanged.
    cuda = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        calls = part_calls(space, device, batch_size, seq_len, vocab_size, max_positions, chain)
        seconds, contention = time_calls(list(calls.values()), min_run_time, rounds, max_rounds)
    return assemble_table(space, device, list(calls), seconds, contention, batch_size=batch_size, seq_len=seq_len,
                          vocab_size=vocab_size, max_positions=max_positions, chain=chain)


# -- compatibility -----------------------------------------------------------------------------
def _space_mismatch(table: LatencyTable, space: SearchSpace) -> list[str]:
    """Fields (name excluded: a label) where the table's space differs from `space`."""
    ours = space.to_dict()
    theirs = dict(table.space)
    return [
        f"{k}: table {theirs.get(k)!r} vs {ours.get(k)!r}"
        for k in sorted(set(ours) | set(theirs))
        if k != "name" and theirs.get(k) != ours.get(k)
    ]


def _device_mismatch(table: LatencyTable, device: str | torch.device) -> list[str]:
    ours, theirs = device_info(device), dict(table.device)
    out = [f"{k}: table {theirs.get(k)!r} vs {ours.get(k)!r}" for k in _DEVICE_KEYS if theirs.get(k) != ours.get(k)]
    if torch_minor(str(theirs.get("torch", ""))) != torch_minor(ours["torch"]):
        out.append(f"torch: table {theirs.get('torch')!r} vs {ours['torch']!r}")
    return out


def check_compatible(table: LatencyTable, space: SearchSpace, device: str | torch.device,
                     batch_size: int | None = None, seq_len: int | None = None,
                     vocab_size: int | None = None) -> None:
    """Raise LatencyTableError naming every mismatch of space, device or input shape (None: unchecked)."""
    problems = [f"space {p}" for p in _space_mismatch(table, space)]
    problems += [f"device {p}" for p in _device_mismatch(table, device)]
    for name, want in (("batch_size", batch_size), ("seq_len", seq_len), ("vocab_size", vocab_size)):
        if want is not None and getattr(table, name) != want:
            problems.append(f"{name}: table {getattr(table, name)!r} vs {want!r}")
    if problems:
        raise LatencyTableError(
            f"the latency table (space {table.space.get('name')!r}, measured {table.measured_at}) does not fit "
            f"this run: " + "; ".join(problems) + ". Measure a new table with "
            f"measure_latency_table(space, device={str(device)!r}, batch_size=..., seq_len=...), "
            f"or pass remeasure: true to replace it"
        )


def load_or_measure(path: str | Path, space: SearchSpace, device: str | torch.device = "cpu",
                    batch_size: int = 8, seq_len: int = 128, vocab_size: int = 30522,
                    max_positions: int = 512, min_run_time: float = 0.2, rounds: int = 3,
                    max_rounds: int | None = None, chain: int = 4, remeasure: bool = False) -> LatencyTable:
    """Load a compatible table from `path`, or measure and save one when the file is missing.

    An incompatible or unreadable table is refused with LatencyTableError unless `remeasure`, in
    which case it is measured afresh and overwritten. A compatible table is reused, except that
    `remeasure` also replaces one measured under contention or without a contention record
    (which otherwise only warns).
    """
    path = Path(path)
    if path.exists():
        try:
            table = LatencyTable.load(path)
            check_compatible(table, space, device, batch_size, seq_len, vocab_size)
        except LatencyTableError as err:
            if not remeasure:
                raise LatencyTableError(str(err) if str(path) in str(err) else f"{path}: {err}") from None
        else:
            if table.contention is not None and table.contention <= QUIET_SHARE:
                return table
            if not remeasure:
                how = ("without a record of other processes' CPU use" if table.contention is None
                       else f"while other processes used {table.contention:.0%} of the CPUs")
                warnings.warn(f"{path} was measured {how}; its times may be too high. Pass remeasure: true "
                              f"on an idle machine to replace it", stacklevel=2)
                return table
    table = measure_latency_table(space, device, batch_size, seq_len, vocab_size, max_positions, min_run_time,
                                  rounds, max_rounds, chain)
    table.save(path)
    return table


# -- predictions (seconds) ---------------------------------------------------------------------
def _lookup(part: dict[str, float], key: str, what: str) -> float:
    try:
        return float(part[key])
    except KeyError:
        raise LatencyTableError(
            f"the latency table has no {what} {key!r}; it was measured for another space (measure a new table)"
        ) from None


def op_latency_matrix(space: SearchSpace, table: LatencyTable) -> np.ndarray:
    """Seconds of op code j at hidden index i, shape (H, K + 1); the identity column is 0."""
    out = np.zeros((len(space.hidden_sizes), len(space.ops) + 1))
    for i, h in enumerate(space.hidden_sizes):
        for j, op in enumerate(space.ops):
            out[i, j] = _lookup(table.ops, op_key(op, h), "op")
    return out


def candidate_latency(space: SearchSpace, table: LatencyTable) -> np.ndarray:
    """Summed op seconds of every block candidate (no projection), shape (num_candidates,)."""
    per_op = op_latency_matrix(space, table)  # (H, K + 1)
    hidden_index = np.searchsorted(space.hidden_sizes, space.candidate_hidden)  # (C,)
    return per_op[hidden_index[:, None], space.candidate_codes].sum(axis=1)  # (C, S) -> (C,)


def projection_latency_matrix(space: SearchSpace, table: LatencyTable) -> np.ndarray:
    """Seconds of the projection from width i to width j, shape (H, H); 0 on the diagonal."""
    widths = space.hidden_sizes
    out = np.zeros((len(widths), len(widths)))
    for i, a in enumerate(widths):
        for j, b in enumerate(widths):
            if a != b:
                out[i, j] = _lookup(table.projections, projection_key(a, b), "projection")
    return out


def embedding_latency(space: SearchSpace, table: LatencyTable) -> np.ndarray:
    """Seconds of the embeddings at each width of the space, shape (H,)."""
    return np.array([_lookup(table.embeddings, str(h), "embedding size") for h in space.hidden_sizes])


def predict_latency(arch: Arch, table: LatencyTable, space: SearchSpace) -> float:
    """Seconds of `StudentEncoder(arch)`: embeddings + projections + every block's ops."""
    space.validate(arch)
    total = _lookup(table.embeddings, str(arch.embed_size), "embedding size")
    width = arch.embed_size
    for block in arch.blocks:
        if block.hidden != width:
            total += _lookup(table.projections, projection_key(width, block.hidden), "projection")
        total += sum(_lookup(table.ops, op_key(op, block.hidden), "op") for op in block.ops if op != IDENTITY)
        width = block.hidden
    return total
