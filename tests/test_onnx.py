"""ONNX export of the NAS-BERT model classes: onnxruntime matches PyTorch on new shapes with padding masks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

from nas_bert.arch import Arch, BlockArch  # noqa: E402
from nas_bert.modeling import (  # noqa: E402
    NasBertConfig,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertModel,
)
from nas_bert.modeling.onnx_export import (  # noqa: E402
    OnnxCheckError,
    check_onnx,
    export_onnx,
    main,
    random_inputs,
    require,
)

# Two blocks of different widths (a projection between them), every op kind and an identity slot.
ARCH = Arch(blocks=(
    BlockArch(32, ("mha", "sepconv3", "ffn", "identity")),
    BlockArch(64, ("sepconv5", "mha", "ffn")),
))
ATOL = 1e-4


def make_model(cls: type, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    config = NasBertConfig.from_arch(ARCH, head_dim=16, vocab_size=1000, max_position_embeddings=64, **kwargs)
    return cls(config).eval()


def axis_names(path: Path) -> dict[str, list[str | int]]:
    """{input/output name: its dims (a name for dynamic axes, else the size)}."""
    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*graph.input, *graph.output)}


def test_base_model_matches_torch_on_new_shapes_with_padding(tmp_path: Path) -> None:
    model = make_model(NasBertModel)
    path = export_onnx(model, tmp_path / "base.onnx", seq_len=16, dynamo=False)  # example (2, 16); the CLI test
    # below exports with the default (dynamo) exporter
    dims = axis_names(path)
    assert dims["input_ids"] == dims["attention_mask"] == dims["token_type_ids"] == ["batch", "sequence"]
    assert dims["last_hidden_state"] == ["batch", "sequence", 64]
    for batch, seq in ((3, 9), (1, 40), (5, 64)):
        assert check_onnx(model, path, batch=batch, seq_len=seq, atol=ATOL) <= ATOL
    assert not model.training


def test_random_inputs_pad_rows() -> None:
    inputs = random_inputs(make_model(NasBertModel), batch=4, seq_len=10)
    lengths = inputs["attention_mask"].sum(1).tolist()  # (B,)
    assert lengths[0] == 10 and all(0 < n < 10 for n in lengths[1:])
    assert (inputs["input_ids"][inputs["attention_mask"] == 0] == 0).all()  # padded with pad_token_id


def test_qa_legacy_exporter_and_mismatch_error(tmp_path: Path) -> None:
    model = make_model(NasBertForQuestionAnswering)
    path = export_onnx(model, tmp_path / "qa.onnx", seq_len=8, dynamo=False)  # legacy exporter: fast
    assert axis_names(path)["start_logits"] == ["batch", "sequence"]
    assert check_onnx(model, path, batch=4, seq_len=21, atol=ATOL) <= ATOL
    with torch.no_grad():
        model.qa_outputs.bias.add_(1.0)  # the graph holds the old weights
    model.train()
    with pytest.raises(OnnxCheckError, match="differ from PyTorch"):
        check_onnx(model, path, atol=ATOL)
    assert model.training  # mode restored


def test_cli_round_trip_from_pretrained_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_model(NasBertForSequenceClassification, num_labels=3)
    model.save_pretrained(tmp_path / "cls")
    out = tmp_path / "onnx" / "cls.onnx"
    assert main([str(tmp_path / "cls"), "--out", str(out), "--seq-len", "16"]) == 0  # task from config.json
    printed = capsys.readouterr().out
    assert "NasBertForSequenceClassification" in printed and "max |onnxruntime - torch|" in printed
    assert axis_names(out)["logits"] == ["batch", 3]
    assert check_onnx(model, out, batch=6, seq_len=33, atol=ATOL) <= ATOL  # the original model, not a reload


def test_cli_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        main([str(tmp_path / "missing")])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ImportError, match=r'pip install "nas-bert\[onnx\]"'):
        require("onnxruntime")
    with pytest.raises(ImportError, match="onnxruntime"):
        main([str(tmp_path / "missing")])
