"""Data modules: the pre-training corpus (packed MLM / distillation sequences)."""

from nas_bert.data.corpus import CorpusDataModule

__all__ = ["CorpusDataModule"]
