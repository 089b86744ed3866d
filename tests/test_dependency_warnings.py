"""The dependency warnings filtered by the entry points: exactly those messages, from those modules."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from nas_bert.utils.dependency_warnings import quiet_dependency_warnings

ROOT = Path(__file__).resolve().parents[1]
CALL = re.compile(r"(?<!def )quiet_dependency_warnings\(\)")
SEEN = [  # (message, category, module) as torch raises them at torchdata and Lightning (torch 2.13, Lightning 2.6)
    ("'set_vital' is deprecated, please do not call", UserWarning, "torchdata.stateful_dataloader.stateful_dataloader"),
    ("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and treespec.is_leaf()` "
     "instead.", FutureWarning, "lightning.pytorch.utilities._pytree"),
]


def shown(message: str, category: type[Warning], module: str) -> bool:
    """Whether a warning attributed to `module` gets through the filters `quiet_dependency_warnings` installs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_dependency_warnings()
        warnings.warn_explicit(message, category, "file.py", 1, module=module, registry={})
    return bool(caught)


@pytest.mark.parametrize(("message", "category", "module"), SEEN)
def test_the_dependency_warnings_are_filtered_by_message_category_and_module(message, category, module):
    assert not shown(message, category, module)
    assert shown(message, category, "nas_bert.lit.pretrain")  # the same message from our code
    assert shown(message, DeprecationWarning, module)  # another category
    assert shown("some other deprecation", DeprecationWarning, module)  # another message from that module
    assert shown(message, category, module + "_extra")  # the module regex is anchored at its end


def test_only_the_entry_points_install_them():
    sources = [*ROOT.glob("*.py"), *(ROOT / "nas_bert").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    callers = {str(p.relative_to(ROOT)) for p in sources if CALL.search(p.read_text())}
    assert callers == {"train.py", "search.py"}
