"""Students inheriting the supernet's weights: exact where the schema allows, clear errors elsewhere."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.inherit import inherit_from_supernet, inherit_teacher_embeddings, load_supernet_checkpoint
from nas_bert.modeling import NasBertConfig, NasBertModel
from nas_bert.nas.supernet import Supernet

D = 48  # teacher width


@pytest.fixture()
def supernet(tiny_space) -> Supernet:
    torch.manual_seed(0)
    net = Supernet(tiny_space, teacher_hidden=D)
    for p in net.parameters():  # away from the init so that copying is visible
        p.data.add_(0.1 * torch.randn_like(p))
    return net.eval()


def student_for(arch: Arch) -> NasBertModel:
    return NasBertModel(NasBertConfig.from_arch(arch, vocab_size=100, max_position_embeddings=32, head_dim=8,
                                                hidden_dropout_prob=0.0)).eval()


def test_a_path_of_changing_widths_is_inherited_exactly(supernet):
    arch = Arch(blocks=(BlockArch(16, ("mha", "ffn")), BlockArch(32, ("sepconv3", "mha")),
                        BlockArch(16, ("ffn", "identity"))))
    student = student_for(arch)
    report = inherit_from_supernet(student, supernet)
    assert report["ops"] == 5 and report["fused_projections"] == 2 and report["embeddings"].startswith("fresh")
    x, mask = torch.randn(2, 7, D), torch.ones(2, 7)
    mask[1, 5:] = 0
    path = supernet.extract(arch)
    h = path.blocks[0].in_proj(x)  # the student's blocks run at the path's widths from here on
    for block in student.encoder.blocks:
        h = block(h, mask)
    # the student body, closed by the supernet's last out-projection, is the chained supernet path
    torch.testing.assert_close(path.blocks[-1].out_proj(h), path(x, mask), atol=1e-5, rtol=1e-4)


def test_equal_widths_keep_the_ops_and_drop_the_fused_projection(supernet):
    arch = Arch(blocks=(BlockArch(32, ("mha", "ffn")),) * 3)
    student = student_for(arch)
    report = inherit_from_supernet(student, supernet)
    assert report["dropped_equal_width_projections"] == 2 and report["fused_projections"] == 0
    source = supernet.blocks[1].slots[0]["mha_32"].state_dict()
    for key, value in student.encoder.blocks[1].layers[0].state_dict().items():
        torch.testing.assert_close(value, source[key])


def test_embeddings_come_from_the_teacher_through_block_0(supernet):
    torch.manual_seed(1)
    teacher = BertModel(BertConfig(vocab_size=100, hidden_size=D, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32))
    arch = Arch(blocks=(BlockArch(16, ("mha", "ffn")),) * 3)
    student = student_for(arch)
    report = inherit_from_supernet(student, supernet, teacher)
    assert report["embeddings"] == "projected from the teacher: word, position, token_type"
    proj = supernet.blocks[0].in_proj["16"]
    expected = teacher.embeddings.word_embeddings.weight @ proj.weight.T  # (V, 16)
    torch.testing.assert_close(student.encoder.embeddings.word.weight, expected)
    torch.testing.assert_close(student.encoder.embeddings.token_type.weight,
                               teacher.embeddings.token_type_embeddings.weight @ proj.weight.T + proj.bias)


def test_teacher_embeddings_are_its_principal_directions():
    """At the teacher's width the projection is a rotation of the centred words (their Gram matrix is kept);
    narrower, it keeps the directions of largest variance first."""
    torch.manual_seed(2)
    teacher = BertModel(BertConfig(vocab_size=100, hidden_size=D, num_hidden_layers=1, num_attention_heads=4,
                                   intermediate_size=64, max_position_embeddings=32))
    words = teacher.embeddings.word_embeddings.weight
    centred = words - words.mean(0)
    full = student_for(Arch(blocks=(BlockArch(D, ("mha", "ffn")),)))
    assert inherit_teacher_embeddings(full, teacher).startswith("teacher PCA")
    ours = full.encoder.embeddings.word.weight
    torch.testing.assert_close(ours @ ours.T, centred @ centred.T, atol=1e-4, rtol=1e-4)
    narrow = student_for(Arch(blocks=(BlockArch(8, ("mha", "ffn")),)))
    inherit_teacher_embeddings(narrow, teacher)
    variances = narrow.encoder.embeddings.word.weight.var(0)  # (8,): decreasing
    assert torch.all(variances[:-1] >= variances[1:] - 1e-6)
    assert variances.sum() > 8 / D * centred.var(0).sum()  # more than an average 8 of the D directions


def test_an_architecture_outside_the_space_is_refused(supernet):
    arch = Arch(blocks=(BlockArch(64, ("mha", "ffn")),) * 3)
    with pytest.raises(ArchitectureError, match="not in the supernet's space 'tiny'.*student.init=scratch"):
        inherit_from_supernet(student_for(arch), supernet)


def test_checkpoints_are_read_and_checked(supernet, tmp_path):
    state = {f"supernet.{k}": v for k, v in supernet.state_dict().items()}
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "nas_bert": {"space": supernet.space.to_dict(), "teacher_hidden": D}}, path)
    loaded = load_supernet_checkpoint(path)
    for key, value in supernet.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    torch.save({"state_dict": state}, tmp_path / "other.ckpt")
    with pytest.raises(ArchitectureError, match="not written by the supernet stage"):
        load_supernet_checkpoint(tmp_path / "other.ckpt")
    with pytest.raises(FileNotFoundError, match="student.init=scratch"):
        load_supernet_checkpoint(tmp_path / "missing.ckpt")
