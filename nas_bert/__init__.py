"""nas-bert: task-agnostic BERT compression by NAS and block-wise distillation (NAS-BERT, KDD 2021)."""

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.space import SearchSpace
from nas_bert.supernet import BlockStack, Supernet
from nas_bert.utils.resolvers import register_resolvers

register_resolvers()

import nas_bert.modeling  # noqa: E402,F401  (registers NasBertConfig / NasBert* with the transformers Auto classes)

__all__ = ["Arch", "ArchitectureError", "BlockArch", "BlockStack", "SearchSpace", "Supernet"]
__version__ = "0.1.0"
