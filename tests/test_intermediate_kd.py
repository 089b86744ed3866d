"""Intermediate KD terms (TinyBERT hidden/attention, MiniLM relations): values, masking, wiring, errors."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from scipy.special import rel_entr
from transformers import BertConfig, BertForMaskedLM

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.distill.intermediate import (
    IntermediateDistillation,
    Recorder,
    default_relation_heads,
    masked_relation_kl,
    masked_score_mse,
    relation_scores,
    sequence_relation_mse,
    teacher_qkv,
    teacher_qkv_modules,
    token_relation_mse,
)
from nas_bert.distill.mlm_head import load_masked_lm
from nas_bert.lit import PretrainDistillation
from nas_bert.modeling.students import build_student
from nas_bert.teacher import FrozenTeacher

ARCH = Arch(blocks=(BlockArch(32, ("mha", "ffn", "mha", "sepconv3")), BlockArch(48, ("ffn", "mha", "identity"))))


def small_teacher(layers: int = 4) -> BertForMaskedLM:
    torch.manual_seed(1)
    return BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=48, num_hidden_layers=layers, num_attention_heads=4,
                                      intermediate_size=64, max_position_embeddings=64)).eval()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> FrozenTeacher:
    path = tmp_path_factory.mktemp("mlm_teacher")
    small_teacher().save_pretrained(path)
    return FrozenTeacher(str(path), loader=load_masked_lm)


def batch(b: int = 3, t: int = 10) -> dict[str, torch.Tensor]:
    torch.manual_seed(2)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    labels = torch.full((b, t), -100)
    labels[:, 2] = 5
    return {"input_ids": torch.randint(1, 100, (b, t)) * mask, "attention_mask": mask, "labels": labels}


def test_relation_heads_divide_every_width():
    assert default_relation_heads([64, 128, 192, 256], 384, 12) == 8
    assert default_relation_heads([32, 48], 48, 4) == 4
    assert default_relation_heads([30], 48, 12) == 6


def test_relation_kl_matches_a_direct_computation_and_ignores_padding():
    torch.manual_seed(0)
    t, s = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    mask = torch.tensor([[1, 1, 1, 0]])
    expected = 0.0
    for head in range(2):
        for query in range(3):  # real queries only; the padded key is left out of both softmaxes
            p, q = (torch.softmax(x[0, head, query, :3], -1).numpy() for x in (t, s))
            expected += rel_entr(p, q).sum()
    assert float(masked_relation_kl(t, s, mask)) == pytest.approx(expected / 6, rel=1e-5)
    t2, s2 = t.clone(), s.clone()
    t2[..., 3], s2[..., 3, :] = 50.0, -7.0  # scores of the padded key and query change nothing
    assert float(masked_relation_kl(t2, s2, mask)) == pytest.approx(float(masked_relation_kl(t, s, mask)), rel=1e-6)
    assert float(masked_relation_kl(t, t, mask)) == pytest.approx(0.0, abs=1e-6)


def test_score_mse_counts_only_real_pairs():
    t, s = torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3)
    s[0, 0, 0, 1] = 2.0  # real pair
    s[0, 0, 2, :] = 9.0  # padded query
    assert float(masked_score_mse(t, s, torch.tensor([[1, 1, 0]]))) == pytest.approx(4.0 / 4)


def test_relation_scores_split_concatenated_heads():
    x = torch.randn(2, 5, 12)
    scores = relation_scores(x, x, heads=3)  # (B, 3, T, T)
    head1 = x[..., 4:8]
    torch.testing.assert_close(scores[:, 1], head1 @ head1.transpose(-1, -2) / math.sqrt(4))


def test_teacher_layers_are_spread_over_each_block():
    terms = IntermediateDistillation(ARCH, 48, 4, 4, attention_weight=1.0)
    # block 0 (teacher layers 0-1) has two mha -> layers 0, 1; block 1 (layers 2-3) has one -> its last, 3
    assert terms.teacher_layer_for() == [0, 1, 3]
    terms = IntermediateDistillation(ARCH, 48, 6, 4, attention_weight=1.0)
    assert terms.teacher_layer_for() == [0, 2, 5]


@pytest.mark.parametrize("weights", [
    {"hidden_weight": 1.0}, {"attention_weight": 1.0}, {"minilm_weight": 1.0},
    {"hidden_weight": 1.0, "attention_weight": 0.5, "minilm_weight": 0.5},
])
def test_terms_are_logged_and_trained(weights, teacher):
    student = build_student(ARCH, vocab_size=100, max_positions=64, head_dim=16)
    terms = {"hidden_weight": 0.0, "embedding_weight": 0.0, "hidden_loss": "mse", **weights}  # these terms alone
    module = PretrainDistillation(student, teacher, optimizer=partial(torch.optim.Adam, lr=3e-3), objective="both",
                                  intermediate=terms)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    assert {id(p) for p in module.intermediate.parameters()} <= {id(p) for p in module.parameters()}
    first = None
    for _ in range(25):
        parts = module.losses(batch())
        first = first if first is not None else {k: v.item() for k, v in parts.items()}
        optimizer.zero_grad()
        parts["intermediate"].backward()
        optimizer.step()
    last = {k: float(v) for k, v in module.losses(batch()).items()}
    active = [k for k in ("hidden", "attention_mse", "minilm_attention", "minilm_value") if k in last]
    assert len(active) == len(weights) + ("minilm_weight" in weights)
    assert last["intermediate"] < 0.7 * first["intermediate"], (first, last)
    expected = sum(w * last[k] for k, w in (("hidden", weights.get("hidden_weight", 0)),
                                            ("attention_mse", weights.get("attention_weight", 0))) if k in last)
    expected += weights.get("minilm_weight", 0) * (last.get("minilm_attention", 0) + last.get("minilm_value", 0))
    assert last["intermediate"] == pytest.approx(expected, rel=1e-5)
    assert last["loss"] == pytest.approx(0.5 * last["mlm"] + 0.5 * last["kd"] + last["intermediate"], rel=1e-5)


def test_off_by_default_for_the_prediction_objective_and_hooks_are_removed(teacher):
    student = build_student(ARCH, vocab_size=100, max_positions=64, head_dim=16)
    module = PretrainDistillation(student, teacher, optimizer=partial(torch.optim.Adam, lr=1e-3),
                                  objective="prediction")
    assert module.intermediate is None and set(module.losses(batch())) == {"loss", "mlm", "kd"}
    module = PretrainDistillation(student, teacher, optimizer=partial(torch.optim.Adam, lr=1e-3),
                                  objective="prediction", intermediate={"minilm_weight": 1.0})
    hooks = lambda: sum(len(m._forward_hooks) for m in [*student.modules(), *teacher.model.modules()])  # noqa: E731
    module.losses(batch())  # (transformers adds its own output-capturing hooks on a first call)
    before = hooks()
    module.losses(batch())
    assert hooks() == before and not any(m._forward_hooks for m in student.modules())


def test_teacher_qkv_from_hidden_states_equal_the_layers_own(teacher):
    """The teacher needs no hooks: layer i's q / k / v are its projections of hidden state i."""
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    modules = teacher_qkv_modules(teacher.model)
    recorder = Recorder({f"t{i}.{part}": modules[i][part] for i in (0, 3) for part in ("query", "key", "value")})
    with recorder.recording() as recorded:
        states = teacher.hidden_states(**inputs)
    computed = teacher_qkv(teacher.model, states, {0, 3})
    assert computed.keys() == recorded.keys() and len(computed) == 6
    for name, value in computed.items():
        torch.testing.assert_close(value, recorded[name])  # (B, T, D)


