"""ONNX export of NAS-BERT models, and a check of the exported graph against PyTorch with onnxruntime.

Inputs are `input_ids`, `attention_mask` and `token_type_ids` (int64, (batch, sequence)); outputs are named
after the model's output fields: `last_hidden_state` (NasBertModel), `logits` (masked LM, sequence
classification) or `start_logits` + `end_logits` (question answering). Batch and sequence axes are dynamic.

    python -m nas_bert.modeling.onnx_export <model_dir> [--out model.onnx] [--task sequence-classification]

Needs the `onnx` extra: `pip install "nas-bert[onnx]"` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from nas_bert.modeling.lsq import LsqLinear
from nas_bert.modeling.modeling_nas_bert import (
    NasBertForMaskedLM,
    NasBertForQuestionAnswering,
    NasBertForSequenceClassification,
    NasBertModel,
    NasBertPreTrainedModel,
)
from nas_bert.utils.modes import eval_mode

log = logging.getLogger(__name__)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES: dict[type[NasBertPreTrainedModel], tuple[str, ...]] = {
    NasBertModel: ("last_hidden_state",),
    NasBertForMaskedLM: ("logits",),
    NasBertForSequenceClassification: ("logits",),
    NasBertForQuestionAnswering: ("start_logits", "end_logits"),
}
TASKS = {  # CLI task -> (model class, transformers Auto class name)
    "base": (NasBertModel, "AutoModel"),
    "masked-lm": (NasBertForMaskedLM, "AutoModelForMaskedLM"),
    "sequence-classification": (NasBertForSequenceClassification, "AutoModelForSequenceClassification"),
    "question-answering": (NasBertForQuestionAnswering, "AutoModelForQuestionAnswering"),
}
DEFAULT_OPSET = 18  # the dynamo exporter's native minimum; onnxruntime >= 1.14 runs it
MAX_PROTO_BYTES = 1_800_000_000  # protobuf caps a single file at 2 GiB; larger weights go to external data


class OnnxCheckError(AssertionError):
    """The ONNX graph's outputs differ from PyTorch's by more than the tolerance."""


def require(*names: str) -> list[ModuleType]:
    """Import the optional ONNX packages, or raise an ImportError saying how to install them."""
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as err:
            raise ImportError(
                f"ONNX export needs the optional package {name!r}, which is not installed; "
                f'install the extra with `pip install "nas-bert[onnx]"`'
            ) from err
    return modules


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The ONNX output names of a NasBert* model, from its class."""
    for cls, names in OUTPUT_NAMES.items():
        if isinstance(model, cls):
            return names
    known = [cls.__name__ for cls in OUTPUT_NAMES]
    raise TypeError(f"cannot export {type(model).__name__}: expected one of {known}")


class _OnnxWrapper(nn.Module):
    """Positional (input_ids, attention_mask, token_type_ids) -> a tuple of the named output tensors."""

    def __init__(self, model: NasBertPreTrainedModel, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names
        self.train(model.training)  # mirrors the model, so `eval_mode(wrapper)` restores the model's mode

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         output_hidden_states=False, return_dict=True)
        return tuple(out[name] for name in self.names)


