"""Deprecation warnings our dependencies raise at each other on every run, filtered narrowly: each by its message,
category and the module it is attributed to, so the same warning from our code, or any other one, still shows."""

from __future__ import annotations

import warnings

# (message regex, category, module regex) of each filtered warning; re.match'ed, so each anchors at the start
DEPENDENCY_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # torchdata's StatefulDataLoader calls torch.set_vital (a no-op torch deprecated) in its __init__
    (r"'set_vital' is deprecated, please do not call", UserWarning,
     r"torchdata\.stateful_dataloader\.stateful_dataloader\Z"),
    # Lightning's _tree_flatten (moving batches, logging) builds torch.utils._pytree.LeafSpec, which torch deprecated
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"lightning\.pytorch\.utilities\._pytree\Z"),
)


def quiet_dependency_warnings() -> None:
    """Ignore the `DEPENDENCY_WARNINGS`; called by the entry points (train.py, search.py), not on import."""
    for message, category, module in DEPENDENCY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
