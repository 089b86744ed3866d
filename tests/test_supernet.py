"""Supernet: extracted paths equal supernet paths, hold only their weights, and ignore padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.nas.supernet import Supernet
from nas_bert.space import SearchSpace, projection_params

WIDTH = 48  # teacher width


@pytest.fixture()
def net(tiny_space) -> Supernet:
    torch.manual_seed(0)
    return Supernet(tiny_space, WIDTH).eval()


def inputs(num_blocks: int, batch: int = 3, length: int = 10) -> tuple[list[torch.Tensor], torch.Tensor]:
    torch.manual_seed(1)
    states = [torch.randn(batch, length, WIDTH) for _ in range(num_blocks)]
    mask = torch.ones(batch, length)
    mask[1, 6:] = 0  # one padded sequence
    return states, mask


@pytest.mark.parametrize("seed", range(5))
def test_extracted_path_equals_supernet_path(net, tiny_space, seed):
    arch = net.sample(np.random.default_rng(seed))
    states, mask = inputs(tiny_space.num_blocks)
    stack = net.extract(arch).eval()
    expected = net(states, mask, arch)
    for n in range(tiny_space.num_blocks):
        torch.testing.assert_close(stack.forward_block(n, states[n], mask), expected[n], rtol=0, atol=0)
    # chaining the extracted blocks equals chaining the supernet blocks
    x = states[0]
    for n in range(tiny_space.num_blocks):
        x = net.forward_block(n, x, mask, arch.blocks[n])
    torch.testing.assert_close(stack(states[0], mask), x, rtol=0, atol=0)


def test_extract_copies_only_the_path(net, tiny_space):
    arch = Arch(blocks=(BlockArch(16, ("mha", "identity")), BlockArch(32, ("ffn", "sepconv3")),
                        BlockArch(16, ("ffn", "ffn"))))
    stack = net.extract(arch)
    expected = sum(
        tiny_space.block_params(b) + projection_params(WIDTH, b.hidden) + projection_params(b.hidden, WIDTH)
        for b in arch.blocks
    )
    assert sum(p.numel() for p in stack.parameters()) == expected
    assert [len(block.layers) for block in stack.blocks] == [1, 2, 2]  # identity slots hold no module
    with torch.no_grad():  # a copy: training the extracted model leaves the supernet as it was
        next(stack.parameters()).add_(1.0)
    states, mask = inputs(tiny_space.num_blocks)
    torch.testing.assert_close(net.extract(arch).eval()(states[0], mask), net.extract(arch).eval()(states[0], mask))
    assert not torch.equal(next(stack.parameters()), next(net.extract(arch).parameters()))


def test_set_active_validates_and_drives_forward(net, tiny_space):
    arch = net.sample(np.random.default_rng(3))
    states, mask = inputs(tiny_space.num_blocks)
    net.set_active(arch)
    assert net.active == arch
    torch.testing.assert_close(net(states, mask), net(states, mask, arch))
    with pytest.raises(ArchitectureError, match="hidden size 64 is not in the space"):
        net.set_active(Arch(blocks=(BlockArch(64, ("mha", "ffn")),) * 3))
    with pytest.raises(RuntimeError, match="no active architecture"):
        _ = Supernet(tiny_space, WIDTH).active


def test_sampling_is_a_function_of_the_seed(net):
    a = [net.sample(np.random.default_rng([7, step])) for step in range(10)]
    b = [net.sample(np.random.default_rng([7, step])) for step in range(10)]
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("op", ["mha", "ffn", "sepconv3"])
def test_padding_never_leaks_into_real_tokens(op):
    space = SearchSpace(hidden_sizes=(16,), ops=(op,), num_blocks=1, slots_per_block=2, head_dim=8)
    torch.manual_seed(0)
    net = Supernet(space, WIDTH).eval()
    arch = Arch(blocks=(BlockArch(16, (op, op)),))
    x = torch.randn(1, 8, WIDTH)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0]])
    noisy = x.clone()
    noisy[:, 5:] = torch.randn(1, 3, WIDTH) * 100
    torch.testing.assert_close(net([x], mask, arch)[0][:, :5], net([noisy], mask, arch)[0][:, :5])


def test_supernet_holds_every_candidate(tiny_space):
    net = Supernet(tiny_space, WIDTH)
    per_slot = {f"{op}_{h}" for h in tiny_space.hidden_sizes for op in tiny_space.ops}
    for block in net.blocks:
        assert all(set(slot.keys()) == per_slot for slot in block.slots)
        assert len(block.slots) == tiny_space.slots_per_block
