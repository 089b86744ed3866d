"""Stage: what post-training quantization costs a fine-tuned student on its GLUE dev set, next to its fp32 score.

The fine-tuned model (`finetune.model_path`, as its run exported it) is scored as it is and in three quantized
forms, through the same Lightning validation and metrics as fine-tuning:
- `int8_torch`: torch dynamic int8 of every Linear (nas_bert.modeling.quantize);
- `int8_onnx`: onnxruntime dynamic int8 of its ONNX export;
- `w{bits}a8_ptq`: LSQ at `ptq.weight_bits` (weights) and 8 bits (activations), step sizes from one training batch,
  no training: the starting point of quantization-aware fine-tuning (`finetune.qat`), and its fair baseline.
Writes `<run>/ptq.json` and appends one row per form to `ptq.results_file`.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from nas_bert.modeling.onnx_export import export_onnx
from nas_bert.modeling.quantize import onnx_runner, quantize_onnx, quantize_torch
from nas_bert.reports.finetune_summary import task_score
from nas_bert.stages.common import build, start_run
from nas_bert.stages.finetune import load_task_model, make_quantization_aware, model_name, task_name

log = logging.getLogger(__name__)


class OnnxSequenceClassifier(nn.Module):
    """An onnxruntime session behind the Hugging Face classifier's call: (B, T) inputs -> (B, C) logits and the
    head's loss (MSE for one label, else cross-entropy)."""

    def __init__(self, path: Path, num_labels: int) -> None:
        super().__init__()
        self.run, self.num_labels = onnx_runner(path, ("logits",)), num_labels

    def forward(self, labels: torch.Tensor | None = None, **inputs: torch.Tensor) -> SequenceClassifierOutput:
        (logits,) = self.run({k: v.cpu() for k, v in inputs.items()})
        loss = None
        if labels is not None:
            loss = (F.mse_loss(logits.reshape(-1), labels.float()) if self.num_labels == 1
                    else F.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def validate(cfg: DictConfig, model: nn.Module, datamodule: Any) -> dict[str, float]:
    """The dev metrics of `model` on one CPU process (int8 kernels are CPU ones), as fine-tuning logs them (on as
    many batches: `trainer.limit_val_batches`)."""
    module = build(cfg.model, model=model, teacher=None)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=cfg.trainer.get("limit_val_batches") or 1.0)
    return {k: float(v) for k, v in trainer.validate(module, datamodule=datamodule, verbose=False)[0].items()}


def quantized_forms(model: nn.Module, datamodule: Any, weight_bits: int, folder: Path) -> dict[str, nn.Module]:
    """The fp32 model and its post-training quantized forms, by name."""
    onnx_int8 = folder / "model_int8.onnx"
    quantize_onnx(export_onnx(model, folder / "model.onnx", dynamo=False), onnx_int8)  # the fast exporter
    lsq = copy.deepcopy(model)
    make_quantization_aware(lsq, {"weight_bits": weight_bits}, datamodule)
    return {"fp32": model, "int8_torch": quantize_torch(model),
            "int8_onnx": OnnxSequenceClassifier(onnx_int8, model.config.num_labels),
            f"w{weight_bits}a8_ptq": lsq.eval()}


def run_ptq(cfg: DictConfig) -> dict[str, float]:
    output_dir = start_run(cfg)
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")  # the training set too: LSQ's step sizes start from one of its batches
    model = load_task_model(cfg.finetune.model_path, datamodule, "finetune.model_path").eval()
    forms = quantized_forms(model, datamodule, int(cfg.ptq.weight_bits), output_dir)
    name, task, seed = model_name(cfg), task_name(datamodule), int(cfg.seed)
    rows = []
    for form, quantized in forms.items():
        metrics = validate(cfg, quantized, datamodule)
        score = task_score({"task": task, "best": {k.removeprefix("val/"): v for k, v in metrics.items()}})
        rows.append({"model": name, "task": task, "seed": seed, "form": form, "score": score})
        log.info("%s %s seed %d, %s: %.2f", name, task, seed, form, score)
    (output_dir / "ptq.json").write_text(json.dumps(rows, indent=2))
    results = Path(cfg.ptq.results_file)
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as out:
        out.writelines(json.dumps(row) + "\n" for row in rows)
    return {row["form"]: row["score"] for row in rows}
