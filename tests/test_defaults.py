"""Each default is stated once: a key a config file gives one of our classes (a `_target_` under `nas_bert.`) equals
the class's own default, unless `RECIPE_CHANGES` names it; and a stage's `cfg.<key>.get(name, fallback)` falls back
to what the composed config holds. Lightning's, torch's and transformers' defaults are theirs: not checked."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.runs import CONF, ROOT, compose_config
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

# A dict argument whose keys are the keyword arguments of another callable.
KWARGS_OF = {
    ("nas_bert.lit.PretrainDistillation", "intermediate"): "nas_bert.distill.intermediate.IntermediateDistillation"}
# The values a config file deliberately sets apart from the class (file -> keys; "*": every key of a preset).
RECIPE_CHANGES = {
    "space/minilm.yaml": "*",  # presets: each file is one search space; the class's defaults are the paper's
    "space/tiny.yaml": "*",
    "space/nas_bert.yaml": {"name"},  # the paper's space: the class's defaults, under its name
    "teacher/minilm_l6.yaml": {"hub_id"},  # the Hub id of this teacher's local copy
    # 2 CPU cores: fewer scoring batches and warm-up epochs than the paper's K=5 and 3 (the class's defaults)
    "search/quick.yaml": {"shrinking.eval_batches", "shrinking.eval_batch_size", "shrinking.warmup_epochs"},
    # a machine setting, not the method: the classes load in the calling process, the recipes with 2 workers
    "data/corpus/base.yaml": {"num_workers"},
    "data/glue/default.yaml": {"num_workers"},
}


def targets(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """(dotted path, node) of every node with a `_target_` of ours, at any depth."""
    if not isinstance(node, DictConfig):
        return
    if str(node.get("_target_", "")).startswith("nas_bert."):
        yield path, node
    for key in node:
        yield from targets(node._get_node(key), f"{path}{key}.")


def plain(value: Any) -> Any:
    value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return list(value) if isinstance(value, tuple) else value


def disagreements(node: DictConfig, target: str, path: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, YAML value, code default) of each literal key of `node` that differs from `target`'s default."""
    parameters = inspect.signature(get_object(target)).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    for key in node:
        if key.startswith("_") or key == "defaults" or OmegaConf.is_missing(node, key):
            continue
        assert key in parameters or open_kwargs, f"{path}{key}: no parameter of {target}"
        if OmegaConf.is_interpolation(node, key) or key not in parameters:
            continue
        if (target, key) in KWARGS_OF and isinstance(node[key], DictConfig):
            yield from disagreements(node[key], KWARGS_OF[target, key], f"{path}{key}.")
            continue
        default = parameters[key].default
        if default is not inspect.Parameter.empty and plain(node[key]) != plain(default):
            yield f"{path}{key}", plain(node[key]), default


CONFIG_FILES = sorted(str(p.relative_to(CONF)) for p in CONF.rglob("*.yaml") if any(targets(OmegaConf.load(p))))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_a_config_names_our_classes_defaults_only_where_its_recipe_changes_them(name):
    allowed = RECIPE_CHANGES.get(name, set())
    found = [(key, value, default) for path, node in targets(OmegaConf.load(CONF / name))
             for key, value, default in disagreements(node, node._target_, path)
             if allowed != "*" and key not in allowed]
    assert not found, "\n".join(f"conf/{name}: {key} = {value!r} in the YAML, {default!r} in the code"
                                for key, value, default in found)


def test_the_recipe_changes_name_keys_that_differ():
    assert {"model/pretrain.yaml", "data/glue/default.yaml", "search/quick.yaml"} <= set(CONFIG_FILES)
    for name, keys in RECIPE_CHANGES.items():
        differ = {key for path, node in targets(OmegaConf.load(CONF / name))
                  for key, _, _ in disagreements(node, node._target_, path)}
        assert differ and (keys == "*" or keys <= differ), f"conf/{name}: {keys} in RECIPE_CHANGES, {differ} differ"


def test_the_pretraining_recipe_is_the_classes_defaults():
    """What the issue found apart: the representation terms, their losses and GLUE's length grouping."""
    from nas_bert.data.glue import GlueDataModule
    from nas_bert.distill.intermediate import IntermediateDistillation

    terms = inspect.signature(IntermediateDistillation).parameters
    assert {k: terms[k].default for k in ("hidden_weight", "hidden_loss", "embedding_weight", "embedding_loss")} == {
        "hidden_weight": 1.0, "hidden_loss": "relation", "embedding_weight": 1.0, "embedding_loss": "relation"}
    assert inspect.signature(GlueDataModule).parameters["group_by_length"].default is True


def fallbacks(source: Path) -> Iterator[tuple[int, str, Any]]:
    """(line, dotted key, fallback) of each `cfg.<a>.<b>.get("key", literal)` in a file."""
    for call in ast.walk(ast.parse(source.read_text())):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "get"
                and len(call.args) == 2 and all(isinstance(a, ast.Constant) for a in call.args)):
            continue
        parts, node = [call.args[0].value], call.func.value
        while isinstance(node, ast.Attribute):
            parts.insert(0, node.attr)
            node = node.value
        if isinstance(node, ast.Name) and node.id == "cfg":
            yield call.lineno, ".".join(parts), call.args[1].value


def test_the_stages_fall_back_to_what_the_config_holds(tmp_path):
    configs = {name: compose_config(name, tmp_path) for name in ("train", "search")}
    checked = []
    for source in sorted((ROOT / "nas_bert" / "stages").glob("*.py")):
        for line, key, fallback in fallbacks(source):
            for name, cfg in configs.items():
                value = OmegaConf.select(cfg, key, default="<absent>", throw_on_missing=False)
                if value != "<absent>":
                    checked.append(key)
                    assert value == fallback, (f"{source.relative_to(ROOT)}:{line}: falls back to {fallback!r} for "
                                               f"{key}, conf/{name}.yaml holds {value!r}")
    assert "float32_matmul_precision" in checked
