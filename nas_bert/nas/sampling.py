"""Which paths a supernet step trains (`SupernetDistillation(sampling=..., paths_per_step=...)`), all sharing the
step's one teacher forward, their losses summed into one update. Every rule draws from the blocks' alive
candidates only (progressive shrinking narrows them), and from the generator it is given alone.

* `uniform` (the paper): `paths_per_step` paths, each block uniform over its alive candidates.
* `fair` (FairNAS strict fairness, Chu et al. 2021): one path per op of the space; in every block one width (drawn
  from its alive widths) and, per slot, a permutation of the ops, so path k takes the k-th op of every slot's
  permutation at full depth: each (slot, op) of the width gets exactly one update per step. After shrinking, a
  path that is not alive any more is replaced by the alive candidate of its width sharing the longest prefix of
  ops with it (the fairness then holds approximately).
* `sandwich` (BigNAS): per block its largest and its smallest alive candidate by parameters, plus
  `paths_per_step - 2` uniform ones, so the extremes of every block are trained at every step.
"""

from __future__ import annotations

import numpy as np

from nas_bert.arch import Arch
from nas_bert.space import SearchSpace

SAMPLINGS = ("uniform", "fair", "sandwich")


def alive_of(space: SearchSpace, alive: list[np.ndarray] | None, n: int) -> np.ndarray:
    """Block n's alive candidate indices (all of them when shrinking has not narrowed any)."""
    return np.arange(space.num_candidates) if alive is None else np.asarray(alive[n], dtype=np.int64)


def uniform_paths(space: SearchSpace, rng: np.random.Generator, alive: list[np.ndarray] | None,
                  count: int) -> list[Arch]:
    return [space.sample(rng, alive) for _ in range(count)]


def nearest_alive(space: SearchSpace, candidates: np.ndarray, hidden: int, codes: np.ndarray,
                  rng: np.random.Generator) -> int:
    """The candidate of `candidates` at width `hidden` whose ops share the longest prefix with `codes` (S,)."""
    same_width = candidates[space.candidate_hidden[candidates] == hidden]
    prefix = np.cumprod(space.candidate_codes[same_width] == codes, axis=1).sum(axis=1)  # (n,)
    best = same_width[prefix == prefix.max()]
    return int(best[0] if len(best) == 1 else best[rng.integers(len(best))])


def fair_paths(space: SearchSpace, rng: np.random.Generator, alive: list[np.ndarray] | None) -> list[Arch]:
    """len(space.ops) paths; per block one width, per slot a permutation of the ops (see the module docstring)."""
    k, blocks = len(space.ops), []
    for n in range(space.num_blocks):
        candidates = alive_of(space, alive, n)
        hidden = int(rng.choice(np.unique(space.candidate_hidden[candidates])))
        permutations = np.stack([rng.permutation(k) for _ in range(space.slots_per_block)], axis=1)  # (k, S)
        blocks.append([nearest_alive(space, candidates, hidden, permutations[p].astype(np.int8), rng)
                       for p in range(k)])
    return [Arch(blocks=tuple(space.candidate(blocks[n][p]) for n in range(space.num_blocks))) for p in range(k)]


def sandwich_paths(space: SearchSpace, rng: np.random.Generator, alive: list[np.ndarray] | None,
                   count: int) -> list[Arch]:
    """The largest and the smallest alive path, then `count - 2` uniform ones."""
    if count < 2:
        raise ValueError(f"sampling=sandwich trains the largest and the smallest path and more: paths_per_step must "
                         f"be >= 2, got {count}")
    indices = [alive_of(space, alive, n) for n in range(space.num_blocks)]
    extremes = [Arch(blocks=tuple(space.candidate(int(i[pick(space.candidate_params[i])])) for i in indices))
                for pick in (np.argmax, np.argmin)]
    return extremes + uniform_paths(space, rng, alive, count - 2)


def sample_paths(space: SearchSpace, sampling: str, rng: np.random.Generator, alive: list[np.ndarray] | None,
                 count: int) -> list[Arch]:
    """The step's paths by `sampling` (`SAMPLINGS`); `count` is `paths_per_step` (fair: one path per op)."""
    if sampling == "uniform":
        return uniform_paths(space, rng, alive, count)
    if sampling == "fair":
        return fair_paths(space, rng, alive)
    if sampling == "sandwich":
        return sandwich_paths(space, rng, alive, count)
    raise ValueError(f"model.sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
