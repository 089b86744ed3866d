"""Independent pipeline steps side by side (`pipeline.workers`): long-lived worker processes share the CPU cores,
each step runs in one of them. On 2 cores, two 1-thread fine-tunings of a small student finish sooner than the
same two one after the other on 2 threads (docs/BENCHMARKS.md): a small model's kernels do not keep two threads
busy."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import TypeVar

log = logging.getLogger(__name__)
Item = TypeVar("Item")


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def start_worker(threads: int, start_method: str) -> None:
    """In each worker: its share of the cores (for torch here and for any process it starts), INFO logging, and
    the pipeline's start method for the processes it starts (DataLoader workers: a spawned one re-imports torch)."""
    multiprocessing.set_start_method(start_method, force=True)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(process)d][%(name)s][%(levelname)s] - %(message)s")


def run_side_by_side(items: Sequence[Item], run_one: Callable[[Item], object], workers: int) -> None:
    """`run_one(item)` for every item, on `workers` spawned processes with `cores // workers` threads each (in this
    process, one after the other, for a single worker or item). `run_one` must be picklable (a module-level
    function or a partial of one). The first failure cancels the items not started yet, waits for the running
    ones (their results are kept), and is raised here."""
    if workers <= 1 or len(items) <= 1:
        for item in items:
            run_one(item)
        return
    threads = max(1, usable_cores() // workers)
    log.info("%d steps on %d workers of %d thread(s)", len(items), workers, threads)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker,
                             initargs=(threads, multiprocessing.get_start_method())) as pool:
        futures = [pool.submit(run_one, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in done if f.exception() is not None), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            raise failed.exception()
