"""The parts of exact resume, each on its own: the resumable sampler, step-seeded MLM masking, RNG states
in checkpoints, and atomic checkpoint writes (a save killed halfway leaves the previous file intact)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nas_bert.data.loading import LengthGroupedSampler, ResumableSampler, make_loader
from nas_bert.distill.masking import TokenMasker
from nas_bert.utils.resume import RngStates


def test_sampler_resumes_mid_epoch_and_keeps_its_epoch():
    data = list(range(20))
    sampler = ResumableSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    sampler.set_epoch(2)
    it = iter(sampler)
    seen = [next(it) for _ in range(7)]
    state = sampler.state_dict()
    assert state == {"yielded": 7, "epoch": 2}
    rest = list(it)

    fresh = ResumableSampler(data, num_replicas=1, rank=0, shuffle=True, seed=3)
    fresh.load_state_dict(state)
    assert list(fresh) == rest and sorted(seen + rest) == data
    fresh.set_epoch(3)  # the next epoch: a new order, from its beginning
    assert sorted(fresh) == data and list(fresh) != seen + rest


def test_sampler_orders_depend_on_seed_and_epoch_and_ranks_are_disjoint():
    data = list(range(40))

    def order(seed, epoch, rank=0, world=1):
        s = ResumableSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 0) == order(0, 0) and order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    shards = [order(0, 1, r, 2) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and sorted(shards[0] + shards[1]) == data


def test_length_grouped_order_is_the_shuffle_sorted_within_groups_and_resumes():
    data, lengths = list(range(24)), [(7 * i) % 11 for i in range(24)]
    shuffled = ResumableSampler(data, num_replicas=1, rank=0, shuffle=True, seed=5)
    grouped = LengthGroupedSampler(data, lengths, group_size=8, num_replicas=1, rank=0, shuffle=True, seed=5)
    order = list(grouped)
    assert order == [i for g in range(0, 24, 8) for i in sorted(list(shuffled)[g: g + 8], key=lambda i: -lengths[i])]
    it = iter(grouped)
    head = [next(it) for _ in range(5)]
    again = LengthGroupedSampler(data, lengths, group_size=8, num_replicas=1, rank=0, shuffle=True, seed=5)
    again.load_state_dict(grouped.state_dict())
    assert head + list(again) == order
    loader = make_loader(data, 4, True, torch.utils.data.default_collate, lengths=lengths, length_groups=2)
    assert isinstance(loader.sampler, LengthGroupedSampler) and sorted(torch.cat(list(loader)).tolist()) == data


def test_make_loader_state_round_trip():
    torch.manual_seed(0)
    loader = make_loader(list(range(32)), 4, True, torch.utils.data.default_collate)
    it = iter(loader)
    [next(it) for _ in range(3)]
    state = loader.state_dict()
    expected = [b.tolist() for b in it]
    again = make_loader(list(range(32)), 4, True, torch.utils.data.default_collate)
    again.load_state_dict(state)
    assert [b.tolist() for b in again] == expected
    evaluation = make_loader(list(range(10)), 4, False, torch.utils.data.default_collate)
    assert [b.tolist() for b in evaluation] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_loader_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    for shuffle in (True, False):
        list(make_loader(list(range(8)), 4, shuffle, torch.utils.data.default_collate))
    assert torch.equal(state, torch.get_rng_state())


@pytest.fixture()
def masker() -> TokenMasker:
    return TokenMasker(mask_token_id=103, vocab_size=1000, special_token_ids=(0, 101, 102, 103), seed=5)


def test_masking_is_a_function_of_its_keys(masker):
    ids = torch.randint(200, 1000, (8, 64))
    a, b, c = masker(ids, (0, 7, 1)), masker(ids, (0, 7, 1)), masker(ids, (0, 8, 1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_masking_rates_and_labels(masker):
    ids = torch.randint(200, 1000, (256, 128))
    ids[:, 0], ids[:, -1], ids[:, -10:-1] = 101, 102, 0  # [CLS] ... [SEP] and padding
    masked, labels = masker(ids, (1, 2, 3))
    selected = labels != -100
    special = torch.isin(ids, torch.tensor([0, 101, 102, 103]))
    assert not (selected & special).any()
    assert torch.equal(labels[selected], ids[selected]) and torch.equal(masked[~selected], ids[~selected])
    rate = selected.sum().item() / (~special).sum().item()
    assert 0.14 < rate < 0.16
    to_mask = (masked == 103) & selected
    unchanged = (masked == ids) & selected
    assert 0.77 < to_mask.sum().item() / selected.sum().item() < 0.83
    assert 0.07 < unchanged.sum().item() / selected.sum().item() < 0.13


def test_masker_refuses_a_tokenizer_without_mask_token():
    class NoMask:
        mask_token_id, name_or_path = None, "gpt-like"

    with pytest.raises(ValueError, match="no mask token"):
        TokenMasker.for_tokenizer(NoMask())


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path):
    callback = RngStates()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    torch.save({"rng": callback.state_dict()}, tmp_path / "ckpt.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    callback.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import fsspec.implementations.local as local
    import torch
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    path = sys.argv[1]
    io = TorchCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(1000)}, path)
    real_write = local.LocalFileOpener.write

    def write_half_then_die(self, data):
        real_write(self, bytes(data)[: len(data) // 2])
        self.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    local.LocalFileOpener.write = write_half_then_die
    io.save_checkpoint({"step": 2, "w": torch.zeros(1000)}, path)
""")


def test_a_checkpoint_save_killed_halfway_leaves_the_previous_one_intact(tmp_path):
    path = tmp_path / "last.ckpt"
    result = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    ckpt = torch.load(path, weights_only=True)  # the first save, whole
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(1000))
