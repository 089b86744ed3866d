"""SQuAD splits and subsets: the seeded split of a file's articles into train / eval halves, and seeded
random subsets of examples (``max_train_samples`` / ``max_eval_samples``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["seeded_subset", "split_by_article"]


def split_by_article(titles: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, eval) of a split of the *articles* (distinct titles) into two halves.

    The titles are sorted, shuffled with ``seed`` and the first ``ceil(n / 2)`` go to training, so the
    result depends only on the set of titles and the seed. Both index arrays are sorted.
    """
    titles = list(titles)
    unique = sorted(set(titles))
    if len(unique) < 2:
        raise ValueError(
            f"split_validation_for_training needs at least 2 articles (distinct titles), found {len(unique)}; "
            f"use a larger file or give a separate train file."
        )
    order = np.random.default_rng(seed).permutation(len(unique))
    train_titles = {unique[i] for i in order[: (len(unique) + 1) // 2]}
    is_train = np.fromiter((t in train_titles for t in titles), dtype=bool, count=len(titles))  # (N,)
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def seeded_subset(n_rows: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of ``limit`` rows; ``None`` when all rows are kept."""
    if limit is None or limit >= n_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False))
