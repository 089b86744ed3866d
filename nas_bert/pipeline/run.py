"""The whole method in one command (`python search.py +pipeline=<name>`): search -> the uniform BERT baselines of
every selected budget (closest in parameters and / or in measured latency) -> pre-training KD of every student for
the same tokens -> fine-tuning of the teacher and of every student on GLUE tasks (and SQuAD), with several seeds
-> one report: `summary.csv` (one row per model, task and seed), `summary.md` (mean +- std per model) and plots.

Each step has its own run folder under `<pipeline run>/`, and runs as its own process (its own W&B run and DDP
world), or in this process with `pipeline.in_process` (no interpreter start-up per step: what a study of a
hundred small fine-tunings on a CPU wants). With `pipeline.workers` > 1 the fine-tunings, which do not depend on
each other, run that many at a time on worker processes that share the cores (each task's first student run
alone first: it saves the teacher's logits the others read). A step whose output already exists is skipped:
re-running the command with the same `hydra.run.dir` continues an interrupted pipeline. Every finished step's
wall time is appended to `<run>/logs/step_times.csv` (`step_times.py`), so the cost of a study resumed over
several sittings adds up.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from nas_bert.pipeline.checks import check_settings
from nas_bert.pipeline.step_pool import run_side_by_side
from nas_bert.pipeline.step_times import record_step_time
from nas_bert.pipeline.steps import (
    PipelineError,
    Step,
    composed,
    finetune_step,
    in_process_overrides,
    pretrain_step,
    quantization_seeds,
    quantization_steps,
    search_step,
    selected_budgets,
    step_settings,
    teacher_model,
)
from nas_bert.pipeline.students import students

log = logging.getLogger(__name__)


def run_step(step: Step, root: Path, log_dir: Path, in_process: bool = False) -> bool:
    """Run `step` unless its output exists; returns whether it ran. Its console output goes to a log file."""
    if not unfinished([step]):
        return False
    log_file = log_dir / f"{step.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log.info("%-34s running%s: %s", step.name, " in process" if in_process else "", " ".join(step.overrides))
    start = time.perf_counter()
    if in_process:
        code = run_in_process(step, root, log_file)
    else:
        command = [sys.executable, str(root / f"{step.config}.py"), *step.overrides]
        with log_file.open("w") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy()).returncode
    if code != 0 or not step.output.exists():
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-30:])
        raise PipelineError(f"step {step.name} failed (exit {code}); its log: {log_file}\n{tail}\n"
                            f"fix it and run the same command again: finished steps are skipped")
    record_step_time(log_dir, step.name, time.perf_counter() - start)
    return True


def unfinished(steps: list[Step]) -> list[Step]:
    """The steps whose output does not exist yet; the others are logged as skipped."""
    pending = []
    for step in steps:
        if step.output.exists():
            log.info("%-34s done before (%s): skipped", step.name, step.output)
        else:
            pending.append(step)
    return pending


def run_in_process(step: Step, root: Path, log_file: Path) -> int:
    """Compose the step's config as its entry point would and call its stage function here; 0 or 1."""
    from nas_bert.stages import STAGES

    run_dir, overrides = in_process_overrides(step)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        with composed(root, step.config, overrides) as cfg:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            STAGES["search" if step.config == "search" else cfg.stage](cfg)
        return 0
    except Exception:  # the step's failure is the pipeline's error, with the log's tail
        log.exception("step %s failed", step.name)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def run_pipeline(cfg: DictConfig) -> dict[str, float]:
    """Every step in order (skipping finished ones), then the report; returns each model's average over the tasks
    (`pipeline/<model>/avg`)."""
    out = Path(cfg.paths.output_dir)
    root = Path(cfg.paths.root_dir)
    logs = out / "logs"
    OmegaConf.save(cfg, out / "pipeline.yaml", resolve=True)
    cfg = cfg.copy()
    cfg.pipeline = step_settings(cfg)
    check_settings(cfg, root, out)
    p = cfg.pipeline
    run = partial(run_step, root=root, log_dir=logs, in_process=bool(p.get("in_process")))

    def run_all(steps: list[Step]) -> None:  # independent steps: side by side with pipeline.workers > 1
        run_side_by_side(unfinished(steps), run, int(p.get("workers") or 1))

    run(search_step(cfg, out))
    models = students(cfg, out, selected_budgets(cfg, out))
    for model in models:
        run(pretrain_step(cfg, out, model))
    teacher = teacher_model(cfg)
    tasks = [*p.glue_tasks, *(["squad"] if p.get("squad") else [])]  # squad: [] skips SQuAD
    teachers = {task: finetune_step(cfg, out, teacher, task, p.teacher_seed, None) for task in tasks}
    run_all(list(teachers.values()))
    tuned = {(model.name, task, seed): finetune_step(cfg, out, model, task, seed,
                                                     teachers[task].output.parent / "model")
             for model in models for task in tasks for seed in p.seeds}
    firsts = [tuned[models[0].name, task, p.seeds[0]] for task in tasks]
    run_all(firsts)  # each saves its task's teacher logits, which the others then read instead of running it
    run_all([step for step in tuned.values() if step not in firsts])
    from nas_bert.pipeline.report import write_report

    report = write_report(cfg, out, [teacher, *models])
    roles = set((p.get("quantization") or {}).get("roles") or [])
    quantized = [m for m in models if roles & {role for role, _ in m.roles}]
    for model in quantized:
        for task in p.glue_tasks:
            for seed in quantization_seeds(p):
                fp32 = finetune_step(cfg, out, model, task, seed, teachers[task].output.parent / "model")
                for step in quantization_steps(cfg, out, model, task, seed, fp32):
                    run(step)
    if quantized:
        from nas_bert.reports.quantization import write_quantization_report

        write_quantization_report(out / "quantization")
    return report
