"""What a pipeline checks before its first step: seeds, GLUE task names, every step's overrides (composed), the
device and the corpus files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from nas_bert.pipeline.steps import (
    Model,
    PipelineError,
    Step,
    composer,
    finetune_step,
    in_process_overrides,
    pretrain_step,
    quantization_seeds,
    quantization_steps,
    search_step,
    teacher_model,
)

OVERRIDE_LISTS = ("common", "corpus", "search", "pretrain", "glue", "squad", "finetune", "teacher", "student")


def override_lists(p: DictConfig) -> dict[str, list[str]]:
    """Every `pipeline.*` list of overrides, by its key."""
    lists = {key: list(p.get(key) or []) for key in OVERRIDE_LISTS}
    lists |= {f"task_overrides.{task}": list(items) for task, items in (p.get("task_overrides") or {}).items()}
    if p.get("quantization"):
        lists["quantization.qat"] = list(p.quantization.get("qat") or [])
    return lists


def planned_steps(cfg: DictConfig, out: Path) -> list[Step]:
    """One step of every kind the pipeline runs (search, pre-training, each task's teacher and student fine-tuning,
    quantization), built by the same functions as the run, with a stand-in student (the real ones come from the
    search)."""
    from nas_bert.modeling.students import uniform_arch

    p = cfg.pipeline
    student = Model("student", "searched", "budget", str(out / "pretrain" / "student" / "model"),
                    uniform_arch(2, int(cfg.space.head_dim), 1))
    teacher, tasks = teacher_model(cfg), [*p.glue_tasks, *(["squad"] if p.get("squad") else [])]
    steps = [search_step(cfg, out), pretrain_step(cfg, out, student)]
    for task in tasks:
        steps += [finetune_step(cfg, out, teacher, task, p.teacher_seed, None),
                  finetune_step(cfg, out, student, task, p.seeds[0], out / "teacher")]
    if (p.get("quantization") or {}).get("roles") and p.glue_tasks:
        task = p.glue_tasks[0]
        fp32 = finetune_step(cfg, out, student, task, p.seeds[0], out / "teacher")
        steps += quantization_steps(cfg, out, student, task, p.seeds[0], fp32)
    return steps


def composed_steps(cfg: DictConfig, root: Path, out: Path) -> Iterator[tuple[Step, DictConfig]]:
    """Every kind of step the pipeline will run, composed (unresolved) as it will be, so that a misspelt key or
    config choice in any `pipeline.*` list fails now, naming the list, rather than when its step comes."""
    from nas_bert.data.glue import get_glue_task

    for task in cfg.pipeline.glue_tasks:
        try:
            get_glue_task(task)
        except ValueError as error:
            raise PipelineError(f"pipeline.glue_tasks: {error}") from None
    lists = override_lists(cfg.pipeline)
    with composer(root) as compose:
        for step in planned_steps(cfg, out):
            try:
                step_cfg = compose(step.config, in_process_overrides(step)[1])
            except Exception as error:  # Hydra's composition errors have no common base class
                named = [f"pipeline.{key}" for key, items in lists.items()
                         if any(o.split("=", 1)[0].lstrip("+~") in str(error) for o in items)]
                raise PipelineError(f"{' / '.join(named) or 'pipeline'}: the {step.name} step's overrides do not "
                                    f"compose: {error}\nfix that list and run the same command again") from None
            yield step, step_cfg


def check_step_overrides(cfg: DictConfig, root: Path, out: Path) -> None:
    """Compose every kind of step the pipeline will run (`composed_steps`)."""
    for _ in composed_steps(cfg, root, out):
        pass


def check_settings(cfg: DictConfig, root: Path, out: Path) -> None:
    """What can be checked before any step runs: the seeds, every step's overrides, the device, and the corpus
    files the pre-training steps will read."""
    import glob

    from nas_bert.stages.common import check_accelerator

    p = cfg.pipeline
    if not list(p.get("seeds") or []):
        raise PipelineError("pipeline.seeds is empty: give at least one fine-tuning seed, e.g. pipeline.seeds=[0,1,2]")
    extra = set(quantization_seeds(p)) - set(p.seeds)
    if extra:
        raise PipelineError(f"pipeline.quantization.seeds has {sorted(extra)}, which pipeline.seeds={list(p.seeds)} "
                            f"does not fine-tune: quantization starts from those models; pick among them (or null)")
    files = None
    for step, step_cfg in composed_steps(cfg, root, out):
        if step.name.startswith("pretrain/"):  # the corpus and the device, as the pre-training steps compose them
            files = step_cfg.data.get("train_files")
            check_accelerator(step_cfg.trainer)
    patterns = [files] if isinstance(files, str) else list(files or [])
    missing = [f for f in patterns if not glob.glob(str(f))]
    if missing:
        raise PipelineError(f"the pre-training corpus {missing} matches no file: point data.train_files (for "
                            f"data/corpus=gutenberg: NAS_BERT_GUTENBERG_DIR) at your text files, in pipeline.corpus")
