"""Recipes saved by an older nas-bert run again: the config keys and classes it renamed are renamed in place."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, ListConfig, open_dict

log = logging.getLogger(__name__)

RENAMED_KEYS = {  # nas-bert 0.1 -> 0.2: one name per idea in every DataModule
    "seq_len": "max_seq_length", "max_train_sequences": "max_train_samples", "max_val_sequences": "max_eval_samples"}
RENAMED_TARGETS = {"nas_bert.teacher.Teacher": "nas_bert.teacher.FrozenTeacher"}  # nas-bert 0.1 -> 0.2


def upgrade_targets(node: Any) -> None:
    """Rewrite in place every `_target_` that nas-bert renamed, at any depth."""
    if isinstance(node, DictConfig):
        if node.get("_target_") in RENAMED_TARGETS:
            node._target_ = RENAMED_TARGETS[node._target_]
        for _, value in node.items_ex(resolve=False):
            upgrade_targets(value)
    elif isinstance(node, ListConfig):
        for value in node:
            upgrade_targets(value)


PRETRAIN_MODULE = "nas_bert.lit.PretrainDistillation"


def upgrade_objective(cfg: DictConfig) -> None:
    """A pre-training recipe saved before `model.objective` existed keeps its loss: the prediction loss, plus its
    intermediate terms (`both`) when it had a hidden-state weight."""
    model = cfg.get("model")
    if model is None or model.get("_target_") != PRETRAIN_MODULE or "objective" in model:
        return
    with open_dict(model):
        model.objective = "both" if (model.get("intermediate") or {}).get("hidden_weight") else "prediction"
    log.warning("config from nas-bert 0.1: model.objective=%s (the loss it was saved with)", model.objective)


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """`cfg` with 0.1's classes and `data` keys renamed (`RENAMED_TARGETS`, `RENAMED_KEYS`) and its pre-training
    objective made explicit, in place."""
    upgrade_targets(cfg)
    upgrade_objective(cfg)
    data = cfg.get("data")
    old = [key for key in RENAMED_KEYS if data is not None and key in data]
    with open_dict(cfg):
        for key in old:
            if RENAMED_KEYS[key] in data:
                raise ValueError(f"data.{key} and data.{RENAMED_KEYS[key]} are both set: keep data.{RENAMED_KEYS[key]}")
            data[RENAMED_KEYS[key]] = data.pop(key)
    if old:
        log.warning("config from nas-bert 0.1: renamed %s", ", ".join(f"data.{k} -> data.{RENAMED_KEYS[k]}" for k in old))
    return cfg
