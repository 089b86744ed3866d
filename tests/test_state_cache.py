"""The teacher state cache, the representation objective that reads it, and the token budget."""

from __future__ import annotations

import logging
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from nas_bert.distill.state_cache import TeacherStateCache, sequence_keys
from nas_bert.lit import PretrainDistillation
from nas_bert.modeling.students import build_student, uniform_arch
from nas_bert.stages.pretrain import budget_steps, has_own_mlm_head
from nas_bert.teacher import FrozenTeacher

LAYERS = [0, 3, 6]


def fake_teacher(calls: list[int]):
    """States that are a function of the ids (layer l: ids * (l + 1)), counting the rows computed."""
    def compute(ids: torch.Tensor, rows: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        sub = ids if rows is None else ids[rows]
        calls.append(len(sub))
        return {layer: sub[..., None].float().expand(-1, -1, 4) * (layer + 1) for layer in range(7)}
    return compute


def test_rows_are_computed_once_stored_by_content_and_survive_a_reopen(tmp_path):
    calls: list[int] = []
    compute = fake_teacher(calls)
    cache = TeacherStateCache(tmp_path, LAYERS, seq_len=5, hidden=4, capacity=3)
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    reference = fake_teacher([])
    first = cache.lookup(ids, None, partial(compute, ids))
    assert calls == [2] and set(first) == set(LAYERS)
    torch.testing.assert_close(first[3], reference(ids)[3])
    swapped = ids.flip(0)  # the same sequences in another order: all hits
    calls.clear()
    torch.testing.assert_close(cache.lookup(swapped, None, partial(compute, swapped))[6], reference(swapped)[6])
    assert calls == [] and cache.hit_rate() == 0.5
    more = torch.tensor([[1, 2, 3, 4, 5], [11, 12, 13, 14, 15], [16, 17, 18, 19, 20]])
    calls.clear()
    cache.lookup(more, None, partial(compute, more))
    assert calls == [2] and cache.filled == 3  # one new row fits, the other is computed and not kept
    reopened = TeacherStateCache(tmp_path, LAYERS, seq_len=5, hidden=4, capacity=3)
    assert reopened.filled == 3
    calls.clear()
    torch.testing.assert_close(reopened.lookup(more[:2], None, partial(compute, more[:2]))[0], reference(more[:2])[0])
    assert calls == []


def test_other_lengths_masks_and_shapes(tmp_path):
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    assert sequence_keys(ids) != sequence_keys(ids, torch.tensor([[1, 1, 1, 0, 0]]))
    assert sequence_keys(ids) == sequence_keys(ids, torch.ones_like(ids))
    cache = TeacherStateCache(tmp_path, LAYERS, seq_len=5, hidden=4, capacity=2)
    short = ids[:, :3]
    cache.lookup(short, None, partial(fake_teacher([]), short))
    assert cache.filled == 0  # another length: computed, not stored
    cache.lookup(ids, None, partial(fake_teacher([]), ids))
    rebuilt = TeacherStateCache(tmp_path, LAYERS, seq_len=6, hidden=4, capacity=2)  # another shape: starts again
    assert rebuilt.filled == 0 and np.load(tmp_path / "states.npy", mmap_mode="r").shape == (2, 3, 6, 4)
    with pytest.raises(ValueError, match="capacity"):
        TeacherStateCache(tmp_path, LAYERS, seq_len=5, hidden=4, capacity=0)


def test_the_representation_objective_reads_the_same_states_from_the_cache(tiny_teacher_dir, tmp_path):
    teacher = FrozenTeacher(str(tiny_teacher_dir), num_blocks=2)
    student = build_student(uniform_arch(2, 32, 2), vocab_size=30522, max_positions=128, head_dim=16).eval()
    weights = {"hidden_weight": 1.0, "embedding_weight": 1.0, "last_boundary_weight": 2.0}
    live = PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="representation",
                                intermediate=weights)
    cached = PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="representation",
                                  intermediate=weights, teacher_cache={"dir": str(tmp_path), "capacity": 8})
    cached.intermediate.load_state_dict(live.intermediate.state_dict())
    batch = {"input_ids": torch.randint(1000, 2000, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    expected = live.losses(batch)
    assert {"hidden", "hidden_last", "embedding"} <= set(expected) and "mlm" not in expected
    assert live.teacher_sequences == 2  # the teacher ran on the batch: its FLOPs count in flops_per_batch
    computed, read = cached.losses(batch), cached.losses(batch)  # computed, then read back (float16 on disk)
    assert cached.teacher_sequences == 0  # read back: no teacher FLOPs
    torch.testing.assert_close(computed["loss"], expected["loss"], rtol=2e-3, atol=1e-4)
    assert torch.equal(computed["loss"], read["loss"])  # the same values whatever the cache held
    assert cached.teacher_cache.hit_rate() == 0.5
    assert not any(p.requires_grad for n, p in student.lm_head.named_parameters() if n != "decoder.weight")
    with pytest.raises(ValueError, match="teacher_cache=null"):
        PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="both",
                             intermediate=weights, teacher_cache={"dir": str(tmp_path), "capacity": 8})
    # MiniLM on teacher layer 1, inside the one block of this student: its input is no boundary, and still cached
    minilm_inside = {**weights, "minilm_weight": 1.0, "minilm_layer": 1}
    shallow = build_student(uniform_arch(1, 32, 1), vocab_size=30522, max_positions=128, head_dim=16).eval()
    live, cached = (PretrainDistillation(shallow, teacher, optimizer=torch.optim.AdamW, objective="representation",
                                         intermediate=minilm_inside, teacher_cache=spec)
                    for spec in (None, {"dir": str(tmp_path / "any_student"), "capacity": 8}))
    cached.intermediate.load_state_dict(live.intermediate.state_dict())
    expected = live.losses(batch)
    computed, read = cached.losses(batch), cached.losses(batch)
    torch.testing.assert_close(computed["minilm_attention"], expected["minilm_attention"], rtol=2e-3, atol=1e-4)
    assert torch.equal(computed["loss"], read["loss"]) and cached.teacher_cache.hit_rate() == 0.5
    with pytest.raises(ValueError, match="hidden_weight or"):
        PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="representation",
                             intermediate={"hidden_weight": 0.0, "embedding_weight": 0.0})
    assert not has_own_mlm_head(str(tiny_teacher_dir))  # so objective=auto distils representations from it


def test_a_token_budget_sets_the_steps_and_says_when_the_corpus_repeats(caplog):
    cfg = OmegaConf.create({"tokens": 10_000, "data": {"batch_size": 8, "max_seq_length": 128}})
    trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=1)
    with caplog.at_level(logging.WARNING):
        assert budget_steps(cfg, trainer, train_sequences=1000) == 5  # 16 sequences x 128 tokens per step
    assert not caplog.records
    with caplog.at_level(logging.WARNING):
        assert budget_steps(cfg, trainer, train_sequences=40) == 5
    assert "exceeds the corpus" in caplog.text and "2.0 times" in caplog.text
    assert budget_steps(OmegaConf.create({"tokens": None}), trainer, 10) is None
    with pytest.raises(ValueError, match="one optimizer step"):
        budget_steps(OmegaConf.create({"tokens": 100, "data": {"batch_size": 8, "max_seq_length": 128}}), trainer, 10)
