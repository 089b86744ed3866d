"""Hand-designed baselines for a searched student: the uniform BERT (L layers of MHA + FFN at one width H)
closest to it in parameters, or in measured latency, over a grid of depths and widths.

Depths span `layers` (e.g. 2-12) and widths go in head-dim steps up to the teacher's width, so a baseline
is not tied to 6 layers. A baseline more than `tolerance` away from its target is refused, naming the
closest one found (the grid or the target needs changing, not the comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from nas_bert.arch import Arch
from nas_bert.encoder import StudentEncoder, encoder_params
from nas_bert.modeling.students import uniform_arch
from nas_bert.nas.timing import time_calls


class BaselineError(ValueError):
    """No uniform BERT of the grid comes within the tolerance of the target."""


@dataclass(frozen=True)
class UniformBert:
    layers: int
    hidden: int
    blocks: int
    params: int
    latency_ms: float | None = None

    @property
    def arch(self) -> Arch:
        return uniform_arch(self.layers, self.hidden, self.blocks)

    def describe(self) -> str:
        latency = "" if self.latency_ms is None else f", {self.latency_ms:.2f} ms"
        return f"L{self.layers} H{self.hidden} ({self.params / 1e6:.2f}M parameters{latency})"


def blocks_for(layers: int, teacher_layers: int, teacher_blocks: int) -> int:
    """The most blocks (at most the teacher's) that a `layers`-deep model fills and the teacher's layers split into,
    so that the block-wise distillation terms see the same boundaries as for the searched student."""
    return max(b for b in range(1, min(layers, teacher_blocks) + 1) if teacher_layers % b == 0)


def uniform_grid(layers: Sequence[int], widths: Sequence[int], teacher_layers: int, teacher_blocks: int,
                 vocab_size: int, max_positions: int, ffn_ratio: int) -> list[UniformBert]:
    """Every (depth, width) of the grid with its analytic parameter count."""
    grid = []
    for depth in layers:
        blocks = blocks_for(depth, teacher_layers, teacher_blocks)
        for hidden in widths:
            params = encoder_params(uniform_arch(depth, hidden, blocks), vocab_size, max_positions, ffn_ratio=ffn_ratio)
            grid.append(UniformBert(depth, hidden, blocks, params))
    return grid


def check_within(found: UniformBert, value: float, target: float, tolerance: float, what: str) -> UniformBert:
    if abs(value - target) > tolerance * target:
        raise BaselineError(
            f"no uniform BERT of the grid is within {tolerance:.0%} of the target {what} {target:,.2f}; the closest "
            f"is {found.describe()}. Widen the grid (pipeline.baselines.layers / widths) or change the budget")
    return found


def closest_in_params(target: int, grid: Sequence[UniformBert], tolerance: float = 0.25) -> UniformBert:
    """The grid model whose parameter count is closest to `target` (ties: the shallower, then the narrower)."""
    best = min(grid, key=lambda m: (abs(m.params - target), m.layers, m.hidden))
    return check_within(best, best.params, target, tolerance, "parameters")


def closest_in_latency(target_ms: float, grid: Sequence[UniformBert], measure: Callable[[Arch], float],
                       tolerance: float = 0.25) -> UniformBert:
    """The grid model whose measured latency is closest to `target_ms`.

    Latency grows with the width at a fixed depth, so each depth is bisected over its widths and only the two
    widths around the target are kept: about log2(widths) + 2 measurements per depth instead of all of them.
    """
    cache: dict[tuple[int, int], float] = {}

    def latency(model: UniformBert) -> float:
        key = (model.layers, model.hidden)
        if key not in cache:
            cache[key] = measure(model.arch)
        return cache[key]

    finalists = []
    for depth in sorted({m.layers for m in grid}):
        row = sorted((m for m in grid if m.layers == depth), key=lambda m: m.hidden)
        lo, hi = 0, len(row) - 1
        while lo < hi:  # the first width at or above the target (or the widest)
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if latency(row[mid]) < target_ms else (lo, mid)
        finalists += [row[i] for i in {max(lo - 1, 0), lo}]
    timed = [UniformBert(m.layers, m.hidden, m.blocks, m.params, latency(m)) for m in finalists]
    best = min(timed, key=lambda m: (abs(m.latency_ms - target_ms), m.layers, m.hidden))
    return check_within(best, best.latency_ms, target_ms, tolerance, "latency (ms)")


def forward_call(encoder: torch.nn.Module, vocab_size: int, batch_size: int = 1,
                 seq_len: int = 128) -> Callable[[], None]:
    """A call running `encoder` (eval mode) on fixed (batch_size, seq_len) random ids on its device."""
    device = next(encoder.parameters()).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        ids = torch.randint(1, vocab_size, (batch_size, seq_len), device=device)  # (B, T)
    mask = torch.ones_like(ids)
    encoder.eval()

    def forward() -> None:
        encoder(input_ids=ids, attention_mask=mask)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return forward


def latencies_ms(calls: dict[str, Callable[[], None]], min_run_time: float = 0.5, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per call of each, timed side by side: round-robin, the least of `rounds` quiet medians."""
    seconds, _ = time_calls(list(calls.values()), min_run_time, rounds)
    return {name: 1000 * s for name, s in zip(calls, seconds)}


def encoder_latency_ms(encoder: torch.nn.Module, vocab_size: int, batch_size: int = 1, seq_len: int = 128,
                       min_run_time: float = 0.5) -> float:
    """The forward time of an encoder on (batch_size, seq_len) random ids in milliseconds, on its device."""
    return latencies_ms({"encoder": forward_call(encoder, vocab_size, batch_size, seq_len)}, min_run_time)["encoder"]


def arch_encoder(arch: Arch, vocab_size: int, max_positions: int, head_dim: int, ffn_ratio: int) -> StudentEncoder:
    """A freshly built encoder of `arch` (random weights: latency does not depend on them)."""
    return StudentEncoder(arch, vocab_size, max_positions, head_dim=head_dim, ffn_ratio=ffn_ratio)


def arch_latency_ms(arch: Arch, vocab_size: int, max_positions: int, head_dim: int, ffn_ratio: int,
                    batch_size: int = 1, seq_len: int = 128, min_run_time: float = 0.5) -> float:
    """The measured latency of a freshly built encoder of `arch` (on the CPU)."""
    encoder = arch_encoder(arch, vocab_size, max_positions, head_dim, ffn_ratio)
    return encoder_latency_ms(encoder, vocab_size, batch_size, seq_len, min_run_time)


def relative_latency(arch: Arch, reference: Arch, vocab_size: int, max_positions: int, head_dim: int,
                     ffn_ratio: int, batch_size: int = 1, seq_len: int = 128, min_run_time: float = 0.5) -> float:
    """The latency of `arch` over that of `reference`, the two timed side by side (round-robin): a machine busy
    with other work slows both, so the ratio holds where separate timings drift (small models the most)."""
    calls = {name: forward_call(arch_encoder(a, vocab_size, max_positions, head_dim, ffn_ratio), vocab_size,
                                batch_size, seq_len) for name, a in (("arch", arch), ("reference", reference))}
    ms = latencies_ms(calls, min_run_time)
    return ms["arch"] / ms["reference"]
