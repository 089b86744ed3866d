"""Search space: enumeration, index round trips, analytic costs against real modules, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.nas.supernet import Supernet
from nas_bert.ops import build_op
from nas_bert.space import SearchSpace, op_flops, op_params, projection_params


def test_paper_space_has_97650_candidates_per_block(paper_space):
    assert paper_space.num_candidates == 97_650
    codes = paper_space.candidate_codes
    assert codes.shape == (97_650, 6)
    # every candidate is distinct (hidden size + ops)
    keys = paper_space.candidate_hidden * 10**7 + (codes.astype(np.int64) * 6 ** np.arange(6)).sum(axis=1)
    assert len(np.unique(keys)) == 97_650


def test_minilm_space_count():
    space = SearchSpace(hidden_sizes=(64, 96, 128, 192, 256), num_blocks=3, slots_per_block=4, head_dim=32)
    assert space.num_candidates == 5 * (5 + 25 + 125 + 625) == 3_900


def test_enumeration_is_exhaustive_and_valid(tiny_space):
    blocks = [tiny_space.candidate(i) for i in range(tiny_space.num_candidates)]
    assert len(set(blocks)) == tiny_space.num_candidates == 2 * (3 + 9)
    for i, block in enumerate(blocks):
        assert tiny_space.index_of(block) == i  # BlockArch validates identity-at-the-end on construction


def test_index_round_trip_on_paper_space(paper_space):
    rng = np.random.default_rng(0)
    for i in [0, 1, 4, 5, 19_529, 19_530, 97_649, *rng.integers(0, 97_650, 200)]:
        assert paper_space.index_of(paper_space.candidate(int(i))) == int(i)


def test_vectorised_params_and_flops_match_per_block_sums(paper_space):
    params, flops = paper_space.candidate_params, paper_space.candidate_flops(128)
    for i in np.random.default_rng(1).integers(0, 97_650, 100):
        block = paper_space.candidate(int(i))
        assert params[i] == paper_space.block_params(block)
        assert flops[i] == paper_space.block_flops(block, 128)


@pytest.mark.parametrize("hidden", [128, 192, 256, 384, 512])
@pytest.mark.parametrize("op", ["mha", "ffn", "sepconv3", "sepconv5", "sepconv7"])
def test_op_params_and_flops_equal_real_modules(op, hidden):
    module = build_op(op, hidden, head_dim=64)
    assert op_params(op, hidden) == sum(p.numel() for p in module.parameters())
    x = torch.randn(1, 128, hidden)
    # the math kernel runs attention as matmuls the counter sees (fused CPU kernels are not counted)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        module(x, torch.ones(1, 128))
    assert op_flops(op, hidden, 128) == counter.get_total_flops()


def test_extracted_candidates_have_exactly_the_analytic_parameter_count(paper_space):
    net = Supernet(paper_space, teacher_hidden=768)
    rng = np.random.default_rng(2)
    extremes = [0, paper_space.num_candidates - 1, int(np.argmax(paper_space.candidate_params))]
    indices = extremes + [int(i) for i in rng.integers(0, paper_space.num_candidates, 12)]
    for i in indices:
        block = paper_space.candidate(i)
        arch = Arch(blocks=(block,) * 4)
        stack = net.extract(arch)
        expected = paper_space.block_params(block) + projection_params(768, block.hidden) + projection_params(
            block.hidden, 768
        )
        assert sum(p.numel() for p in stack.blocks[0].parameters()) == expected


def test_space_validation_names_the_problem(tiny_space):
    good = BlockArch(16, ("mha", "ffn"))
    with pytest.raises(ArchitectureError, match="hidden size 64 is not in the space"):
        tiny_space.validate_block(BlockArch(64, ("mha", "ffn")))
    with pytest.raises(ArchitectureError, match="has 3 slots but the space 'tiny' has 2"):
        tiny_space.validate_block(BlockArch(16, ("mha", "ffn", "ffn")))
    with pytest.raises(ArchitectureError, match=r"ops \['sepconv7'\] are not in the space"):
        tiny_space.validate_block(BlockArch(16, ("sepconv7", "ffn")))
    with pytest.raises(ArchitectureError, match=r"block 2, slot 1: ops \['sepconv9'\]"):  # the first bad slot
        tiny_space.validate(Arch(blocks=(good, good, BlockArch(16, ("mha", "sepconv9")))))
    with pytest.raises(ArchitectureError, match="2 blocks but the space 'tiny' has 3"):
        tiny_space.validate(Arch(blocks=(good, good)))
    with pytest.raises(ArchitectureError, match="not multiples of head_dim"):
        SearchSpace(hidden_sizes=(48, 64), head_dim=32)
    with pytest.raises(ArchitectureError, match="do not list identity"):
        SearchSpace(hidden_sizes=(64,), ops=("mha", "identity"))
    with pytest.raises(ArchitectureError, match="unknown op 'conv'"):
        SearchSpace(hidden_sizes=(64,), ops=("mha", "conv"))


def test_sampling_respects_alive_sets(tiny_space):
    alive = [np.array([3]), np.array([5, 7]), np.arange(tiny_space.num_candidates)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        arch = tiny_space.sample(rng, alive)
        assert tiny_space.index_of(arch.blocks[0]) == 3
        assert tiny_space.index_of(arch.blocks[1]) in (5, 7)
    with pytest.raises(ValueError, match="no candidate is alive"):
        tiny_space.sample(rng, [np.array([], dtype=int)] * 3)
