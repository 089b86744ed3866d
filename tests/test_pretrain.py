"""Pre-training KD: the loss is the stated mix, students and baselines come from the schema, the module learns."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.data import CorpusDataModule
from nas_bert.distill import prediction_kd_loss, soft_cross_entropy
from nas_bert.distill.masking import TokenMasker
from nas_bert.distill.mlm_head import load_masked_lm
from nas_bert.encoder import encoder_params
from nas_bert.lit import PretrainDistillation
from nas_bert.modeling.students import build_student, load_searched_arch, uniform_arch
from nas_bert.space import SearchSpace
from nas_bert.teacher import FrozenTeacher

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw.gz"


@pytest.fixture(scope="module")
def mlm_teacher(tmp_path_factory) -> FrozenTeacher:
    """A random 2-layer BERT with its MLM head, saved and loaded as the pre-training stage loads teachers."""
    path = tmp_path_factory.mktemp("mlm_teacher")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    return FrozenTeacher(str(path), loader=load_masked_lm)


def test_kd_loss_is_the_stated_mix_of_mlm_and_kl():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    labels = torch.full((2, 5), -100)
    labels[0, 1], labels[1, 3] = 4, 7
    parts = prediction_kd_loss(student, teacher, labels, kd_weight=0.3, temperature=2.0)
    s, t = student[labels != -100], teacher[labels != -100]  # (2, V): only masked positions count
    mlm = torch.nn.functional.cross_entropy(s, labels[labels != -100])
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / 2, -1), torch.log_softmax(t / 2, -1),
                                    log_target=True, reduction="batchmean") * 4
    torch.testing.assert_close(parts["mlm"], mlm)
    torch.testing.assert_close(parts["kd"], kl)
    torch.testing.assert_close(parts["loss"], 0.7 * mlm + 0.3 * kl)
    assert float(soft_cross_entropy(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_uniform_baselines_are_archs_with_the_same_counting():
    arch = uniform_arch(num_layers=6, hidden=128, num_blocks=3)
    assert arch.layers == ["mha_128", "ffn_128"] * 6 and len(arch.blocks) == 3
    model = build_student(arch, vocab_size=1000, max_positions=64)
    assert sum(p.numel() for p in model.nas_bert.parameters()) == encoder_params(arch, 1000, 64)
    assert [b.depth for b in uniform_arch(num_layers=5, hidden=128, num_blocks=3).blocks] == [4, 4, 2]  # 2, 2, 1 layers
    with pytest.raises(ArchitectureError, match="cannot fill 3 blocks"):
        uniform_arch(num_layers=2, hidden=128, num_blocks=3)


def test_an_architecture_from_another_space_is_refused(tmp_path, tiny_space):
    other = SearchSpace(hidden_sizes=(16, 32), ops=("mha", "ffn"), num_blocks=3, slots_per_block=2, head_dim=8,
                        name="other")
    arch = Arch(blocks=(BlockArch(16, ("mha", "ffn")),) * 3, meta={"space": other.to_dict()})
    path = arch.save(tmp_path / "a.yaml")
    with pytest.raises(ArchitectureError, match="searched in space 'other', not in the configured space 'tiny'"):
        load_searched_arch(path, tiny_space)
    assert load_searched_arch(path, other).blocks == arch.blocks


def test_pretraining_with_kd_lowers_the_loss(tiny_teacher_dir, mlm_teacher, cache_dir, tmp_path):
    L.seed_everything(0)
    student = build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16)
    data = CorpusDataModule(tokenizer=str(tiny_teacher_dir), train_files=str(SAMPLE), validation_files=str(SAMPLE),
                            max_seq_length=32, batch_size=8, cache_dir=str(cache_dir), max_train_samples=16,
                            max_eval_samples=16)
    module = PretrainDistillation(student, mlm_teacher, optimizer=partial(torch.optim.AdamW, lr=3e-3),
                                  objective="prediction", masker=TokenMasker.for_tokenizer(data.tokenizer))
    trainer = L.Trainer(accelerator="cpu", max_steps=30, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, limit_val_batches=2,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]
    # (a random teacher's logits are nearly uniform, so the KD term starts near 0: check the total and MLM)
    assert after["val/loss"] < 0.8 * before["val/loss"] and after["val/mlm"] < before["val/mlm"], (before, after)
    assert all(not k.startswith("teacher") for k in module.state_dict())


def test_a_tokenizer_that_is_not_the_teachers_is_refused(tiny_teacher_dir, tmp_path):
    from transformers import AutoTokenizer, BertTokenizerFast

    from nas_bert.stages.pretrain import check_tokenizer

    check_tokenizer(AutoTokenizer.from_pretrained(tiny_teacher_dir), str(tiny_teacher_dir))  # the same: fine
    vocab = (tiny_teacher_dir / "vocab.txt").read_text().splitlines()
    vocab[2000], vocab[2001] = vocab[2001], vocab[2000]  # same size, two ids swapped
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    other = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    with pytest.raises(ValueError, match="does not match the teacher's vocabulary.*set data.tokenizer"):
        check_tokenizer(other, str(tiny_teacher_dir))


def test_logits_are_taken_at_masked_positions_only():
    from nas_bert.distill.mlm_head import EncoderWithMLMHead, TeacherMLMHead
    from nas_bert.lit.pretrain import masked_logits

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=32)
    encoder = BertForMaskedLM(config).bert
    models = [BertForMaskedLM(config), build_student(uniform_arch(2, 16, 1), vocab_size=50, max_positions=32,
                                                     head_dim=8),
              EncoderWithMLMHead(encoder, TeacherMLMHead.from_encoder(encoder))]
    inputs = {"input_ids": torch.randint(1, 50, (2, 7)), "attention_mask": torch.ones(2, 7, dtype=torch.long)}
    masked = torch.zeros(2, 7, dtype=torch.bool)
    masked[0, 2], masked[1, 5], masked[1, 6] = True, True, True
    for model in models:
        model.eval()
        logits, states = masked_logits(model, inputs, masked, output_hidden_states=True)
        full = model(**inputs, output_hidden_states=True)
        torch.testing.assert_close(logits, full.logits[masked])  # (3, V)
        assert len(states) == len(full.hidden_states)


def test_the_module_pickles_with_its_teacher_as_a_recipe(mlm_teacher):
    """What ddp_spawn does to the module: the copy's teacher is reloaded from its path, and it computes the same."""
    student = build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16).eval()
    module = PretrainDistillation(student, mlm_teacher, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                                  objective="both", intermediate={"hidden_weight": 1.0, "minilm_weight": 1.0})
    copy = pickle.loads(pickle.dumps(module))
    assert copy.teacher.model is not mlm_teacher.model and copy.teacher.name_or_path == mlm_teacher.name_or_path
    ids = torch.randint(1000, 2000, (2, 16))
    labels = torch.full_like(ids, -100)
    labels[:, 3:6] = ids[:, 3:6]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    expected = module.losses(batch)
    got = copy.losses(batch)
    assert expected.keys() == got.keys() >= {"hidden", "minilm_attention", "kd"}
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, msg=key)