def test_bad_settings_are_named():
    no_mha = Arch(blocks=(BlockArch(32, ("ffn", "sepconv3")), BlockArch(32, ("ffn", "identity"))))
    with pytest.raises(ArchitectureError, match="no mha layer"):
        IntermediateDistillation(no_mha, 48, 4, 4, minilm_weight=1.0)
    assert IntermediateDistillation(no_mha, 48, 4, 4, hidden_weight=1.0).active
    with pytest.raises(ArchitectureError, match="do not split into the student's 2 blocks"):
        IntermediateDistillation(ARCH, 48, 3, 4, hidden_weight=1.0)
    with pytest.raises(ArchitectureError, match="relation_heads=5 does not divide"):
        IntermediateDistillation(ARCH, 48, 4, 4, attention_weight=1.0, relation_heads=5)
    with pytest.raises(ValueError, match=">= 0"):
        IntermediateDistillation(ARCH, 48, 4, 4, hidden_weight=-1.0)


def test_relation_losses_compare_similarity_structure_without_projections():
    """A rotated and rescaled copy of the teacher's states has the teacher's relations (loss 0) at any width;
    a space dominated by one shared direction does not. Relations need no projection to the teacher's width."""
    torch.manual_seed(0)
    teacher = torch.randn(2, 6, 48)  # (B, T, D)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    rotation, _ = torch.linalg.qr(torch.randn(48, 48))
    student = 3.0 * teacher @ rotation  # same relations
    assert float(token_relation_mse(student, teacher, mask)) == pytest.approx(0.0, abs=1e-10)
    shared = teacher[..., :32] + 10.0  # (B, T, 32): every token close to one direction
    assert float(token_relation_mse(shared, teacher, mask)) > 0.1
    pooled = torch.randn(5, 48)
    assert float(sequence_relation_mse(pooled @ rotation, pooled)) == pytest.approx(0.0, abs=1e-10)
    terms = IntermediateDistillation(ARCH, 48, 4, 4, hidden_weight=1.0, embedding_weight=1.0,
                                     hidden_loss="relation", embedding_loss="relation")
    assert len(terms.projections) == 0
    with pytest.raises(ValueError, match="hidden_loss='l1'.*relation"):
        IntermediateDistillation(ARCH, 48, 4, 4, hidden_weight=1.0, hidden_loss="l1")
