"""The whole method in one command (`python search.py +pipeline=<name>`): search -> pre-training KD of every
selected budget and of its equal-size baseline -> fine-tuning of the teacher, the students and the baselines on
GLUE tasks and SQuAD -> one summary table (params, measured latency, GLUE average, SQuAD F1 per model).

Every step is its own process (`search.py` / `train.py` with Hydra overrides), so each has its own run folder
under `<pipeline run>/`, its own W&B run and its own DDP world. A step whose output already exists is skipped:
re-running the command with the same `hydra.run.dir` continues an interrupted pipeline.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf

from nas_bert.stages.common import instantiate_group
from nas_bert.stages.summary import format_value, latest_results, print_table, summary_rows, write_tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One process of the pipeline: `script` with `overrides`, complete once `output` exists."""

    name: str
    script: str
    overrides: tuple[str, ...]
    output: Path


class PipelineError(RuntimeError):
    """A step failed; the steps before it are kept and skipped when the pipeline is run again."""


def run_step(step: Step, root: Path, log_dir: Path) -> bool:
    """Run `step` unless its output exists; returns whether it ran. Its console output goes to a log file."""
    if step.output.exists():
        log.info("%-28s done before (%s): skipped", step.name, step.output)
        return False
    log_file = log_dir / f"{step.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(root / step.script), *step.overrides]
    log.info("%-28s running: %s", step.name, " ".join(command[1:]))
    with log_file.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0 or not step.output.exists():
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
        raise PipelineError(f"step {step.name} failed (exit {code}); its log: {log_file}\n{tail}\n"
                            f"fix it and run the same command again: finished steps are skipped")
    return True


def debug_choice() -> str | None:
    """The `debug=<name>` the pipeline itself runs under, if any (every step then runs under it too)."""
    return HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None


def step_settings(cfg: DictConfig) -> DictConfig:
    """`cfg.pipeline`, for a debug run with `debug=<name>` added to every step and without the step sizes
    (`pretrain`, `finetune`), which would override the debug sizes."""
    p = cfg.pipeline.copy()
    debug = debug_choice()
    if debug:
        p.common, p.pretrain, p.finetune = [*p.common, f"debug={debug}"], [], []
    return p


def search_step(cfg: DictConfig, out: Path) -> Step:
    p = cfg.pipeline
    return Step("search", "search.py", (f"hydra.run.dir={out / 'search'}", "latest_link=null", *p.common, *p.search),
                out / "search" / "candidates.csv")  # written after every architecture


def selected_budgets(cfg: DictConfig, out: Path) -> list[str]:
    """`pipeline.budgets`, or every budget the search wrote an architecture for."""
    arch_dir = out / "search" / "architectures"
    found = sorted(path.stem for path in arch_dir.glob("*.yaml"))
    wanted = list(cfg.pipeline.budgets) if cfg.pipeline.get("budgets") else found
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise PipelineError(f"the search selected no architecture for {missing} (it wrote {found} in {arch_dir}); "
                            f"set pipeline.budgets to some of those, or null for all")
    return wanted


def pretrain_steps(cfg: DictConfig, out: Path, budgets: list[str]) -> dict[str, Step]:
    """Model name -> the step pre-training it: each budget's student, and its equal-size baseline if asked."""
    p, steps = cfg.pipeline, {}
    for budget in budgets:
        base = (f"student.search_run={out / 'search'}", f"student.budget={budget}", *p.common, *p.pretrain)
        variants = {f"nas-bert-{budget}": ()}
        if p.get("baseline"):
            b = p.baseline
            hidden = "null" if b.get("hidden") is None else b.hidden
            variants[f"baseline-{budget}"] = (
                f"student.baseline={{layers: {b.layers}, hidden: {hidden}, blocks: {b.get('blocks', 1)}}}",)
        for name, extra in variants.items():
            run = out / "pretrain" / name
            steps[name] = Step(f"pretrain/{name}", "train.py", (f"hydra.run.dir={run}", *base, *extra),
                               run / "model" / "config.json")
    return steps


