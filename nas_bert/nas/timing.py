"""How nas-bert times anything on a shared machine: the device a timing describes, and quiet medians.

`time_calls` times callables round-robin, each a median of `torch.utils.benchmark.Timer.blocked_autorange`
(which synchronises CUDA) at the process's thread count (the `Timer` default of one thread would silently measure
another device), and keeps only quiet timings:

Other processes on the machine only ever add time, and with several threads a
descheduled OpenMP worker stalls every parallel region (x10-x100 for small ops on a shared
2-core VM: a first benchmark run beside other jobs had a MAPE of 77 %). Every timing records
the share of the CPUs other processes used meanwhile (from /proc/stat); entries are retried
round-robin until they have `rounds` quiet timings (<= 10 %), and the least quiet median is
kept. A table that could not be measured quietly says so (`contention`, and a warning).

`device_info` and `device_slug` say what a timing depends on (device type and name, torch version, threads).
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark

QUIET_SHARE = 0.1  # a timing counts as quiet when other processes used at most this share of the CPUs


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or platform's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(device: str | torch.device) -> dict[str, Any]:
    """What a latency depends on: device type and name, torch version, threads (CPU only)."""
    dev = torch.device(device)
    info: dict[str, Any] = {"type": dev.type, "torch": torch.__version__}
    if dev.type == "cuda":
        info["name"] = torch.cuda.get_device_name(dev)
    elif dev.type == "cpu":
        info["name"] = cpu_model()
        info["num_threads"] = torch.get_num_threads()
    else:
        info["name"] = dev.type
    return info


def torch_minor(version: str) -> str:
    """'2.13.0+cpu' -> '2.13'."""
    return ".".join(version.split("+")[0].split(".")[:2])


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device: str | torch.device) -> str:
    """A file-name-safe device id, e.g. 'cpu-amd-epyc-2t' or 'cuda-nvidia-h100-80gb-hbm3'."""
    info = device_info(device)
    name = f"{info['type']}-{slug(info['name'])}"
    return f"{name}-{info['num_threads']}t" if "num_threads" in info else name


def median_seconds(fn: Callable[[], Any], min_run_time: float, warmup: int = 3) -> float:
    """Median seconds per call of `fn` after `warmup` calls, at the current thread count."""
    for _ in range(warmup):
        fn()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return float(timer.blocked_autorange(min_run_time=min_run_time).median)


def _cpu_seconds() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the machine since boot, steal included; None without /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - ticks[3] - ticks[4]) / hz, sum(ticks) / hz  # idle and iowait are not busy


def timed_with_contention(fn: Callable[[], Any], min_run_time: float) -> tuple[float, float]:
    """(median seconds per call, share of all CPUs that other processes used meanwhile).

    The share is 0.0 where it cannot be told: no /proc/stat, or a window under 0.2 CPU-seconds
    (the kernel counts in 10 ms ticks).
    """
    before, own = _cpu_seconds(), time.process_time()
    seconds = median_seconds(fn, min_run_time)
    after, own = _cpu_seconds(), time.process_time() - own
    if before is None or after is None or after[1] - before[1] < 0.2:
        return seconds, 0.0
    return seconds, max(0.0, (after[0] - before[0] - own) / (after[1] - before[1]))


def time_calls(fns: list[Callable[[], Any]], min_run_time: float = 0.2, rounds: int = 3,
               max_rounds: int | None = None) -> tuple[list[float], list[float]]:
    """Seconds per call of each fn and the contention it was timed under, round-robin, no_grad.

    Each fn gets `rounds` medians; a median counts as quiet when other processes used at most
    QUIET_SHARE of the CPUs meanwhile. Interference only ever adds time (and with several threads
    a descheduled worker stalls every parallel region, easily x10 for small ops), so fns lacking
    `rounds` quiet medians are retried in further round-robin passes, up to `max_rounds` (default
    3 * rounds), spreading the tries over time. The result is the least quiet median, else the
    least median (its contention tells how far to trust it). Returns (seconds, contention).
    """
    max_rounds = max(rounds, max_rounds if max_rounds is not None else 3 * rounds)
    quiet: list[list[float]] = [[] for _ in fns]
    loud: list[list[tuple[float, float]]] = [[] for _ in fns]
    with torch.no_grad():
        for r in range(max_rounds):
            todo = [i for i in range(len(fns)) if r < rounds or len(quiet[i]) < rounds]
            for i in todo:
                seconds, share = timed_with_contention(fns[i], min_run_time)
                if share <= QUIET_SHARE:
                    quiet[i].append(seconds)
                else:
                    loud[i].append((seconds, share))
    return ([min(q) if q else min(loud[i])[0] for i, q in enumerate(quiet)],
            [0.0 if q else min(loud[i])[1] for i, q in enumerate(quiet)])
