"""The supernet's path samplers: uniform is the paper's one path, fair trains every (slot, op) of a width once per
step, sandwich the extremes; all stay among the alive candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_bert.arch import IDENTITY
from nas_bert.nas.sampling import sample_paths
from nas_bert.space import SearchSpace

SPACE = SearchSpace(hidden_sizes=(16, 32), ops=("mha", "ffn", "sepconv3"), num_blocks=2, slots_per_block=3,
                    head_dim=8, name="t")


def rng(step: int = 0) -> np.random.Generator:
    return np.random.default_rng([0, step])


def test_one_uniform_path_is_the_papers_sample():
    assert sample_paths(SPACE, "uniform", rng(), None, 1) == [SPACE.sample(rng())]
    assert len(sample_paths(SPACE, "uniform", rng(), None, 3)) == 3


@pytest.mark.parametrize("step", range(5))
def test_fair_paths_train_every_op_of_every_slot_once_at_one_width(step):
    paths = sample_paths(SPACE, "fair", rng(step), None, 1)
    assert len(paths) == len(SPACE.ops)
    for n in range(SPACE.num_blocks):
        blocks = [p.blocks[n] for p in paths]
        assert len({b.hidden for b in blocks}) == 1
        for slot in range(SPACE.slots_per_block):
            assert sorted(b.ops[slot] for b in blocks) == sorted(SPACE.ops)  # each op once, full depth


def test_fair_and_sandwich_paths_stay_alive_after_shrinking():
    generator = np.random.default_rng(1)
    alive = [np.sort(generator.choice(SPACE.num_candidates, 9, replace=False)) for _ in range(SPACE.num_blocks)]
    for sampling, count in (("fair", 1), ("sandwich", 4)):
        for step in range(10):
            for path in sample_paths(SPACE, sampling, rng(step), alive, count):
                assert all(SPACE.index_of(b) in alive[n] for n, b in enumerate(path.blocks))
    largest, smallest, *rest = sample_paths(SPACE, "sandwich", rng(), alive, 4)
    for n in range(SPACE.num_blocks):
        params = SPACE.candidate_params[alive[n]]
        assert SPACE.block_params(largest.blocks[n]) == params.max()
        assert SPACE.block_params(smallest.blocks[n]) == params.min()
    assert len(rest) == 2
    with pytest.raises(ValueError, match="paths_per_step must be >= 2"):
        sample_paths(SPACE, "sandwich", rng(), None, 1)
    with pytest.raises(ValueError, match="uniform, fair, sandwich"):
        sample_paths(SPACE, "greedy", rng(), None, 1)


def test_a_fair_step_updates_every_op_of_its_width_in_every_slot(tiny_teacher_dir, tiny_space):
    from functools import partial

    from nas_bert.lit import SupernetDistillation
    from nas_bert.teacher import FrozenTeacher

    module = SupernetDistillation(tiny_space, FrozenTeacher(str(tiny_teacher_dir), tiny_space.num_blocks),
                                  partial(torch.optim.AdamW, lr=1e-3), sampling="fair")
    batch = {"input_ids": torch.randint(1000, 2000, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    paths = module.sample_paths()
    module.training_step(batch, 0).backward()
    for n, block in enumerate(module.supernet.blocks):
        width = paths[0].blocks[n].hidden
        for slot in block.slots:
            for op in tiny_space.ops:
                assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in slot[f"{op}_{width}"].parameters())
    assert IDENTITY not in {op for p in paths for b in p.blocks for op in b.ops}
    with pytest.raises(ValueError, match="sandwich: >= 2"):
        SupernetDistillation(tiny_space, module.teacher, partial(torch.optim.AdamW), sampling="sandwich")
