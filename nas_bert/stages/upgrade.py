"""Recipes saved by an older nas-bert run again: the config keys and classes it renamed are renamed in place."""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

RENAMED_KEYS = {  # renamed after nas-bert 0.1: one name per idea in every DataModule
    "seq_len": "max_seq_length", "max_train_sequences": "max_train_samples", "max_val_sequences": "max_eval_samples"}
RENAMED_TARGETS = {  # classes renamed or moved after nas-bert 0.1
    "nas_bert.teacher.Teacher": "nas_bert.teacher.FrozenTeacher",
    "nas_bert.search.shrinking.ProgressiveShrinking": "nas_bert.nas.shrinking.ProgressiveShrinking"}


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
OLD_INTERMEDIATE = {"hidden_loss": "mse", "embedding_weight": 0.0}  # 0.1's terms: projected states by MSE, no embedding


def upgrade_objective(cfg: DictConfig) -> None:
    """A pre-training recipe saved before `model.objective` existed keeps its loss: the prediction loss, plus its
    intermediate terms (`both`) when it had a hidden-state weight, computed as 0.1 did (`OLD_INTERMEDIATE`)."""
    model = cfg.get("model")
    if model is None or model.get("_target_") != PRETRAIN_MODULE or "objective" in model:
        return
    with open_dict(model):
        model.objective = "both" if (model.get("intermediate") or {}).get("hidden_weight") else "prediction"
        if model.get("intermediate") is not None:
            for key, value in OLD_INTERMEDIATE.items():
                model.intermediate.setdefault(key, value)
    log.warning("config from nas-bert 0.1: model.objective=%s (the loss it was saved with)", model.objective)


LINKED_GROUPS = ("teacher", "space")  # `model.<group>` is `${<group>}` in every config that has it


def relink_copies(cfg: DictConfig) -> None:
    """A recipe saved fully resolved (nas-bert 0.1) holds `model.teacher` and `model.space` as copies of `teacher`
    and `space`, which an override of `teacher.*` would not reach: they become links again (`${teacher}`)."""
    model = cfg.get("model")
    for group in LINKED_GROUPS:
        if not isinstance(model, DictConfig) or group not in model or group not in cfg:
            continue
        copy, source = model._get_node(group), cfg._get_node(group)
        if OmegaConf.is_interpolation(model, group) or not isinstance(copy, DictConfig):
            continue
        if copy.get("_target_") == source.get("_target_"):
            model[group] = f"${{{group}}}"
            log.warning("config from nas-bert 0.1: model.%s was a resolved copy of %s; linked to it", group, group)


def upgrade_version(cfg: DictConfig) -> None:
    """A recipe saved before `recipe_version` existed (nas-bert 0.2 and older) is version 1: a setting whose meaning
    changed since (`student.init=auto`, nas_bert.stages.pretrain.AUTO_RULES) keeps the meaning it ran with."""
    if "recipe_version" in cfg:
        return
    with open_dict(cfg):
        cfg.recipe_version = 1
    if (cfg.get("student") or {}).get("init") == "auto":
        log.warning("config from nas-bert 0.2 or older (no recipe_version): student.init=auto keeps its rule then "
                    "(the supernet when the search kept one, else teacher_embeddings)")


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """`cfg` with its recipe version stated, 0.1's classes and `data` keys renamed (`RENAMED_TARGETS`,
    `RENAMED_KEYS`), its copies of the teacher and space linked to their groups, and its pre-training objective made
    explicit, in place."""
    upgrade_version(cfg)
    upgrade_targets(cfg)
    relink_copies(cfg)
    upgrade_objective(cfg)
    data = cfg.get("data")
    old = [key for key in RENAMED_KEYS if data is not None and key in data]
    with open_dict(cfg):
        for key in old:
            if RENAMED_KEYS[key] in data:
                raise ValueError(f"data.{key} and data.{RENAMED_KEYS[key]} are both set: keep data.{RENAMED_KEYS[key]}")
            data[RENAMED_KEYS[key]] = data.pop(key)
    if old:
        renamed = ", ".join(f"data.{k} -> data.{RENAMED_KEYS[k]}" for k in old)
        log.warning("config from nas-bert 0.1: renamed %s", renamed)
    return cfg
