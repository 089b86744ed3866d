"""What the corpus, GLUE and SQuAD DataModules share: the tokenizer and the loading settings, checked once."""

from __future__ import annotations

import os

import lightning as L
from transformers import PreTrainedTokenizerBase

from nas_bert.data.common import check_positive, load_tokenizer


class TokenizedDataModule(L.LightningDataModule):
    """A DataModule of tokenized text: its fast tokenizer, batch sizes, workers, cache folder, sample limits and
    seed. Subclasses keep these in their own signatures (each config group documents its defaults) and pass them
    here; `no_limit` says what a null sample limit means for them."""

    def __init__(self, tokenizer: str, batch_size: int, eval_batch_size: int | None, num_workers: int,
                 cache_dir: str | None, max_train_samples: int | None, max_eval_samples: int | None, seed: int,
                 no_limit: str = "all examples") -> None:
        super().__init__()
        check_positive("batch_size", batch_size)
        check_positive("eval_batch_size", eval_batch_size)
        check_positive("max_train_samples", max_train_samples, null_means=no_limit)
        check_positive("max_eval_samples", max_eval_samples, null_means=no_limit)
        self._tokenizer = load_tokenizer(tokenizer)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.cache_dir = os.path.expanduser(os.fspath(cache_dir)) if cache_dir else None
        self.max_train_samples, self.max_eval_samples = max_train_samples, max_eval_samples
        self.seed = int(seed)

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fast tokenizer of every split."""
        return self._tokenizer
