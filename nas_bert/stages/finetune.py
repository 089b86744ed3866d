"""Stage 4: fine-tune an encoder (teacher, NAS-BERT student or baseline) on a GLUE task or SQuAD, with
optional task KD from a fine-tuned teacher; export it, and add its scores to the cross-run summary table."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoModelForSequenceClassification

from nas_bert.data.glue import GlueDataModule, write_glue_submission
from nas_bert.data.squad import SquadDataModule
from nas_bert.modeling import NasBertPreTrainedModel
from nas_bert.modeling.lsq import check_lsq_bits
from nas_bert.reports.card import card_after_finetuning
from nas_bert.reports.finetune_summary import record_result
from nas_bert.stages.common import (
    build,
    build_trainer,
    finish_loggers,
    log_model_artifact,
    push_export,
    start_run,
)
from nas_bert.teacher import FrozenTeacher, resolve_model_path
from nas_bert.utils.modes import eval_mode

log = logging.getLogger(__name__)


def task_head(datamodule: GlueDataModule | SquadDataModule) -> tuple[type, dict[str, Any]]:
    """The Auto class of the task's model and its head arguments: sequence classification (label count, regression
    or not) for GLUE, span extraction for SQuAD."""
    if isinstance(datamodule, SquadDataModule):
        return AutoModelForQuestionAnswering, {}
    if isinstance(datamodule, GlueDataModule):
        task = datamodule.task
        return AutoModelForSequenceClassification, {
            "num_labels": task.num_labels,
            "problem_type": "regression" if task.is_regression else "single_label_classification"}
    raise TypeError(f"fine-tuning needs a GlueDataModule or a SquadDataModule as data, got {type(datamodule).__name__}")


def load_task_model(path: str, datamodule: Any, setting: str, pooling: str | None = None) -> torch.nn.Module:
    """The model to fine-tune from a directory or hub id; a head of another shape (e.g. an MNLI checkpoint for
    RTE / STS-B) is re-initialised. `pooling` (cls | mean) sets a NAS-BERT classifier's pooling."""
    auto_class, head = task_head(datamodule)
    resolved = resolve_model_path(path, "model", setting)
    if pooling is not None:
        model_type = AutoConfig.from_pretrained(resolved).model_type
        if model_type != "nas_bert":
            raise ValueError(f"finetune.classifier_pooling applies to NAS-BERT students; {path} is a {model_type!r} "
                             f"model, which pools as it was built: set finetune.classifier_pooling=null for it")
        head["classifier_pooling"] = pooling
    try:
        model, info = auto_class.from_pretrained(resolved, ignore_mismatched_sizes=True, output_loading_info=True,
                                                 **head)
    except OSError as err:
        raise ValueError(f"could not load the model from {path!r} ({setting}): {err}") from None
    if head.get("problem_type") == "regression":
        fresh = set(info["missing_keys"]) | {key for key, *_ in info["mismatched_keys"]}
        start_at_label_mean(model, fresh, datamodule.train_dataset["label"])
    return model


def start_at_label_mean(model: torch.nn.Module, fresh: set[str], labels: Any) -> None:
    """A fresh regression head predicts the training labels' mean from the first step (its output bias).

    From a zero bias a small encoder spends its whole budget moving its output to the labels' level (STS-B:
    2.7) and distorts its features doing so: an L6 H128 student stayed at Pearson 0.1, and reached 0.7 when
    started at the mean. A head that was trained already (its bias loaded, not fresh) is left as it is.
    """
    biases = [p for name, p in model.named_parameters() if name in fresh and name.endswith("bias") and p.numel() == 1]
    if len(biases) == 1:
        with torch.no_grad():
            biases[0].fill_(float(torch.as_tensor(labels, dtype=torch.float64).mean()))


def make_quantization_aware(model: torch.nn.Module, qat: Any, datamodule: Any) -> None:
    """KDLSQ: the student's Linears fake-quantized with learned step sizes (`finetune.qat`: {weight_bits: 4 | 8,
    act_bits: 8}), the step sizes initialised from one training batch (the same on every rank)."""
    if not isinstance(model, NasBertPreTrainedModel):
        raise ValueError(f"finetune.qat trains NAS-BERT students quantization-aware; {type(model).__name__} is not "
                         f"one: set finetune.qat=null, or fine-tune a nas-bert student")
    model.quantize_lsq(**qat)
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad(), eval_mode(model):
        model(**{key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch})


def load_task_teacher(path: str, datamodule: Any) -> FrozenTeacher:
    """The KD teacher: a model fine-tuned for this very task (its head is used as it is, never re-initialised)."""
    auto_class, head = task_head(datamodule)
    teacher = FrozenTeacher(path, loader=auto_class.from_pretrained, setting="finetune.teacher_path")
    labels = getattr(teacher.config, "num_labels", None)
    if "num_labels" in head and labels != head["num_labels"]:
        raise ValueError(f"the fine-tuned teacher {path} has {labels} labels, task {datamodule.task.name} has "
                         f"{head['num_labels']}: set finetune.teacher_path to a teacher fine-tuned on "
                         f"{datamodule.task.name}")
    return teacher


