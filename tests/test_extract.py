"""Extract, then distill: students and supernet ops started from the teacher's weights (`nas_bert/extract/`), on a
tiny random BERT whose head size (8) the tiny space shares; and `student.init=extract` through the stage."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.runs import run_stage, tiny
from transformers import BertConfig, BertModel

from nas_bert.arch import Arch, BlockArch
from nas_bert.distill.masking import TokenMasker
from nas_bert.extract import ExtractionError, TeacherShape, extract_student, extract_supernet, random_selection
from nas_bert.extract.importance import importance_selection
from nas_bert.extract.plan import layer_map
from nas_bert.modeling.students import build_student, uniform_arch
from nas_bert.nas.supernet import Supernet
from nas_bert.ops import SepConv
from nas_bert.space import SearchSpace

VOCAB = 120


def bert(vocab: int = VOCAB, positions: int = 64) -> BertModel:
    """A random 6-layer BERT of width 32, 4 heads of 8, 128 FFN neurons."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=positions)
    return BertModel(config).eval()


def student_of(arch: Arch, head_dim: int = 8, ffn_ratio: int = 4):
    return build_student(arch, vocab_size=VOCAB, max_positions=64, head_dim=head_dim, ffn_ratio=ffn_ratio,
                         dropout=0.0).eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, VOCAB, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return ids, mask


def batches(count: int = 3) -> list[dict[str, torch.Tensor]]:
    ids, mask = inputs()
    return [{"input_ids": ids.roll(i, dims=1), "attention_mask": mask} for i in range(count)]


MASKER = TokenMasker(mask_token_id=4, vocab_size=VOCAB, special_token_ids=(0, 1, 2, 3, 4))


@pytest.mark.parametrize("how", ["random", "importance"])
def test_the_teachers_full_width_and_every_layer_extracts_the_teacher_itself(how):
    teacher = bert()
    shape = TeacherShape.of(teacher.config)
    selection = (random_selection(shape, 8, seed=3) if how == "random"
                 else importance_selection(teacher, batches(), MASKER, 8))
    student = student_of(uniform_arch(6, 32, 3))
    report = extract_student(student, teacher, selection)
    assert report["teacher_layers"] == [0, 1, 2, 3, 4, 5] and report["fresh"] == ["mlm_head"]
    ids, mask = inputs()
    with torch.no_grad():
        ours = student.nas_bert(ids, attention_mask=mask, output_hidden_states=True).hidden_states
        theirs = teacher(ids, attention_mask=mask, output_hidden_states=True).hidden_states
    real = mask.bool()
    for n, state in enumerate(ours):  # embeddings, then the 3 block boundaries (2 teacher layers each)
        torch.testing.assert_close(state[real], theirs[2 * n][real], atol=1e-5, rtol=1e-4)


def test_a_narrower_student_copies_the_selected_rows_and_columns():
    teacher = bert()
    selection = random_selection(TeacherShape.of(teacher.config), 8, seed=0)
    arch = Arch(blocks=(BlockArch(16, ("mha", "ffn")), BlockArch(24, ("mha", "ffn"))))
    student = student_of(arch, ffn_ratio=2)
    extract_student(student, teacher, selection)
    encoder = student.nas_bert.encoder
    dims16, dims24 = selection.hidden_dims(16), selection.hidden_dims(24)
    assert set(dims16.tolist()) <= set(dims24.tolist())  # narrower subspaces nest in wider ones
    torch.testing.assert_close(encoder.embeddings.word.weight, teacher.embeddings.word_embeddings.weight[:, dims16])
    layer = teacher.encoder.layer[5]  # block 1's MHA: slot 2 -> student layer 1 of 2 -> teacher layer 5 (of [2, 5])
    units = selection.unit_dims(5, 24)
    mha, ffn = encoder.blocks[1].layers
    torch.testing.assert_close(mha.qkv.weight[24:48], layer.attention.self.key.weight[units][:, dims24])
    torch.testing.assert_close(mha.out.weight, layer.attention.output.dense.weight[dims24][:, units])
    neurons = selection.neuron_ids(5, 48)
    torch.testing.assert_close(ffn.up.weight, layer.intermediate.dense.weight[neurons][:, dims24])
    torch.testing.assert_close(ffn.norm.bias, layer.output.LayerNorm.bias[dims24])
    projection = encoder.blocks[1].projection.weight  # (24, 16): a selection matrix, one 1 per kept dimension
    assert projection.sum() == 16 and set(projection.unique().tolist()) == {0.0, 1.0}


