"""A run's recipe (`<run>/config.yaml`): written so that re-running it reproduces the run, and so that one override
of a value reaches every place the run used it; its local inputs checked before anything is built."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

RECIPE = "config.yaml"
RUN_FOLDER = "${hydra:runtime.output_dir}"  # the one value a recipe keeps open: a re-run writes a new folder
RESOLVER_CALL = re.compile(r"\$\{[\w.-]+:")  # `${oc.env:X}`, `${package_dir:...}`; a link `${teacher.x}` has no colon
LOCAL_INPUTS = ("name_or_path", "tokenizer")  # keys naming a model or tokenizer: a hub id or a local directory


def freeze_resolvers(node: DictConfig | ListConfig) -> None:
    """Replace, in place, every interpolation that calls a resolver (the environment, an installed package's
    folder, the time) with its value; links between nodes (`${teacher}`, `${paths.cache_dir}/latency`) stay."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            if RESOLVER_CALL.search(str(node._get_node(key)._value())):
                value = node[key]
                node[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
        elif isinstance(child := node._get_node(key), (DictConfig, ListConfig)):
            freeze_resolvers(child)


def recipe_text(cfg: DictConfig) -> str:
    """The run's recipe as YAML: every value stated once, where the config states it. Resolver calls are frozen
    to their values (a re-run does not depend on the environment); links between nodes are kept, so that
    `teacher.name_or_path=<new dir>` on a re-run also moves the supernet's teacher and every tokenizer; the run
    folder stays `${hydra:runtime.output_dir}` (and what lies below it `${paths.output_dir}/...`)."""
    recipe = cfg.copy()
    if "paths" in recipe and "output_dir" in recipe.paths:
        recipe.paths.output_dir = "__run_folder__"  # not a resolver call: kept open below
    freeze_resolvers(recipe)
    text = OmegaConf.to_yaml(recipe)
    return text.replace("output_dir: __run_folder__", f"output_dir: {RUN_FOLDER}")


def save_recipe(cfg: DictConfig, *dirs: str | Path) -> list[Path]:
    """Write the recipe (`recipe_text`) into each directory; returns the files written."""
    text = recipe_text(cfg)
    written = []
    for d in dirs:
        path = Path(d) / RECIPE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a resolved container."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        yield prefix, node
        return
    for key, value in items:
        yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))


def is_local_path(value: str) -> bool:
    """A value written as a path (`/x`, `./x`, `~/x`), not a hub id (`org/name`)."""
    return value.startswith(("/", ".", "~"))


def check_local_inputs(cfg: DictConfig) -> None:
    """Every model or tokenizer the config names by a local path (`*.name_or_path`, `*.tokenizer`) exists; else one
    error naming each missing key, so that a recipe re-run on another machine says which overrides it needs."""
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    missing = [(key, value) for key, value in _leaves(container)
               if key.rsplit(".", 1)[-1] in LOCAL_INPUTS and isinstance(value, str) and is_local_path(value)
               and not Path(value).expanduser().exists()]
    if missing:
        lines = "\n".join(f"  {key}={value}" for key, value in missing)
        raise FileNotFoundError(
            f"{len(missing)} setting(s) name a local model or tokenizer that does not exist:\n{lines}\n"
            f"Override each with an existing save_pretrained directory or a hub id (e.g. {missing[0][0]}=<dir>); "
            "in a recipe saved by this nas-bert, teacher.name_or_path moves every copy of the teacher's path")