def finetune_step(cfg: DictConfig, out: Path, model: str, model_path: str, task: str, teacher_path: Path | None
                  ) -> Step:
    p = cfg.pipeline
    run = out / "finetune" / f"{model}_{task}"
    data = (*p.squad, ) if task == "squad" else (*p.glue, f"data.task={task}")
    experiment = "finetune_squad" if task == "squad" else "finetune_glue"
    student = () if teacher_path is None else (f"finetune.teacher_path={teacher_path}", *p.student)
    overrides = (f"experiment={experiment}", f"hydra.run.dir={run}", f"finetune.model_path={model_path}",
                 f"finetune.model_name={model}", f"finetune.results_file={out / 'finetune' / 'results.jsonl'}",
                 *data, *p.common, *p.finetune, *student)
    return Step(f"finetune/{model}_{task}", "train.py", overrides, run / "results.json")


def encoder_latency_ms(model_path: str, batch_size: int, seq_len: int, min_run_time: float) -> float:
    """Median forward time of the exported encoder (no task head) in milliseconds, on CUDA if there is one."""
    from transformers import AutoModel

    import nas_bert.modeling  # noqa: F401  (registers the NAS-BERT Auto classes)
    from nas_bert.search.latency import median_seconds

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        model = AutoModel.from_pretrained(model_path).to(device).eval()
        ids = torch.randint(1, model.config.vocab_size, (batch_size, seq_len), device=device)  # (B, T)
        mask = torch.ones_like(ids)

        def forward() -> None:
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
            if device.type == "cuda":
                torch.cuda.synchronize()

        return 1000 * median_seconds(forward, min_run_time)


def write_summary(cfg: DictConfig, out: Path, models: dict[str, str]) -> tuple[list[str], list[dict[str, Any]]]:
    """The final table: fine-tuning scores per model with its measured latency; summary.md / .csv / W&B."""
    lat = cfg.pipeline.latency
    columns, rows = summary_rows(latest_results(out / "finetune" / "results.jsonl"))
    key = f"latency ms (b{lat.batch_size}, t{lat.seq_len})"
    for row in rows:  # rows of models this configuration no longer trains (an earlier run in the folder): no latency
        path = models.get(row["model"])
        row[key] = None if path is None else encoder_latency_ms(path, lat.batch_size, lat.seq_len, lat.min_run_time)
    columns = [*columns[:2], key, *columns[2:]]
    write_tables(out, columns, rows)
    log_summary(cfg, columns, rows)
    return columns, rows


def log_summary(cfg: DictConfig, columns: list[str], rows: list[dict[str, Any]]) -> None:
    """The table in the console and, through the configured loggers, as the W&B table `pipeline/summary`."""
    print_table(columns, rows)
    loggers = instantiate_group(cfg.get("logger"))
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg.pipeline, resolve=True))
        if hasattr(logger, "log_table"):
            logger.log_table("pipeline/summary", columns=columns,
                             data=[[format_value(r.get(c)) for c in columns] for r in rows])
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        wandb.finish()


def run_pipeline(cfg: DictConfig) -> dict[str, float]:
    """Every step in order (skipping finished ones), then the summary; returns each model's GLUE average."""
    out = Path(cfg.paths.output_dir)
    root = Path(cfg.paths.root_dir)
    logs = out / "logs"
    OmegaConf.save(cfg, out / "pipeline.yaml", resolve=True)
    cfg = cfg.copy()
    cfg.pipeline = step_settings(cfg)
    p = cfg.pipeline

    run_step(search_step(cfg, out), root, logs)
    pretrain = pretrain_steps(cfg, out, selected_budgets(cfg, out))
    for step in pretrain.values():
        run_step(step, root, logs)

    teacher = str(cfg.teacher.name_or_path)
    tasks = [*p.glue_tasks, *(["squad"] if p.get("squad") else [])]  # squad: [] skips SQuAD
    teachers = {task: finetune_step(cfg, out, "teacher", teacher, task, None) for task in tasks}
    for step in teachers.values():
        run_step(step, root, logs)
    models = {"teacher": teacher}
    for name, step in pretrain.items():
        models[name] = str(step.output.parent)
        for task in tasks:
            run_step(finetune_step(cfg, out, name, models[name], task, teachers[task].output.parent / "model"),
                     root, logs)

    columns, rows = write_summary(cfg, out, models)
    log.info("pipeline summary: %s", out / "summary.md")
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    return {f"pipeline/{r['model']}/glue_avg": r["GLUE avg"] for r in rows if r.get("GLUE avg") is not None}
