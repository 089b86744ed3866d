"""The one way tests run a stage: compose the config as the entry point does and call the stage function in
process; or, where the process boundary is the point (SIGKILL, the pipeline, DDP spawn), run the entry script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
GLUE = ROOT / "tests" / "fixtures" / "glue"
SQUAD = ROOT / "tests" / "fixtures" / "squad" / "dev-v1.1-sample.json"
# budgets a search over the tiny space on the tiny teacher can meet (its vocabulary dominates its size)
TINY_BUDGETS = ("search.selection.budgets=[{name: debug_40pct, max_params_fraction: 0.4},"
                "{name: debug_90pct, max_params_fraction: 0.9}]")


def tiny(teacher_dir: Path, cache_dir: Path, *overrides: str) -> list[str]:
    """Overrides of a fast run on the tiny teacher and space, with CSV logs only."""
    return ["debug=fast", "space=tiny", "logger=csv", f"teacher.name_or_path={teacher_dir}", "teacher.hub_id=null",
            f"paths.cache_dir={cache_dir}", *overrides]


def compose_config(config: str, run_dir: Path, *overrides: str, log_dir: Path | None = None,
                   config_dir: Path = CONF) -> DictConfig:
    """`config` (search / train, or a saved run's `config`) composed with `overrides`, writing into `run_dir`;
    what runs share (`paths.log_dir`: fine-tuning summaries, `search/latest`) goes to `log_dir` (default: beside)."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config, overrides=[f"paths.output_dir={run_dir}", f"paths.log_dir={log_dir or run_dir.parent}",
                                          *overrides])


def run_stage(stage: Callable[[DictConfig], dict[str, Any]], config: str, run_dir: Path, *overrides: str,
              log_dir: Path | None = None, config_dir: Path = CONF) -> dict[str, Any]:
    """Compose and run one stage in this process; returns what the stage returns."""
    run_dir.mkdir(parents=True, exist_ok=True)
    return stage(compose_config(config, run_dir, *overrides, log_dir=log_dir, config_dir=config_dir))


def run_script(script: str, cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python <script> <args>` from the repository, offline, with tests/ importable (fault-injection callbacks) and
    this process's thread count (its results are then bitwise comparable with an in-process run's)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("WANDB_SERVICE", None)  # its own W&B service, as a user's process has (not this process's, if any)
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
