"""Data modules: the pre-training corpus (``corpus``, packed MLM / distillation sequences), GLUE (``glue``) and
SQuAD (``squad``) fine-tuning data; ``common`` holds what the three share, ``loading`` the resumable loaders.
"""

from nas_bert.data.corpus import CorpusDataModule

__all__ = ["CorpusDataModule"]
