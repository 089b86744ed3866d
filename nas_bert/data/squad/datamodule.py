"""The SQuAD DataModule: examples from the official JSON files or the Hub, split / subset, featurised into
the ``datasets`` cache, served as batches; and the answers of gathered validation logits."""

from __future__ import annotations

import logging
from typing import NamedTuple

import datasets
import numpy as np
from torch.utils.data import DataLoader, default_collate

from nas_bert.data.base import TokenizedDataModule
from nas_bert.data.common import (
    cache_path,
    check_file,
    check_max_seq_length,
    check_positive,
    digest,
    tokenizer_fingerprint,
)
from nas_bert.data.loading import make_loader
from nas_bert.data.squad.features import feature_schema, prepare_eval_features, prepare_train_features
from nas_bert.data.squad.source import (
    EXAMPLE_FEATURES,
    HUB_DATASETS,
    file_sha256,
    load_squad_hub,
    load_squad_json,
    normalize_version,
)
from nas_bert.data.squad.splits import seeded_subset, split_by_article
from nas_bert.metrics.squad_postprocess import AnswerSettings

__all__ = ["SquadDataModule"]

log = logging.getLogger(__name__)

# Bump when loading / featurising changes: it is part of the explicit cache fingerprints.
_PIPELINE_VERSION = "squad-v1"
_MIN_SEQ_LEN = 16
_TRAIN_COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"]
_EVAL_COLUMNS = ["input_ids", "attention_mask", "token_type_ids", "feature_idx"]


class _Examples(NamedTuple):
    """Flat examples plus the explicit fingerprint that names their derived caches."""

    dataset: datasets.Dataset
    fingerprint: str
    origin: str  # for log messages


def _squad_file(path: str | None, arg_name: str) -> str | None:
    """Absolute path of an existing SQuAD file (``None`` stays ``None``)."""
    if not path:
        return None
    return check_file(path, f"{arg_name}: SQuAD file", f", or set {arg_name} to null to use the Hub dataset")


