"""The modeling code an exported NAS-BERT model carries, so that it loads without nas-bert installed:
`AutoModel.from_pretrained(dir_or_repo, trust_remote_code=True)` with only torch and transformers.

The files are generated from the package's own modules at every save, never kept by hand: the modules the
model classes need (`CODE_MODULES`) are written flat into the model folder, their `nas_bert` imports made
relative, and `config.json` gets an `auto_map` naming the config and every model class. With nas-bert
installed, the registered classes are used as before (no `trust_remote_code` needed).
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

# module -> file name in the model folder; the import closure of the config and model classes
CODE_MODULES = {
    "nas_bert.arch": "arch.py",
    "nas_bert.ops": "ops.py",
    "nas_bert.space": "space.py",
    "nas_bert.encoder": "encoder.py",
    "nas_bert.modeling.lsq": "lsq.py",
    "nas_bert.modeling.configuration_nas_bert": "configuration_nas_bert.py",
    "nas_bert.modeling.modeling_nas_bert": "modeling_nas_bert.py",
}
AUTO_MAP = {
    "AutoConfig": "configuration_nas_bert.NasBertConfig",
    "AutoModel": "modeling_nas_bert.NasBertModel",
    "AutoModelForMaskedLM": "modeling_nas_bert.NasBertForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_nas_bert.NasBertForSequenceClassification",
    "AutoModelForQuestionAnswering": "modeling_nas_bert.NasBertForQuestionAnswering",
}
_IMPORT = re.compile(r"^from (nas_bert(?:\.\w+)*) import ", re.MULTILINE)


def flat_source(module: str) -> str:
    """The source of `module` with its imports of other `CODE_MODULES` made relative (`from .arch import ...`).

    Imports of any other nas_bert module are refused unless inside a function (optional code, e.g. in a
    `try` that the folder's copy skips): a top-level one would not resolve in the model folder.
    """
    spec = importlib.util.find_spec(module)
    source = Path(spec.origin).read_text()

    def relative(match: re.Match) -> str:
        name = match.group(1)
        if name not in CODE_MODULES:
            raise ValueError(f"{module} imports {name} at top level, which an exported model folder does not carry; "
                             f"add it to nas_bert.modeling.remote_code.CODE_MODULES or import it where it is used")
        return f"from .{Path(CODE_MODULES[name]).stem} import "

    header = f"# Generated from {module} by nas-bert at save time; edit that module, not this file.\n"
    return header + _IMPORT.sub(relative, source)


def write_remote_code(directory: str | Path) -> list[Path]:
    """Write the code files into a saved model folder and name them in its `config.json` (`auto_map`)."""
    directory = Path(directory)
    written = []
    for module, name in CODE_MODULES.items():
        (directory / name).write_text(flat_source(module))
        written.append(directory / name)
    config_file = directory / "config.json"
    config = json.loads(config_file.read_text())
    config["auto_map"] = AUTO_MAP
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return written
