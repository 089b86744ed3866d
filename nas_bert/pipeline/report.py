"""The pipeline's last step: collect every fine-tuning result, measure every model's latency side by side in one
process, and write the study report (`summary.csv` per model, task and seed; `summary.md`; plots; W&B)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from nas_bert.pipeline.step_times import time_by_part
from nas_bert.reports.finetune_summary import by_model_task_seed, latest_rows, loyalty, task_score
from nas_bert.reports.study import log_report, model_summary, write_summary
from nas_bert.stages.common import instantiate_group

log = logging.getLogger(__name__)


def encoder_flops_of(model: Any, seq_len: int) -> int:
    """FLOPs of one sequence through the encoder: the student's architecture, or the teacher as a uniform BERT."""
    from transformers import AutoConfig

    from nas_bert.encoder import encoder_flops
    from nas_bert.modeling.students import uniform_arch
    from nas_bert.teacher import resolve_model_path

    if model.arch is not None:
        return encoder_flops(model.arch, seq_len)
    config = AutoConfig.from_pretrained(resolve_model_path(model.path))
    ratio = config.intermediate_size // config.hidden_size
    return encoder_flops(uniform_arch(config.num_hidden_layers, config.hidden_size, 1), seq_len, ratio)


def measured_latency_ms(paths: dict[str, str], batch_size: int, seq_len: int, min_run_time: float) -> dict[str, float]:
    """Each exported encoder (no task head) timed side by side in this process, on CUDA if there is one, else the
    CPU: round-robin, so a slower stretch of the machine does not fall on one model."""
    import torch
    from transformers import AutoModel

    import nas_bert.modeling  # noqa: F401  (registers the NAS-BERT Auto classes)
    from nas_bert.nas.baselines import forward_call, latencies_ms
    from nas_bert.teacher import resolve_model_path

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    calls = {}
    for name, path in paths.items():
        model = AutoModel.from_pretrained(resolve_model_path(path)).to(device)
        calls[name] = forward_call(model, model.config.vocab_size, batch_size, seq_len)
    return latencies_ms(calls, min_run_time)


def study_latency_ms(file: Path, paths: dict[str, str], lat: DictConfig) -> dict[str, float]:
    """The models' latencies, measured side by side once per run folder (`file`) and read back by a later report,
    which then does not move with the machine's load; a new model or setting measures them all again."""
    setting = OmegaConf.to_container(lat)
    if file.is_file():
        kept = json.loads(file.read_text())
        if kept.get("setting") == setting and set(paths) <= set(kept["latency_ms"]):
            log.info("latencies read from %s (delete it to measure them again)", file)
            return {name: kept["latency_ms"][name] for name in paths}
    latency = measured_latency_ms(paths, lat.batch_size, lat.seq_len, lat.min_run_time)
    file.write_text(json.dumps({"setting": setting, "latency_ms": latency}, indent=2))
    return latency


def study_records(models: list[Any], results: dict[tuple[str, str, int], dict], latency: dict[str, float],
                  flops: dict[str, int]) -> list[dict[str, Any]]:
    """One record per (model, role, budget, task, seed) with a result."""
    records = []
    for (name, task, seed), result in results.items():
        model = next((m for m in models if m.name == name), None)
        if model is None:  # a model an earlier configuration of this run folder trained
            continue
        for role, budget in model.roles:
            records.append({"model": name, "role": role, "budget": budget, "params": int(result["params"]),
                            "flops": flops[name], "latency_ms": latency[name], "task": task, "seed": seed,
                            "score": task_score(result), "loyalty": loyalty(result)})
    return records


def report_tasks(pipeline: DictConfig, results: dict[tuple[str, str, int], dict]) -> tuple[str, ...]:
    """The tasks the pipeline ran, as its results name them: `pipeline.glue_tasks`, then SQuAD (`squad_v1`)."""
    from nas_bert.data.glue import get_glue_task

    squad = sorted({task for _, task, _ in results if task.startswith("squad")}) if pipeline.get("squad") else []
    return (*(get_glue_task(t).name for t in pipeline.glue_tasks), *squad)


def write_report(cfg: DictConfig, out: Path, models: list[Any]) -> dict[str, float]:
    """The report of every model with results on the pipeline's tasks; returns {"pipeline/<model>/avg": its
    average over those tasks, mean over seeds}."""
    lat = cfg.pipeline.latency
    results = latest_rows(out / "finetune" / "results.jsonl", by_model_task_seed)
    tasks = report_tasks(cfg.pipeline, results)
    results = {key: result for key, result in results.items() if key[1] in tasks}  # not an earlier setting's tasks
    trained = [m for m in models if any(name == m.name for name, _, _ in results)]
    latency = study_latency_ms(out / "latency.json", {m.name: m.path for m in trained}, lat)
    flops = {m.name: encoder_flops_of(m, lat.seq_len) for m in trained}
    records = study_records(models, results, latency, flops)
    paths = write_summary(out, records, dict(cfg.pipeline.get("goals") or {}), time_by_part(out / "logs"), tasks)
    rows = model_summary(records, tasks)
    print(paths["markdown"].read_text())
    loggers = instantiate_group(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg.pipeline, resolve=True))
    log_report(loggers, paths, rows)
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()
    log.info("pipeline report: %s", paths["markdown"])
    return {f"pipeline/{r['model']}/avg": r["avg"] for r in rows if r["avg"] is not None}
