"""Post-training dynamic int8 quantization of exported NAS-BERT models, for CPU deployment.

- PyTorch: `torch.ao` dynamic quantization of every `nn.Linear` (int8 weights, activations quantized per
  batch on the fly). Convolutions (the sepconv ops), embeddings and LayerNorms stay in fp32.
- ONNX: onnxruntime's `quantize_dynamic` of the exported graph (`<model_dir>/model.onnx` ->
  `model_int8.onnx`). Weight-bearing nodes it leaves in fp32 are named in the report and a warning.

Both are checked against the fp32 model on random padded inputs: the cosine similarity of every output row
must reach `min_cosine` (default 0.99).

    python -m nas_bert.modeling.quantize <model_dir> [--task sequence-classification] [--min-cosine 0.99]
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from nas_bert.modeling.onnx_export import (
    OnnxCheckError,
    _OnnxWrapper,
    export_onnx,
    load_pretrained,
    output_names,
    random_inputs,
    require,
    run_cli,
)

log = logging.getLogger(__name__)
INT8_ONNX_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger", "QLinearMatMul", "QLinearConv",
                 "DynamicQuantizeLSTM", "QAttention"}
WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose"}  # fp32 nodes that may hold a weight


def quantize_torch(model: nn.Module) -> nn.Module:
    """An int8 copy of `model` (eval mode): dynamic quantization of its Linear layers; the rest stays fp32."""
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
    return quantized.eval()


def kept_fp32(model: nn.Module) -> dict[str, int]:
    """Weight-bearing module types of a `quantize_torch` model that are still fp32, with their counts."""
    counts = Counter(type(m).__name__ for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Embedding)))
    return dict(sorted(counts.items()))


def quantize_onnx(onnx_path: str | Path, out_path: str | Path) -> dict[str, dict[str, int]]:
    """onnxruntime dynamic int8 quantization; returns {"int8": op counts, "fp32": weight ops left in fp32}."""
    onnx, _ = require("onnx", "onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(onnx_path), str(out_path), weight_type=QuantType.QInt8)
    graph = onnx.load(str(out_path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    int8 = Counter(n.op_type for n in graph.node if n.op_type in INT8_ONNX_OPS)
    fp32 = Counter(n.op_type for n in graph.node if n.op_type in WEIGHT_OPS and set(n.input) & initializers)
    for op, count in sorted(fp32.items()):
        log.warning("onnxruntime left %d %s node(s) with weights in fp32 in %s", count, op, out_path)
    return {"int8": dict(sorted(int8.items())), "fp32": dict(sorted(fp32.items()))}


def min_cosine(expected: Sequence[torch.Tensor], got: Sequence[torch.Tensor]) -> float:
    """The lowest cosine similarity between matching rows (last axis) of the outputs."""
    worst = 1.0
    for want, have in zip(expected, got):
        cos = nn.functional.cosine_similarity(want.float().flatten(0, -2), have.float().flatten(0, -2), dim=-1)
        worst = min(worst, cos.min().item())
    return worst


def check_close(model: nn.Module, run: Callable[[dict[str, torch.Tensor]], Sequence[torch.Tensor]], what: str,
                threshold: float = 0.99, batch: int = 3, seq_len: int = 37) -> float:
    """Cosine of `run`'s outputs to the fp32 model's on random padded inputs; OnnxCheckError under `threshold`."""
    inputs = random_inputs(model, batch, min(seq_len, model.config.max_position_embeddings))
    wrapper = _OnnxWrapper(model, output_names(model)).eval()
    with torch.no_grad():
        cosine = min_cosine(wrapper(**inputs), run(inputs))
    if not cosine >= threshold:  # also catches NaN
        raise OnnxCheckError(f"{what}: int8 outputs reach cosine {cosine:.4f} to fp32, under {threshold}")
    return cosine


def onnx_runner(path: str | Path, names: Sequence[str]) -> Callable[[dict[str, torch.Tensor]], list[torch.Tensor]]:
    (ort,) = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: [torch.from_numpy(a) for a in session.run(list(names), {k: v.numpy()
                                                                                   for k, v in inputs.items()})]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="int8 dynamic quantization of a saved NAS-BERT model")
    parser.add_argument("model_dir", type=Path, help="a `save_pretrained` directory of a NAS-BERT model")
    parser.add_argument("--task", default=None, help="head to load (default: from config.json)")
    parser.add_argument("--min-cosine", type=float, default=0.99, help="least cosine of int8 to fp32 outputs")
    args = parser.parse_args(argv)
    model = load_pretrained(args.model_dir, args.task)
    names, int8 = output_names(model), quantize_torch(model)
    torch_cos = check_close(model, lambda x: _OnnxWrapper(int8, names)(**x), "torch int8", args.min_cosine)
    fp32_path = args.model_dir / "model.onnx"
    if not fp32_path.is_file():
        export_onnx(model, fp32_path)
    report = quantize_onnx(fp32_path, args.model_dir / "model_int8.onnx")
    onnx_cos = check_close(model, onnx_runner(args.model_dir / "model_int8.onnx", names), "onnxruntime int8",
                           args.min_cosine)
    print(f"torch int8: cosine {torch_cos:.4f} to fp32 ({kept_fp32(int8)} left fp32); "
          f"onnxruntime int8 -> {args.model_dir / 'model_int8.onnx'}: cosine {onnx_cos:.4f}, int8 ops "
          f"{report['int8']}, fp32 weight ops {report['fp32'] or 'none'}")
    return 0


if __name__ == "__main__":
    run_cli(main)