@pytest.mark.slow
def test_two_process_ddp_trains_identical_students(tiny_teacher_dir, mlm_teacher, cache_dir, tmp_path):
    """2 processes: the frozen teacher stays outside DDP, intermediate terms work, the ranks end in sync."""
    student = build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16)
    data = CorpusDataModule(tokenizer=str(tiny_teacher_dir), train_files=str(SAMPLE), validation_files=str(SAMPLE),
                            max_seq_length=32, batch_size=4, cache_dir=str(cache_dir), max_train_samples=16,
                            max_eval_samples=8)
    module = PretrainDistillation(student, mlm_teacher, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                                  objective="both", intermediate={"hidden_weight": 1.0, "hidden_loss": "mse",
                                                                  "minilm_weight": 1.0},
                                  masker=TokenMasker.for_tokenizer(data.tokenizer))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_steps=3, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=1,
                        num_sanity_val_steps=0, default_root_dir=tmp_path, callbacks=[
                            SaveWeights(tmp_path), L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt",
                                                                                       save_last=True)])
    trainer.fit(module, datamodule=data)
    assert {"train/hidden", "train/minilm_attention", "val/loss"} <= set(trainer.callback_metrics)
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert state and not any(k.startswith("teacher") for k in state)  # the teacher is never checkpointed
    assert any(k.startswith("intermediate.projections") for k in state)
    ranks = [torch.load(tmp_path / f"weights_rank{r}.pt") for r in (0, 1)]
    for key, value in ranks[0].items():
        torch.testing.assert_close(ranks[1][key], value, rtol=0, atol=0, msg=key)  # identical on both ranks
        assert torch.equal(value, state[key])


class SaveWeights(L.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), self.out / f"weights_rank{trainer.global_rank}.pt")


def test_the_step_flops_are_what_torch_counts_and_the_summary_counts_a_forward(tmp_path):
    """`flops_per_batch` (read by ThroughputMonitor) is FlopCounterMode's count of the step's forward passes, the
    student's 3x when training; the model summary counts `forward` on one sequence. Attention is eager on both sides
    (CPU's fused attention kernels are not counted by FlopCounterMode)."""
    from lightning.pytorch.utilities.model_summary import ModelSummary
    from torch.utils.flop_counter import FlopCounterMode

    from nas_bert.lit.pretrain import masked_logits

    BertForMaskedLM(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                               intermediate_size=64, max_position_embeddings=128)).save_pretrained(tmp_path)
    teacher = FrozenTeacher(str(tmp_path), loader=load_masked_lm)
    teacher.model.set_attn_implementation("eager")
    student = build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16, dropout=0.1)
    module = PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="prediction")
    ids = torch.randint(1000, 2000, (3, 20))
    labels = torch.full_like(ids, -100)
    labels[:, 2:5] = ids[:, 2:5]
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def counted(fn) -> int:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops()

    forward = counted(lambda: module.losses(batch, train=False))  # the step's forward passes, teacher included
    assert module.step_flops(batch, train=False) == forward > 0
    student_forward = counted(lambda: masked_logits(student, {"input_ids": ids}, labels != -100, False))
    assert module.step_flops(batch, train=True) - module.step_flops(batch, train=False) == 2 * student_forward
    module.train()  # the summary's own forward is in eval mode, where attention is fused: count it in train mode
    summary = counted(lambda: module(module.example_input_array))
    assert summary > 0 and module.example_input_array.shape == (1, 128)
    fused = 2 * 4 * 128 * 128 * 32  # the student's 2 attentions' scores, which a fused kernel may leave uncounted
    assert summary - fused <= ModelSummary(module).total_flops <= summary