def teacher_logits_file(cfg: DictConfig, datamodule: Any) -> str | None:
    """Where the fine-tuned teacher's logits on this task's data are kept for every run that distils from it:
    named after the teacher's weights (path, size, time) and the fingerprints of the training and evaluation
    sets. GLUE only."""
    ft = cfg.finetune
    if not (ft.get("teacher_path") and ft.get("teacher_logits_dir") and isinstance(datamodule, GlueDataModule)):
        return None
    resolved = Path(resolve_model_path(ft.teacher_path, "model", "finetune.teacher_path"))
    weights = sorted(resolved.glob("*.safetensors")) + sorted(resolved.glob("*.bin")) if resolved.is_dir() else []
    stamp = [f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights]
    splits = [datamodule.train_dataset, *datamodule.eval_datasets.values()]
    key = "|".join([str(resolved), *stamp, *(split._fingerprint for split in splits)])
    return str(Path(ft.teacher_logits_dir) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt")


def parameter_count(model: torch.nn.Module) -> int:
    """Parameters of the encoder (the base model, without the task head)."""
    return sum(p.numel() for p in getattr(model, "base_model", model).parameters())


def run_finetune(cfg: DictConfig) -> dict[str, float]:
    output_dir = start_run(cfg)
    ft = cfg.finetune
    if ft.get("qat"):
        check_lsq_bits(**ft.qat)  # a bad bit-width is refused before any data is read
    datamodule = build(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if ft.get("predict_test") and not isinstance(datamodule, GlueDataModule):
        raise ValueError("finetune.predict_test writes GLUE-server files: it applies to GLUE tasks only; set it false")
    setting = "finetune.init_from" if ft.init_from else "finetune.model_path"
    pooling = ft.get("classifier_pooling") if isinstance(datamodule, GlueDataModule) else None
    model = load_task_model(ft.init_from or ft.model_path, datamodule, setting, pooling)
    if ft.get("qat"):
        make_quantization_aware(model, ft.qat, datamodule)
    teacher = load_task_teacher(ft.teacher_path, datamodule) if ft.get("teacher_path") else None
    extra = {"teacher_logits_file": logits_file} if (logits_file := teacher_logits_file(cfg, datamodule)) else {}
    module = build(cfg.model, model=model, teacher=teacher, **extra)
    trainer = build_trainer(cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        final = final_metrics(trainer, module, datamodule)
        if trainer.is_global_zero:
            for export_dir in (output_dir / "model", *([Path(ft.export_dir)] if ft.get("export_dir") else [])):
                model.save_pretrained(export_dir)
                datamodule.tokenizer.save_pretrained(export_dir)
                card_after_finetuning(cfg, export_dir, task_name(datamodule), final, int(cfg.seed), model)
            log_model_artifact(trainer.loggers, output_dir / "model")
        if ft.get("predict_test") and datamodule.test_split_names:
            write_test_predictions(trainer, module, datamodule, output_dir / "glue_submission")
        result = {"model": model_name(cfg), "task": task_name(datamodule), "seed": int(cfg.seed),
                  "params": parameter_count(model),
                  "kd": teacher is not None, "final": final, "best": dict(module.best), "run": str(output_dir)}
        if trainer.is_global_zero:
            (output_dir / "results.json").write_text(json.dumps(result, indent=2))
            record_result(ft.results_file, result, trainer.loggers)
            push_export(cfg, output_dir / "model")  # last: a failed push loses nothing written
    finally:
        finish_loggers(trainer)
    return final


def final_metrics(trainer: L.Trainer, module: L.LightningModule, datamodule: Any) -> dict[str, float]:
    """The trained model's evaluation: what fit's last validation logged when it saw the final weights (it ran at
    the end of the last epoch), else a validation pass now."""
    if getattr(module, "evaluated_at_step", None) == trainer.global_step:
        metrics = trainer.callback_metrics
        return {k: float(v) for k, v in metrics.items() if k.startswith(("val/", "best/"))}
    return {k: float(v) for k, v in trainer.validate(module, datamodule=datamodule)[0].items()}


def model_name(cfg: DictConfig) -> str:
    """`finetune.model_name`, or: "teacher" for the teacher, else the folder above `<run>/model`."""
    ft = cfg.finetune
    if ft.get("model_name"):
        return ft.model_name
    if ft.model_path == cfg.teacher.name_or_path:
        return "teacher"
    path = Path(ft.model_path)
    return path.parent.name if path.name == "model" else path.name


def task_name(datamodule: GlueDataModule | SquadDataModule) -> str:
    return f"squad_v{datamodule.version}" if isinstance(datamodule, SquadDataModule) else datamodule.task.name


def write_test_predictions(trainer, module, datamodule, directory: Path) -> list[Path]:
    """GLUE-server prediction files for the test splits (one process: predictions are not gathered)."""
    if trainer.world_size > 1:
        log.warning("GLUE test predictions skipped: run them on one device (finetune.predict_test=true "
                    "trainer.devices=1 ckpt_path=<run>/checkpoints/last.ckpt)")
        return []
    directory.mkdir(parents=True, exist_ok=True)
    outputs = trainer.predict(module, datamodule=datamodule)
    per_loader = outputs if len(datamodule.test_split_names) > 1 else [outputs]
    written = []
    for split, batches in zip(datamodule.test_split_names, per_loader):
        predictions = {int(i): p.item() for b in batches for i, p in zip(b["idx"], b["prediction"])}
        written.append(write_glue_submission(datamodule.task, predictions, directory, split=split))
    log.info("GLUE test predictions: %s", ", ".join(map(str, written)))
    return written
