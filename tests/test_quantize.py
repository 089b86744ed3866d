"""int8 post-training quantization: the PyTorch and onnxruntime paths stay close to fp32, and what is left in fp32
is named."""

from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nas_bert.modeling import NasBertConfig, NasBertForSequenceClassification
from nas_bert.modeling.onnx_export import _OnnxWrapper, export_onnx, output_names
from nas_bert.modeling.quantize import (
    check_close,
    kept_fp32,
    main,
    onnx_runner,
    quantize_onnx,
    quantize_torch,
)

ARCH = {"blocks": [{"hidden": 32, "ops": ["mha", "sepconv3"]}, {"hidden": 64, "ops": ["ffn", "mha"]}]}


@pytest.fixture(scope="module")
def model() -> NasBertForSequenceClassification:
    torch.manual_seed(0)
    config = NasBertConfig(arch=ARCH, vocab_size=120, max_position_embeddings=64, head_dim=16, num_labels=3)
    return NasBertForSequenceClassification(config).eval()


def test_torch_int8_quantizes_every_linear_and_stays_close(model):
    int8 = quantize_torch(model)
    assert kept_fp32(int8) == {"Conv1d": 1, "Embedding": 3}  # the sepconv's depthwise conv; no Linear left
    assert kept_fp32(model)["Linear"] > 0  # the fp32 model is untouched
    run = _OnnxWrapper(int8, output_names(model))
    assert check_close(model, lambda x: run(**x), "torch int8", threshold=0.98) >= 0.98


def test_an_op_onnxruntime_does_not_quantize_is_named_and_kept_fp32(tmp_path, caplog):
    weight = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("ConvTranspose", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 7])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "deconv.onnx")
    with caplog.at_level(logging.WARNING, logger="nas_bert.modeling.quantize"):
        report = quantize_onnx(tmp_path / "deconv.onnx", tmp_path / "deconv_int8.onnx")
    assert report["fp32"] == {"ConvTranspose": 1} and "ConvTranspose" in caplog.text


def test_the_command_quantizes_the_onnx_graph(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "model")
    export_onnx(model, tmp_path / "model" / "model.onnx", seq_len=16, dynamo=False)  # fast; used as it is
    assert main([str(tmp_path / "model"), "--min-cosine", "0.98"]) == 0
    assert "onnxruntime int8" in capsys.readouterr().out
    int8 = tmp_path / "model" / "model_int8.onnx"
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert check_close(model, onnx_runner(int8, output_names(model)), "onnxruntime int8", threshold=0.98) >= 0.98