def _example_inputs(batch: int, seq_len: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """All-ones ids and mask, zero token types: (B, T) int64 each; only their shapes matter."""
    ones = torch.ones(batch, seq_len, dtype=torch.long, device=device)
    return ones, ones.clone(), torch.zeros_like(ones)


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's harmless noise (missing torchvision ops, axis renaming, pytree deprecations)."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export",
                                    category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # LSQ steps traced as constants
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: NasBertPreTrainedModel, path: str | Path, opset: int = DEFAULT_OPSET,
                seq_len: int = 128, dynamo: bool = True) -> Path:
    """Export a NasBert* model (in eval mode) to `path` with dynamic batch and sequence axes; returns `path`.

    `seq_len` is the example length traced (capped at `max_position_embeddings`); the graph takes any
    length up to that cap. `dynamo=False` uses the legacy TorchScript exporter instead.
    """
    # Exporter choice: both exporters give graphs that match PyTorch to ~1e-7 for new batch and sequence
    # sizes and with padding masks (SDPA's boolean mask and SepConv's masking export cleanly). The dynamo
    # (torch.export) exporter is the default: it is the maintained one and refuses to silently specialise
    # a dynamic axis, whereas the TorchScript one is deprecated (torch >= 2.9 warns on each use); it is kept
    # as a fallback (`dynamo=False`, CLI `--legacy`) that is ~20x faster and needs no onnxscript.
    # A quantization-aware (LSQ) model always takes the TorchScript exporter: torch.export has no fake-quantize
    # kernel for symbolic shapes, and the TorchScript graph's Q/DQ pairs are the ones onnxruntime fuses into
    # integer matmuls (MatMulIntegerToFloat).
    if dynamo and any(isinstance(m, LsqLinear) for m in model.modules()):
        log.info("quantization-aware model: exported with the TorchScript exporter (Q/DQ pairs)")
        dynamo = False
    require("onnx", *(["onnxscript"] if dynamo else []))
    names = output_names(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seq_len = max(2, min(seq_len, model.config.max_position_embeddings))  # sizes 0/1 would be specialised
    wrapper = _OnnxWrapper(model, names)
    args = _example_inputs(2, seq_len, model.device)
    with eval_mode(wrapper), torch.no_grad(), _quiet_exporter():
        if dynamo:
            _export_dynamo(wrapper, args, path, opset, names, _needs_external_data(model))
        else:
            _export_torchscript(wrapper, args, path, opset, names, output_axes(model))
    return path


def _needs_external_data(model: nn.Module) -> bool:
    """True when the weights are too big for one protobuf file."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) > MAX_PROTO_BYTES


def _export_dynamo(wrapper: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int,
                   names: tuple[str, ...], external_data: bool) -> None:
    """torch.export-based export; the same named Dim objects tie the inputs' batch and sequence axes."""
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    torch.onnx.export(wrapper, args, path, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                      output_names=list(names), dynamic_shapes=dynamic_shapes, external_data=external_data,
                      verbose=False)


def output_axes(model: nn.Module) -> dict[int, str]:
    """Dynamic axes of the outputs: (B, num_labels) logits after pooling, else (B, T, ...)."""
    if isinstance(model, NasBertForSequenceClassification):
        return {0: "batch"}
    return {0: "batch", 1: "sequence"}


def _export_torchscript(wrapper: nn.Module, args: tuple[torch.Tensor, ...], path: Path, opset: int,
                        names: tuple[str, ...], out_axes: dict[int, str]) -> None:
    """Legacy TorchScript-based export (dynamic_axes name the axes of inputs and outputs)."""
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes.update({name: out_axes for name in names})
    torch.onnx.export(wrapper, args, path, dynamo=False, opset_version=opset, input_names=list(INPUT_NAMES),
                      output_names=list(names), dynamic_axes=dynamic_axes)


def random_inputs(model: NasBertPreTrainedModel, batch: int, seq_len: int,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """Random (B, T) ids with padded rows: row 0 is full, row i>0 keeps fewer real tokens (at least one)."""
    config = model.config
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, config.vocab_size, (batch, seq_len), generator=gen)  # (B, T)
    lengths = [max(1, seq_len - (i * seq_len) // (batch + 1)) for i in range(batch)]
    attention_mask = (torch.arange(seq_len)[None] < torch.tensor(lengths)[:, None]).long()  # (B, T)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    input_ids = input_ids.masked_fill(attention_mask == 0, pad)
    token_type_ids = torch.zeros_like(input_ids)
    token_type_ids[:, seq_len // 2:] = min(1, config.type_vocab_size - 1)  # a second segment
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def check_onnx(model: NasBertPreTrainedModel, onnx_path: str | Path, batch: int = 3, seq_len: int = 37,
               atol: float = 1e-4, seed: int = 0) -> float:
    """Max |onnxruntime - PyTorch| over all outputs on random padded inputs; OnnxCheckError above `atol`.

    The default sizes differ from the export example (batch 2), so the dynamic axes are exercised.
    """
    (ort,) = require("onnxruntime")
    names = output_names(model)
    seq_len = min(seq_len, model.config.max_position_embeddings)
    inputs = random_inputs(model, batch, seq_len, seed)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(list(names), {name: t.numpy() for name, t in inputs.items()})
    wrapper = _OnnxWrapper(model, names)
    with eval_mode(wrapper), torch.no_grad():
        expected = wrapper(**{name: t.to(model.device) for name, t in inputs.items()})
    diff = 0.0
    for name, want, have in zip(names, expected, got):
        if tuple(want.shape) != have.shape:
            raise OnnxCheckError(f"{name}: ONNX shape {have.shape} != PyTorch shape {tuple(want.shape)}")
        diff = max(diff, (want.float().cpu() - torch.from_numpy(have).float()).abs().max().item())
    if not diff <= atol:  # also catches NaN
        raise OnnxCheckError(
            f"{onnx_path}: ONNX outputs {names} differ from PyTorch by {diff:.3g} > atol={atol:g} "
            f"(batch {batch}, sequence {seq_len}, padded mask)"
        )
    return diff


def task_of(model_dir: Path) -> str:
    """The task of a saved model, from `architectures` in its config.json ('base' when absent/unknown)."""
    from transformers import AutoConfig

    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    by_name = {cls.__name__: task for task, (cls, _) in TASKS.items()}
    return next((by_name[a] for a in architectures if a in by_name), "base")


def load_pretrained(model_dir: str | Path, task: str | None = None) -> NasBertPreTrainedModel:
    """A NasBert* model from a `save_pretrained` directory via the Auto classes (task None: from config)."""
    import transformers  # the Auto classes know NasBert* since `nas_bert.modeling` is imported

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(
            f"{model_dir} is not a saved model directory (no config.json); pass a `save_pretrained` directory"
        )
    task = task or task_of(model_dir)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    auto_cls = getattr(transformers, TASKS[task][1])
    return auto_cls.from_pretrained(model_dir).eval()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nas_bert.modeling.onnx_export",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="a `save_pretrained` directory of a NAS-BERT model")
    parser.add_argument("--out", type=Path, default=None, help="ONNX file (default: <model_dir>/model.onnx)")
    parser.add_argument("--task", choices=sorted(TASKS), default=None,
                        help="head to export (default: from `architectures` in config.json)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--seq-len", type=int, default=128, help="example sequence length traced")
    parser.add_argument("--atol", type=float, default=1e-4, help="tolerance of the onnxruntime check")
    parser.add_argument("--legacy", action="store_true", help="use the deprecated TorchScript exporter")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Export a saved model, check it with onnxruntime and print the max difference."""
    args = parse_args(argv)
    require("onnx", "onnxruntime", *([] if args.legacy else ["onnxscript"]))
    model = load_pretrained(args.model_dir, args.task)
    path = export_onnx(model, args.out or args.model_dir / "model.onnx", args.opset, args.seq_len,
                       dynamo=not args.legacy)
    diff = check_onnx(model, path, atol=args.atol)
    print(f"exported {type(model).__name__} to {path}; "
          f"max |onnxruntime - torch| = {diff:.3g} (atol {args.atol:g})")
    return 0


def run_cli(main: Callable[[], int]) -> None:
    """Exit with `main()`'s status; a bad model folder, a missing package or a failed check as `error: <why>`."""
    try:
        sys.exit(main())
    except (FileNotFoundError, ImportError, ValueError, OnnxCheckError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    run_cli(main)