def test_a_searched_students_sepconv_ops_stay_fresh():
    teacher = bert()
    arch = Arch(blocks=(BlockArch(32, ("mha", "sepconv3")), BlockArch(16, ("sepconv3", "ffn")),
                        BlockArch(16, ("ffn", "identity"))))
    student = student_of(arch)
    convs = [m for m in student.modules() if isinstance(m, SepConv)]
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in convs]
    report = extract_student(student, teacher, random_selection(TeacherShape.of(teacher.config), 8, 0))
    assert all(torch.equal(b[k], v) for m, b in zip(convs, before) for k, v in m.state_dict().items())
    # 6 slots = 3 student layers <- teacher layers 1, 3, 5
    assert [op["from"] for op in report["ops"]] == ["teacher layer 1", "fresh", "fresh", "teacher layer 3",
                                                    "teacher layer 5"]
    assert report["fresh"] == ["mlm_head", "sepconv3"]


@pytest.mark.parametrize("student_head", [4, 16])
def test_heads_are_slices_of_a_teacher_head_or_whole_heads_side_by_side(student_head):
    teacher = bert()  # heads of 8
    selection = random_selection(TeacherShape.of(teacher.config), student_head, 0)
    student = student_of(uniform_arch(2, 16, 1), head_dim=student_head)
    extract_student(student, teacher, selection)
    dims = selection.unit_dims(5, 16).view(-1, student_head)  # (student heads, head size): teacher dims per head
    teacher_heads = dims.div(8, rounding_mode="floor")
    if student_head == 4:  # each student head: one contiguous half of one teacher head
        assert (teacher_heads == teacher_heads[:, :1]).all() and (dims % 4 == torch.arange(4)).all()
    else:  # each student head: two whole teacher heads side by side
        assert [sorted(set(h.tolist())) for h in teacher_heads] == [[2 * u, 2 * u + 1] for u in
                                                                    (dims[:, 0] // 16).tolist()]
    mha = student.nas_bert.encoder.blocks[0].layers[2]  # layer 1's MHA <- teacher layer 5 (2 of 6: 2, 5)
    query = teacher.encoder.layer[5].attention.self.query
    scale = (student_head / 8) ** 0.5  # each term of a logit keeps the teacher's scale
    expected = query.weight[dims.reshape(-1)][:, selection.hidden_dims(16)] * scale
    torch.testing.assert_close(mha.qkv.weight[:16], expected)


def test_extractions_that_cannot_fit_fail_naming_the_sizes_and_the_setting():
    teacher = bert()
    shape = TeacherShape.of(teacher.config)
    with pytest.raises(ExtractionError, match=r"head size 6.*teacher's head size 8.*student.head_dim"):
        random_selection(shape, 6, 0)
    selection = random_selection(shape, 8, 0)
    with pytest.raises(ExtractionError, match=r"width 48 is above the teacher's 32"):
        extract_student(student_of(uniform_arch(2, 48, 1)), teacher, selection)
    with pytest.raises(ExtractionError, match=r"ratio 8 has 256 neurons, the teacher's 128.*student.ffn_ratio"):
        extract_student(student_of(uniform_arch(2, 32, 1), ffn_ratio=8), teacher, selection)
    with pytest.raises(ExtractionError, match=r"8 layers .* teacher 6: set student.extract.layers"):
        extract_student(student_of(uniform_arch(8, 16, 2)), teacher, selection)
    report = extract_student(student_of(uniform_arch(8, 16, 2)), teacher, selection, layers=[0, 0, 1, 2, 3, 3, 4, 5])
    assert report["teacher_layers"] == [0, 0, 1, 2, 3, 3, 4, 5]  # a repeat rule given explicitly
    assert layer_map(4, 6) == [1, 2, 4, 5] and layer_map(2, 12) == [5, 11]


def test_importance_scores_leave_the_teacher_as_it_was_and_rank_what_matters():
    teacher = bert()
    teacher.requires_grad_(False)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    first = importance_selection(teacher, batches(), MASKER, 8)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert torch.equal(first.neurons, importance_selection(teacher, batches(), MASKER, 8).neurons)  # deterministic
    assert sorted(first.units[3].tolist()) == [0, 1, 2, 3] and sorted(first.hidden.tolist()) == list(range(32))
    with torch.no_grad():  # a dimension made loud is ranked first
        teacher.embeddings.LayerNorm.weight[7] = 50.0
    assert int(importance_selection(teacher, batches(1), MASKER, 8).hidden[0]) == 7
    with pytest.raises(ExtractionError, match="at least one batch"):
        importance_selection(teacher, [], MASKER, 8)


def test_every_supernet_op_of_every_width_starts_from_its_slots_teacher_layer():
    teacher = bert()
    space = SearchSpace(hidden_sizes=(16, 32), ops=("mha", "ffn", "sepconv3"), num_blocks=3, slots_per_block=2,
                        head_dim=8, name="tiny")
    supernet = Supernet(space, teacher_hidden=32)
    selection = random_selection(TeacherShape.of(teacher.config), 8, 0)
    report = extract_supernet(supernet, teacher, selection)
    # 6 slots = 3 layers <- teacher layers 1, 3, 5: each block's top layer, where its output is distilled
    assert report["ops_extracted"] == 3 * 2 * 2 * 2 and report["teacher_layers"] == [1, 3, 5]
    layer = teacher.encoder.layer[5]
    ffn = supernet.blocks[2].slots[1]["ffn_16"]
    neurons, dims = selection.neuron_ids(5, 64), selection.hidden_dims(16)
    torch.testing.assert_close(ffn.down.weight, layer.output.dense.weight[dims][:, neurons])
    in_proj = supernet.blocks[2].in_proj["16"].weight  # (16, 32): reads the width's subspace of the teacher state
    torch.testing.assert_close(in_proj @ torch.arange(32.0), dims.float())
    with pytest.raises(ExtractionError, match="width 24"):
        extract_supernet(Supernet(space, teacher_hidden=24), teacher, selection)


@pytest.fixture(scope="module")
def head8_teacher(tmp_path_factory, tiny_teacher_dir) -> Path:
    """A tiny BERT with heads of 8 (as the tiny space) and the MiniLM tokenizer, saved as a teacher folder."""
    out = tmp_path_factory.mktemp("head8_teacher")
    bert(vocab=30522, positions=128).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tiny_teacher_dir / name, out / name)
    return out


@pytest.mark.slow
def test_train_py_extracts_a_baseline_and_a_searched_student(tmp_path, head8_teacher, cache_dir):
    from nas_bert.stages.pretrain import run_pretrain

    arch_file = tmp_path / "searched.yaml"
    Arch(blocks=(BlockArch(32, ("mha", "sepconv3")), BlockArch(16, ("ffn", "mha")),
                 BlockArch(16, ("ffn", "identity")))).save(arch_file)
    for name, which in [("baseline", "student.baseline={layers: 2, hidden: 16, blocks: 1}"),
                        ("searched", f"student.arch_file={arch_file}")]:
        run = tmp_path / name
        run_stage(run_pretrain, "train", run, *tiny(head8_teacher, cache_dir, which, "student.init=extract",
                                                    "student.max_positions=128", "student.extract.batches=2",
                                                    "student.extract.batch_size=4"), log_dir=tmp_path)
        init = json.loads((run / "student_init.json").read_text())
        assert init["init"] == "extract" and init["selection"] == "importance"
        assert (run / "model" / "model.safetensors").is_file()
        assert "extract (importance)" in (run / "model" / "README.md").read_text()  # the card names the init
    assert init["teacher_layers"] == [1, 3, 5] and init["fresh"] == ["mlm_head", "sepconv3"]
    with pytest.raises(ExtractionError, match="width 64 is above"):
        run_stage(run_pretrain, "train", tmp_path / "wide", *tiny(
            head8_teacher, cache_dir, "student.baseline={layers: 2, hidden: 64, blocks: 1}", "student.init=extract"),
            log_dir=tmp_path)
    assert not (tmp_path / "wide" / "model").exists()
    with pytest.raises(ExtractionError, match=r"2 batches of 64 sequences \(128\), the training corpus has"):
        run_stage(run_pretrain, "train", tmp_path / "few", *tiny(
            head8_teacher, cache_dir, "student.baseline={layers: 2, hidden: 16, blocks: 1}", "student.init=extract",
            "student.extract.batches=2", "student.extract.batch_size=64"), log_dir=tmp_path)


@pytest.mark.slow
def test_a_search_can_start_its_supernet_from_the_teacher(tmp_path, head8_teacher, cache_dir):
    from nas_bert.stages.search import run_search

    run = tmp_path / "search"
    run_stage(run_search, "search", run, *tiny(head8_teacher, cache_dir, "search.init=extract", "latest_link=null",
                                                "search.selection.budgets=[{name: b, max_params_fraction: 0.9}]"),
              log_dir=tmp_path)
    init = json.loads((run / "supernet_init.json").read_text())
    assert init["selection"] == "importance" and init["teacher_layers"] == [1, 3, 5]  # a layer per slot pair
    assert init["ops_extracted"] == 3 * 2 * 2 * 2  # blocks x slots x widths x (mha, ffn): every MHA / FFN op
    assert (run / "ranking.md").is_file() and list((run / "architectures").glob("*.yaml"))
