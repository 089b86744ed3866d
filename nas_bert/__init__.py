"""nas-bert: task-agnostic BERT compression by NAS and block-wise distillation (NAS-BERT, KDD 2021)."""

import nas_bert.modeling  # noqa: F401  (registers NasBertConfig / NasBert* with the transformers Auto classes)
from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.nas.supernet import BlockStack, Supernet
from nas_bert.space import SearchSpace
from nas_bert.utils.resolvers import register_resolvers

__all__ = ["Arch", "ArchitectureError", "BlockArch", "BlockStack", "SearchSpace", "Supernet", "register_resolvers"]
__version__ = "0.2.0"