class SquadDataModule(TokenizedDataModule):
    """SQuAD v1.1 / v2.0 features for span-extraction fine-tuning and their evaluation.

    Sources: ``train_file`` / ``validation_file`` (official JSON) or, where ``None``, the Hub dataset of
    ``version``. With ``split_validation_for_training`` the validation source is split by article into
    training and evaluation halves (``train_file`` must be ``None``). ``max_train_samples`` /
    ``max_eval_samples`` keep a seeded random subset of the *examples* (questions), in file order, before
    featurising (the corpus instead keeps its first N sequences).

    Training batches: ``input_ids``, ``attention_mask``, ``token_type_ids`` (B, T) and ``start_positions``,
    ``end_positions`` (B,). Validation batches: the three token tensors and ``feature_idx`` (B,), the row of
    the feature in :attr:`eval_features`; gather ``feature_idx`` with the logits and pass them to
    :meth:`predictions` (duplicates, e.g. from a padded ``DistributedSampler``, are dropped). All int64.

    Args:
        tokenizer: local tokenizer directory or Hub id (fast tokenizer; a left-padding one puts the context first).
        version: "1.1" or "2.0" (SQuAD 2.0 has unanswerable questions).
        train_file: official training JSON (None: the Hub ``train`` split).
        validation_file: official dev JSON (None: the Hub ``validation`` split).
        max_seq_length: tokens per feature (question + context window + special tokens).
        doc_stride: tokens shared by consecutive windows of a long context.
        batch_size: training batch size (per device).
        eval_batch_size: validation batch size (default: ``batch_size``).
        num_workers: DataLoader workers.
        cache_dir: cache for the Hub download and the features (default: the ``datasets`` cache).
        max_train_samples: keep a seeded random subset of this many training examples.
        max_eval_samples: keep a seeded random subset of this many evaluation examples.
        seed: seed of the article split and of the subsets.
        split_validation_for_training: split the validation articles into train / eval halves.
        n_best: top start and end tokens combined per feature in post-processing.
        max_answer_length: longest predicted answer in tokens.
        null_score_diff_threshold: v2.0: predict "" when null score - best span score exceeds this.
    """

    def __init__(
        self,
        tokenizer: str,
        version: str = "1.1",
        train_file: str | None = None,
        validation_file: str | None = None,
        max_seq_length: int = 384,
        doc_stride: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        seed: int = 0,
        split_validation_for_training: bool = False,
        n_best: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
    ) -> None:
        super().__init__(tokenizer, batch_size, eval_batch_size, num_workers, cache_dir, max_train_samples,
                         max_eval_samples, seed)
        self.save_hyperparameters(logger=False)
        self.version = normalize_version(version)
        if split_validation_for_training and train_file:
            raise ValueError(
                f"split_validation_for_training=true takes the training articles from the validation source, "
                f"but train_file={train_file!r} is set too; set train_file to null or "
                f"split_validation_for_training to false."
            )
        check_positive("n_best", n_best)
        check_positive("max_answer_length", max_answer_length)
        check_max_seq_length(max_seq_length, self._tokenizer, minimum=_MIN_SEQ_LEN, example=384)
        if not 0 <= doc_stride < max_seq_length // 2:
            raise ValueError(
                f"doc_stride={doc_stride} must be >= 0 and below max_seq_length / 2 = {max_seq_length // 2} "
                f"(windows share doc_stride tokens and also hold the question); e.g. 128 for max_seq_length 384."
            )
        self.train_file = _squad_file(train_file, "train_file")
        self.validation_file = _squad_file(validation_file, "validation_file")
        self.max_seq_length, self.doc_stride = int(max_seq_length), int(doc_stride)
        self.split_validation_for_training = bool(split_validation_for_training)
        self.n_best, self.max_answer_length = int(n_best), int(max_answer_length)
        self.null_score_diff_threshold = float(null_score_diff_threshold)
        # before any call changes its state; the padding side decides the order of question and context
        self._tokenizer_fp = tokenizer_fingerprint(self._tokenizer, self._tokenizer.padding_side)
        self._train_dataset: datasets.Dataset | None = None
        self._eval_examples: datasets.Dataset | None = None
        self._eval_features: datasets.Dataset | None = None
        self._split_logged = False

    # ------------------------------------------------------------------ public read-only state
    @property
    def version_2(self) -> bool:
        """Whether this is SQuAD 2.0 (unanswerable questions, null-score post-processing)."""
        return self.version == "2.0"

    @property
    def train_dataset(self) -> datasets.Dataset | None:
        """Training features (start/end positions, no offsets); ``None`` before ``setup("fit")``."""
        return self._train_dataset

    @property
    def eval_examples(self) -> datasets.Dataset | None:
        """Evaluation examples (``id``, ``title``, ``context``, ``question``, ``answers``)."""
        return self._eval_examples

    @property
    def eval_features(self) -> datasets.Dataset | None:
        """Evaluation features, all columns (``offset_mapping``, ``example_id``, ``feature_idx`` = row, ...)."""
        return self._eval_features

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Load and featurise both splits once (one process), filling the cache."""
        self._build(with_train=True)

    def setup(self, stage: str | None = None) -> None:
        """Build on every process (cache hits); the training features only for ``fit``."""
        with_train = stage in (None, "fit")
        if self._eval_features is None or (with_train and self._train_dataset is None):
            self._train_dataset, self._eval_examples, self._eval_features = self._build(with_train)

    def train_dataloader(self) -> DataLoader:
        if self._train_dataset is None:
            raise RuntimeError("SquadDataModule.train_dataloader() called before setup('fit'); call it first.")
        return self._loader(self._train_dataset.with_format("torch", columns=_TRAIN_COLUMNS), self.batch_size, True)

    def val_dataloader(self) -> DataLoader:
        if self._eval_features is None:
            raise RuntimeError("SquadDataModule.val_dataloader() called before setup(); call setup() first.")
        dataset = self._eval_features.with_format("torch", columns=_EVAL_COLUMNS)
        return self._loader(dataset, self.eval_batch_size, False)

    def _loader(self, dataset: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        # items: dict of (T,) / () int64 tensors -> batches of (B, T) / (B,)
        return make_loader(dataset, batch_size, shuffle, default_collate, self.num_workers, self.trainer)

    # ------------------------------------------------------------------ evaluation
    @property
    def answer_settings(self) -> AnswerSettings:
        """How the evaluation's answers are read from the logits (`squad_predictions`)."""
        return AnswerSettings(self.version_2, self.n_best, self.max_answer_length, self.null_score_diff_threshold)

    # ------------------------------------------------------------------ pipeline
    def _build(
        self, with_train: bool
    ) -> tuple[datasets.Dataset | None, datasets.Dataset, datasets.Dataset]:
        """(training features | None, evaluation examples, evaluation features)."""
        train, evaluation = self._examples(with_train)
        train_features = self._featurize(train, train=True) if train is not None else None
        eval_features = self._featurize(evaluation, train=False)
        eval_features = eval_features.add_column(
            "feature_idx",
            np.arange(len(eval_features), dtype=np.int64),
            new_fingerprint=digest(eval_features._fingerprint, "feature_idx"),
        )
        log.info(
            "SQuAD v%s: %s train examples -> %s features; %d eval examples -> %d features "
            "(max_seq_length=%d, doc_stride=%d)",
            self.version,
            "no" if train is None else len(train.dataset),
            "no" if train_features is None else len(train_features),
            len(evaluation.dataset),
            len(eval_features),
            self.max_seq_length,
            self.doc_stride,
        )
        return train_features, evaluation.dataset, eval_features

    def _examples(self, with_train: bool) -> tuple[_Examples | None, _Examples]:
        """(training examples | None, evaluation examples), split and subset."""
        evaluation = self._load("validation")
        train = None
        if self.split_validation_for_training:
            train, evaluation = self._split_articles(evaluation)
        elif with_train:
            train = self._load("train")
        train = self._subset(train, self.max_train_samples, "train") if with_train and train is not None else None
        return train, self._subset(evaluation, self.max_eval_samples, "eval")

    def _load(self, split: str) -> _Examples:
        path = self.train_file if split == "train" else self.validation_file
        return self._load_local(path) if path else self._load_hub(split)

    def _load_local(self, path: str) -> _Examples:
        rows = load_squad_json(path, self.version)
        fingerprint = digest(_PIPELINE_VERSION, "json", self.version, file_sha256(path))
        dataset = datasets.Dataset.from_list(rows, features=EXAMPLE_FEATURES)
        return _Examples(dataset, fingerprint, path)

    def _load_hub(self, split: str) -> _Examples:
        arg = "train_file" if split == "train" else "validation_file"
        dataset = load_squad_hub(self.version, split, arg, cache_dir=self.cache_dir)
        origin = f"{HUB_DATASETS[self.version]}[{split}]"
        return _Examples(dataset, digest(_PIPELINE_VERSION, "hub", dataset._fingerprint), origin)

    def _split_articles(self, source: _Examples) -> tuple[_Examples, _Examples]:
        """Split the validation source by article into training and evaluation halves (logged)."""
        titles = list(source.dataset["title"])
        train_rows, eval_rows = split_by_article(titles, self.seed)
        halves = []
        for name, rows in (("train", train_rows), ("eval", eval_rows)):
            fingerprint = digest(source.fingerprint, "articles", name, self.seed)
            dataset = source.dataset.select(rows, new_fingerprint=fingerprint)
            halves.append(_Examples(dataset, fingerprint, f"{source.origin} ({name} articles)"))
        if not self._split_logged:  # once per process, not again on the setup() after prepare_data()
            self._log_split(source, halves[0], halves[1])
        return halves[0], halves[1]

    def _log_split(self, source: _Examples, train: _Examples, evaluation: _Examples) -> None:
        self._split_logged = True
        n_train = len(set(train.dataset["title"]))
        n_eval = len(set(evaluation.dataset["title"]))
        log.warning(
            "split_validation_for_training: no training file; the %d articles of %s are split by title "
            "(seed %d) into %d training articles (%d questions) and %d evaluation articles (%d questions). "
            "Scores are on part of the dev set and not comparable to published dev results.",
            n_train + n_eval,
            source.origin,
            self.seed,
            n_train,
            len(train.dataset),
            n_eval,
            len(evaluation.dataset),
        )

    def _subset(self, source: _Examples, limit: int | None, name: str) -> _Examples:
        rows = seeded_subset(len(source.dataset), limit, self.seed)
        if rows is None:
            return source
        fingerprint = digest(source.fingerprint, "subset", name, limit, self.seed)
        dataset = source.dataset.select(rows, new_fingerprint=fingerprint)
        return _Examples(dataset, fingerprint, f"{source.origin} ({limit} of {len(source.dataset)} examples)")

    def _featurize(self, source: _Examples, train: bool) -> datasets.Dataset:
        """Examples -> features with ``datasets.map``, cached under ``cache_dir`` by explicit fingerprint."""
        kind = "train" if train else "eval"
        fingerprint = digest(
            source.fingerprint, _PIPELINE_VERSION, kind, self._tokenizer_fp, self.max_seq_length, self.doc_stride
        )
        cache_file = cache_path(self.cache_dir, "squad_features", f"{kind}-{fingerprint}.arrow")
        return source.dataset.map(
            prepare_train_features if train else prepare_eval_features,
            batched=True,
            remove_columns=source.dataset.column_names,
            fn_kwargs={
                "tokenizer": self._tokenizer,
                "max_seq_length": self.max_seq_length,
                "doc_stride": self.doc_stride,
            },
            features=feature_schema(self.max_seq_length, train),
            new_fingerprint=fingerprint,  # explicit: hashing the tokenizer object is slow and not always stable
            cache_file_name=cache_file,
            desc=f"SQuAD {kind} features ({source.origin})",
        )
