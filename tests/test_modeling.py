"""The Hugging Face model classes of `nas_bert.modeling`: config, save/load, Auto classes, heads, Trainer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import nas_bert.modeling as modeling
from nas_bert.arch import Arch, ArchitectureError, BlockArch
from nas_bert.encoder import encoder_params
from nas_bert.modeling import (
    NasBertConfig,
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertModel,
)
from nas_bert.modeling.modeling_nas_bert import NasBertPooler

ARCH = Arch(blocks=(BlockArch(32, ("mha", "ffn", "identity")), BlockArch(48, ("sepconv3", "mha", "ffn"))))
VOCAB, MAX_POS = 1000, 64
ALL_CLASSES = (NasBertModel, NasBertForMaskedLM, NasBertForSequenceClassification, NasBertForQuestionAnswering)


def make_config(**kwargs) -> NasBertConfig:
    return NasBertConfig.from_arch(ARCH, head_dim=16, vocab_size=VOCAB, max_position_embeddings=MAX_POS, **kwargs)


def make_inputs(batch: int = 2, seq: int = 12) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, VOCAB, (batch, seq), generator=gen)  # (B, T)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[1, seq - 3:] = 0  # second sequence padded
    input_ids[1, seq - 3:] = 0
    token_type_ids = torch.zeros(batch, seq, dtype=torch.long)
    token_type_ids[:, seq // 2:] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # shared (tied) parameters counted once


def test_config_holds_arch_and_derived_fields(tmp_path: Path) -> None:
    config = make_config()
    assert config.hidden_size == 48 and config.embedding_size == 32 and config.num_hidden_layers == 5
    assert config.layers == ["mha_32", "ffn_32", "identity", "sepconv3_48", "mha_48", "ffn_48"]
    assert config.to_arch() == ARCH
    assert config.to_dict()["arch"] == {"embed": None, "blocks": [b.to_dict() for b in ARCH.blocks]}
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "nas_bert" and saved["arch"] == config.arch and saved["layers"] == config.layers
    loaded = NasBertConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    with pytest.raises(AttributeError, match="derived from `arch`"):
        config.hidden_size = 64


@pytest.mark.parametrize(
    "arch, match",
    [
        ({"blocks": [{"hidden": 32, "ops": ["identity", "mha"]}]}, "identity may only fill the end"),
        ({"blocks": [{"hidden": 32, "ops": ["conv9x"]}]}, "unknown op"),
        ({"blocks": []}, "at least one block"),
        ({"layers": ["mha_32"]}, "'blocks' list"),
        ({"blocks": [{"hidden": 40, "ops": ["mha"]}]}, "not divisible by head_dim"),
    ],
)
def test_bad_arch_raises_clear_error(arch: dict, match: str) -> None:
    with pytest.raises(ArchitectureError, match=match):
        NasBertConfig(arch=arch, head_dim=16)


def test_bad_arch_in_saved_config_raises(tmp_path: Path) -> None:
    make_config().save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["arch"]["blocks"][0]["ops"] = ["identity", "mha", "ffn"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ArchitectureError, match="invalid `arch`"):
        NasBertConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("model_cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_save_load_round_trip_gives_identical_outputs(model_cls: type, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = model_cls(make_config(num_labels=3)).eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not (tmp_path / "pytorch_model.bin").exists()
    loaded = model_cls.from_pretrained(tmp_path).eval()
    assert type(loaded) is model_cls and loaded.config.arch == model.config.arch
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    inputs = make_inputs()
    with torch.no_grad():
        out, out2 = model(**inputs), loaded(**inputs)
    for key, value in out.items():
        assert torch.equal(value, out2[key]), key


def test_base_model_outputs_and_hidden_states() -> None:
    model = NasBertModel(make_config()).eval()
    inputs = make_inputs()
    out = model(**inputs, output_hidden_states=True)
    assert out.last_hidden_state.shape == (2, 12, 48)
    assert [h.shape[-1] for h in out.hidden_states] == [32, 32, 48]  # embeddings, block 1, block 2
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert model(**inputs).hidden_states is None
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], out.last_hidden_state)
    assert model.get_input_embeddings() is model.encoder.embeddings.word


def test_param_counts_match_search_and_heads() -> None:
    config = make_config()
    base = NasBertModel(config)
    assert n_params(base) == encoder_params(ARCH, VOCAB, MAX_POS, 2, 4)
    mlm = NasBertForMaskedLM(config)
    e, h = config.embedding_size, config.hidden_size
    head = (h * e + e) + 2 * e + VOCAB  # dense, LayerNorm, decoder bias (decoder weight is tied)
    assert n_params(mlm) == n_params(base) + head


def test_mlm_decoder_is_tied_to_word_embeddings(tmp_path: Path) -> None:
    model = NasBertForMaskedLM(make_config())
    word = model.nas_bert.encoder.embeddings.word.weight
    assert model.lm_head.decoder.weight is word
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    model.save_pretrained(tmp_path)
    loaded = NasBertForMaskedLM.from_pretrained(tmp_path)
    assert loaded.lm_head.decoder.weight is loaded.nas_bert.encoder.embeddings.word.weight
    assert torch.equal(loaded.lm_head.decoder.weight, word)
    with torch.no_grad():  # still one storage: a change to the embedding shows in the decoder
        loaded.nas_bert.encoder.embeddings.word.weight[5].fill_(1.5)
    assert torch.all(loaded.lm_head.decoder.weight[5] == 1.5)


def test_auto_classes_load_saved_model(tmp_path: Path) -> None:
    from transformers import (
        AutoConfig,
        AutoModel,
        AutoModelForMaskedLM,
        AutoModelForQuestionAnswering,
        AutoModelForSequenceClassification,
    )

    modeling.register_auto_classes()  # registering again must not raise
    NasBertForMaskedLM(make_config()).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), NasBertConfig)
    for auto_cls, expected in (
        (AutoModel, "NasBertModel"),
        (AutoModelForMaskedLM, "NasBertForMaskedLM"),
        (AutoModelForSequenceClassification, "NasBertForSequenceClassification"),
        (AutoModelForQuestionAnswering, "NasBertForQuestionAnswering"),
    ):
        assert type(auto_cls.from_pretrained(tmp_path)).__name__ == expected


def test_registration_is_idempotent_also_for_reloaded_classes() -> None:
    """Registering again (importing twice, or a reloaded module's new class objects) is harmless."""
    from transformers import AutoConfig

    modeling.register_auto_classes()
    reloaded = type("NasBertConfig", (NasBertConfig,), {})  # what importlib.reload would define
    try:
        AutoConfig.register(NasBertConfig.model_type, reloaded, exist_ok=True)
        assert AutoConfig.for_model("nas_bert").__class__ is reloaded
    finally:
        modeling.register_auto_classes()
    assert type(AutoConfig.for_model("nas_bert")) is NasBertConfig


def test_labels_give_losses_for_all_heads() -> None:
    inputs = make_inputs()
    torch.manual_seed(0)
    mlm_labels = inputs["input_ids"].clone()
    mlm_labels[:, ::2] = -100
    out = NasBertForMaskedLM(make_config())(**inputs, labels=mlm_labels)
    assert out.logits.shape == (2, 12, VOCAB) and torch.isfinite(out.loss)

    cls = NasBertForSequenceClassification(make_config(num_labels=3))
    out = cls(**inputs, labels=torch.tensor([0, 2]))
    assert out.logits.shape == (2, 3) and torch.isfinite(out.loss)
    assert cls.config.problem_type == "single_label_classification"

    multi = NasBertForSequenceClassification(make_config(num_labels=3))
    out = multi(**inputs, labels=torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert torch.isfinite(out.loss) and multi.config.problem_type == "multi_label_classification"

    reg = NasBertForSequenceClassification(make_config(num_labels=1))
    out = reg(**inputs, labels=torch.tensor([0.5, -1.0]))
    assert out.logits.shape == (2, 1) and torch.isfinite(out.loss)
    assert reg.config.problem_type == "regression"

    qa = NasBertForQuestionAnswering(make_config())
    out = qa(**inputs, start_positions=torch.tensor([1, 3]), end_positions=torch.tensor([4, 50]))
    assert out.start_logits.shape == out.end_logits.shape == (2, 12) and torch.isfinite(out.loss)


def test_trainer_runs_one_step(tmp_path: Path) -> None:
    pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate>=1.1")
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    model = NasBertForSequenceClassification(make_config(num_labels=2))
    inputs = make_inputs(batch=4)
    dataset = [
        {"input_ids": inputs["input_ids"][i], "attention_mask": inputs["attention_mask"][i], "labels": i % 2}
        for i in range(4)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, report_to=[], use_cpu=True,
        save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )
    result = Trainer(model=model, args=args, train_dataset=dataset).train()
    assert result.global_step == 1 and math.isfinite(result.training_loss)


def test_mean_pooling_classifier_ignores_padding_and_is_saved(tmp_path: Path) -> None:
    config = NasBertConfig.from_arch(ARCH, vocab_size=VOCAB, max_position_embeddings=MAX_POS, head_dim=16,
                                     num_labels=2, classifier_pooling="mean")
    model = NasBertForSequenceClassification(config).eval()
    ids = torch.randint(5, VOCAB, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 3)], dim=1).long()
    torch.testing.assert_close(model(padded, attention_mask=mask).logits, model(ids).logits)  # (attention masks keys)
    model.save_pretrained(tmp_path)
    assert NasBertForSequenceClassification.from_pretrained(tmp_path).pooler.pooling == "mean"
    with pytest.raises(ValueError, match="classifier_pooling"):
        NasBertConfig(classifier_pooling="max")


def test_pair_pooling_reads_each_segment_and_falls_back_to_one():
    pooler = NasBertPooler(4, "pair")
    states = torch.arange(24, dtype=torch.float).view(1, 6, 4)  # (B, T, H)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    types = torch.tensor([[0, 0, 1, 1, 1, 0]])
    captured = {}
    pooler.dense.register_forward_hook(lambda module, args, out: captured.update(x=args[0]))
    pooler(states, mask, types)
    u, v = states[0, :2].mean(0), states[0, 2:5].mean(0)
    torch.testing.assert_close(captured["x"][0], torch.cat([u, v, (u - v).abs(), u * v]))
    pooler(states, mask, None)  # one sentence: v = u
    u = states[0, :5].mean(0)
    torch.testing.assert_close(captured["x"][0], torch.cat([u, u, torch.zeros(4), u * u]))
