"""One function per pipeline stage; entry points compose a config and call one of these."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from nas_bert.stages.finetune import run_finetune
from nas_bert.stages.fit import run_fit
from nas_bert.stages.pretrain import run_pretrain
from nas_bert.stages.ptq import run_ptq
from nas_bert.stages.search import run_search

# `search` is search.py's stage; the others are train.py's `stage=` choices
STAGES: dict[str, Callable[[DictConfig], dict[str, Any]]] = {
    "search": run_search, "pretrain": run_pretrain, "finetune": run_finetune, "fit": run_fit,
    "ptq": run_ptq}
