"""BERT's MLM masking as a pure function of (seed, step, micro-batch, rank).

Masking inside the training step, from a generator seeded by the step, rather than in the DataLoader
from the global RNG, makes a resumed run draw exactly the masks the interrupted one would have drawn
(the loader prefetches, so a global RNG state saved with a checkpoint is already one batch ahead), and
makes every validation pass use the same masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch


def derived_seed(*keys: int) -> int:
    """A 63-bit seed mixed from integer keys (numpy SeedSequence: no correlation between nearby keys)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class TokenMasker:
    """Selects `probability` of the non-special tokens; of those 80% become [MASK], 10% a random token,
    10% stay. Labels are the original ids there and -100 elsewhere."""

    mask_token_id: int
    vocab_size: int
    special_token_ids: tuple[int, ...]
    probability: float = 0.15
    mask_fraction: float = 0.8
    random_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.probability < 1.0 or self.mask_fraction + self.random_fraction > 1.0:
            raise ValueError(f"need 0 < probability < 1 and mask + random fractions <= 1, got {self}")

    @classmethod
    def for_tokenizer(cls, tokenizer, probability: float = 0.15, seed: int = 0) -> TokenMasker:
        if tokenizer.mask_token_id is None:
            raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no mask token: MLM needs one")
        return cls(tokenizer.mask_token_id, len(tokenizer), tuple(sorted(set(tokenizer.all_special_ids))),
                   probability, seed=seed)

    def __call__(self, input_ids: torch.Tensor, keys: Iterable[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input_ids, labels), both (B, T), drawn from a generator seeded by (seed, *keys)."""
        # The draws come from a CPU generator on every device (CUDA's differs), so a GPU run masks exactly as a
        # CPU run does, and moves to the device without waiting for it.
        device = input_ids.device
        g = torch.Generator().manual_seed(derived_seed(self.seed, *keys))
        special = torch.isin(input_ids, torch.tensor(self.special_token_ids).to(device, non_blocking=True))
        draw = torch.rand(input_ids.shape, generator=g).to(device, non_blocking=True)  # one uniform per token
        selected = (draw < self.probability) & ~special
        # Within the selected tokens, the same uniform (rescaled to [0, 1)) picks mask / random / keep.
        u = draw / self.probability
        to_mask = selected & (u < self.mask_fraction)
        to_random = selected & (u >= self.mask_fraction) & (u < self.mask_fraction + self.random_fraction)
        random_ids = torch.randint(self.vocab_size, input_ids.shape, generator=g).to(device, non_blocking=True)
        masked = torch.where(to_mask, torch.full_like(input_ids, self.mask_token_id), input_ids)
        masked = torch.where(to_random, random_ids, masked)
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
        return masked, labels
