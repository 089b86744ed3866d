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

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from nas_bert.arch import MHA
from nas_bert.stages.step_pool import run_side_by_side
from nas_bert.stages.step_times import record_step_time

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One stage run of the pipeline: `config` (search / train) with `overrides`, complete once `output` exists."""

    name: str
    config: str
    overrides: tuple[str, ...]
    output: Path


@dataclass
class Model:
    """A model the pipeline fine-tunes: its role in the comparison, its budget, where it comes from."""

    name: str
    role: str  # teacher | searched | equal_params | equal_latency
    budget: str | None
    path: str  # the encoder to fine-tune (after its pre-training step, for students)
    arch: Any = None  # nas_bert.arch.Arch for students
    roles: list[tuple[str, str | None]] = field(default_factory=list)  # every (role, budget) it stands for


STUDENT_MAX_POSITIONS = 512  # conf/train.yaml student.max_positions: the position table counted in a baseline's size


class PipelineError(RuntimeError):
    """A step failed; the steps before it are kept and skipped when the pipeline is run again."""


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


@contextmanager
def composer(root: Path) -> Iterator[Callable[[str, list[str]], DictConfig]]:
    """compose(config, overrides) over `<root>/conf`, as the entry points compose; the Hydra state of the
    pipeline's own run is restored afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    state = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            yield lambda config, overrides: compose(config, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
        if state is not None:
            GlobalHydra.instance().initialize(state)


@contextmanager
def composed(root: Path, config: str, overrides: list[str]) -> Iterator[DictConfig]:
    """`config` composed from `<root>/conf` with `overrides`, as its entry point would."""
    with composer(root) as compose:
        yield compose(config, overrides)


def in_process_overrides(step: Step) -> tuple[str, list[str]]:
    """(run folder, overrides) of `step` composed here: its `hydra.*` overrides dropped, the folder as paths.output_dir."""
    run_dir = next(o.split("=", 1)[1] for o in step.overrides if o.startswith("hydra.run.dir="))
    return run_dir, [o for o in step.overrides if not o.startswith("hydra.")] + [f"paths.output_dir={run_dir}"]


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


def debug_choice() -> str | None:
    """The `debug=<name>` the pipeline itself runs under, if any (every step then runs under it too)."""
    return HydraConfig.get().runtime.choices.get("debug") if HydraConfig.initialized() else None


def step_settings(cfg: DictConfig) -> DictConfig:
    """`cfg.pipeline`, for a debug run with `debug=<name>` added to every step and without the step sizes
    (`pretrain`, `finetune`, `task_overrides`, `tokens`, `quantization.qat`), which would override the debug
    sizes."""
    p = cfg.pipeline.copy()
    debug = debug_choice()
    if debug:
        p.common, p.pretrain, p.finetune = [*p.common, f"debug={debug}"], [], []
        p.task_overrides, p.tokens = {}, None
        if p.get("quantization"):
            p.quantization.qat = []
    return p


def search_step(cfg: DictConfig, out: Path) -> Step:
    p = cfg.pipeline
    return Step("search", "search", (f"hydra.run.dir={out / 'search'}", "latest_link=null", *p.common, *p.corpus,
                                     *p.search),
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


def pretrain_step(cfg: DictConfig, out: Path, model: Model) -> Step:
    """The pre-training of a student: the searched architecture of its budget, or a uniform BERT."""
    p, run = cfg.pipeline, out / "pretrain" / model.name
    if model.role == "searched":
        which = (f"student.search_run={out / 'search'}", f"student.budget={model.budget}")
    else:
        block = model.arch.blocks
        which = (f"student.baseline={{layers: {sum(b.depth for b in block) // 2}, hidden: {block[0].hidden}, "
                 f"blocks: {len(block)}}}",)
    tokens = (f"tokens={int(p.tokens)}",) if p.get("tokens") else ()
    no_attention = ()
    if not any(MHA in block.ops for block in model.arch.blocks):
        # the attention-score and MiniLM terms match MHA layers: a student without one (the search may pick it) is
        # pre-trained with the rest of the shared recipe (train.py refuses those terms for it when asked directly)
        no_attention = ("model.intermediate.attention_weight=0", "model.intermediate.minilm_weight=0")
        log.warning("%s has no mha layer: pre-trained without the attention and MiniLM terms", model.name)
    return Step(f"pretrain/{model.name}", "train", (f"hydra.run.dir={run}", *which, *p.common, *p.corpus,
                                                    *p.pretrain, *tokens, *no_attention),
                run / "model" / "config.json")


def finetune_step(cfg: DictConfig, out: Path, model: Model, task: str, seed: int, teacher_path: Path | None) -> Step:
    p = cfg.pipeline
    run = out / "finetune" / f"{model.name}_{task}_s{seed}"
    data = (*p.squad, ) if task == "squad" else (*p.glue, f"data.task={task}")
    data = (*data, *(p.get("task_overrides") or {}).get(task, []))
    experiment = "finetune_squad" if task == "squad" else "finetune_glue"
    student = (f"finetune.teacher_path={teacher_path}", *p.student) if teacher_path is not None else (*p.teacher,)
    overrides = (f"experiment={experiment}", f"hydra.run.dir={run}", f"finetune.model_path={model.path}",
                 f"finetune.model_name={model.name}", f"finetune.results_file={out / 'finetune' / 'results.jsonl'}",
                 f"seed={seed}", *data, *p.common, *p.finetune, *student)
    return Step(f"finetune/{model.name}_{task}_s{seed}", "train", overrides, run / "results.json")


def quantization_steps(cfg: DictConfig, out: Path, model: Model, task: str, seed: int, fp32: Step) -> list[Step]:
    """After a student's fp32 fine-tuning `fp32`: scoring its post-training quantized forms (experiment=ptq_glue),
    and quantization-aware task KD (KDLSQ) started from it; same data, seed and student settings."""
    q, tuned = cfg.pipeline.quantization, fp32.output.parent / "model"
    own = ("experiment=", "hydra.run.dir=", "finetune.model_path=", "finetune.model_name=", "finetune.results_file=")
    shared = [o for o in fp32.overrides if not o.startswith(own)]
    bits, reports = int(q.weight_bits), out / "quantization"
    ptq, name = out / "ptq" / f"{model.name}_{task}_s{seed}", f"{model.name}-w{bits}a8"
    qat = out / "finetune" / f"{name}_{task}_s{seed}"
    return [
        Step(f"ptq/{model.name}_{task}_s{seed}", "train",
             ("experiment=ptq_glue", f"hydra.run.dir={ptq}", f"finetune.model_path={tuned}",
              f"finetune.model_name={model.name}", f"ptq.weight_bits={bits}",
              f"ptq.results_file={reports / 'ptq.jsonl'}", *shared), ptq / "ptq.json"),
        Step(f"finetune/{name}_{task}_s{seed}", "train",
             ("experiment=finetune_glue", f"hydra.run.dir={qat}", f"finetune.model_path={model.path}",
              f"finetune.init_from={tuned}", f"finetune.model_name={name}", f"finetune.qat={{weight_bits: {bits}}}",
              f"finetune.results_file={reports / 'qat.jsonl'}", *shared, *q.qat), qat / "results.json")]


def quantization_seeds(p: DictConfig) -> list[int]:
    """The fine-tuning seeds whose students are quantized: `pipeline.quantization.seeds`, or every seed (null)."""
    return list((p.get("quantization") or {}).get("seeds") or p.get("seeds") or [])


def teacher_model(cfg: DictConfig) -> Model:
    return Model("teacher", "teacher", None, str(cfg.teacher.name_or_path), roles=[("teacher", None)])


def students(cfg: DictConfig, out: Path, budgets: list[str]) -> list[Model]:
    """Per budget: the searched student and its baselines (`pipeline.baselines.kinds`); a uniform BERT that is the
    baseline of several (kind, budget) is one model, pre-trained once, and so is an architecture searched for
    several budgets. Baselines are chosen once per run folder (`<run>/baselines.json`): measured latencies vary,
    a resumed pipeline keeps its choice."""
    from nas_bert.modeling.students import load_searched_arch, searched_arch_file

    chosen_file = out / "baselines.json"
    chosen = json.loads(chosen_file.read_text()) if chosen_file.is_file() else {}
    models: dict[str, Model] = {}
    for budget in budgets:
        arch = load_searched_arch(searched_arch_file(out / "search", budget))
        same = next((m for m in models.values() if m.role == "searched" and m.arch == arch), None)
        if same is not None:  # two budgets chose one architecture: one model, pre-trained and fine-tuned once
            same.roles.append(("searched", budget))
        else:
            name = f"nas-bert-{budget}"
            models[name] = Model(name, "searched", budget, str(out / "pretrain" / name / "model"), arch,
                                 [("searched", budget)])
        for kind in (cfg.pipeline.get("baselines") or {}).get("kinds") or []:
            key = f"{budget}/{kind}"
            if key not in chosen:
                start = time.perf_counter()
                chosen[key] = choose_baseline(cfg, arch, kind)
                chosen_file.write_text(json.dumps(chosen, indent=2))
                record_step_time(out / "logs", f"baselines/{key}", time.perf_counter() - start)
            layers, hidden, blocks = chosen[key]["layers"], chosen[key]["hidden"], chosen[key]["blocks"]
            name = f"bert-L{layers}-H{hidden}"
            if name not in models:
                from nas_bert.modeling.students import uniform_arch

                models[name] = Model(name, kind, budget, str(out / "pretrain" / name / "model"),
                                     uniform_arch(layers, hidden, blocks))
            models[name].roles.append((kind, budget))
    return list(models.values())


def choose_baseline(cfg: DictConfig, arch: Any, kind: str) -> dict[str, Any]:
    """The uniform BERT of the grid closest to `arch` in parameters (`equal_params`) or measured latency."""
    from transformers import AutoConfig

    from nas_bert.encoder import encoder_params
    from nas_bert.search.baselines import (
        arch_latency_ms,
        closest_in_latency,
        closest_in_params,
        relative_latency,
        uniform_grid,
    )
    from nas_bert.teacher import resolve_model_path

    b, lat, space = cfg.pipeline.baselines, cfg.pipeline.latency, cfg.space
    teacher = AutoConfig.from_pretrained(resolve_model_path(cfg.teacher.name_or_path))  # its sizes, not its weights
    vocab, positions = teacher.vocab_size, STUDENT_MAX_POSITIONS
    step = b.get("width_step") or space.head_dim
    widths = range(step, teacher.hidden_size + 1, step)
    grid = uniform_grid(range(b.layers[0], b.layers[1] + 1), widths, teacher.num_hidden_layers,
                        cfg.teacher.num_blocks, vocab, positions, space.ffn_ratio)

    sizes = (vocab, positions, space.head_dim, space.ffn_ratio)
    timing = (lat.batch_size, lat.seq_len, lat.min_run_time)
    if kind == "equal_params":
        found, target = closest_in_params(encoder_params(arch, vocab, positions, ffn_ratio=space.ffn_ratio), grid,
                                          b.tolerance), None
    elif kind == "equal_latency":
        target = arch_latency_ms(arch, *sizes, *timing)
        # each candidate is timed side by side with the searched student and priced at the ratio: a busy machine
        # moves both, where separate timings drift apart (a searched student once measured 8.3 ms, 1.7 ms quiet)
        found = closest_in_latency(target, grid, lambda c: target * relative_latency(c, arch, *sizes, *timing),
                                   b.tolerance)
    else:
        raise PipelineError(f"pipeline.baselines.kinds: unknown kind {kind!r}; use equal_params and / or equal_latency")
    log.info("%s baseline: %s%s", kind, found.describe(), "" if target is None else f" (target {target:.2f} ms)")
    return {"layers": found.layers, "hidden": found.hidden, "blocks": found.blocks, "params": found.params,
            "latency_ms": found.latency_ms, "target_latency_ms": target}


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


def check_step_overrides(cfg: DictConfig, root: Path, out: Path) -> None:
    """Compose every kind of step the pipeline will run, so that a misspelt key or config choice in any `pipeline.*`
    list fails now, naming the list, rather than when its step comes."""
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
                compose(step.config, in_process_overrides(step)[1])
            except Exception as error:  # Hydra's composition errors have no common base class
                named = [f"pipeline.{key}" for key, items in lists.items()
                         if any(o.split("=", 1)[0].lstrip("+~") in str(error) for o in items)]
                raise PipelineError(f"{' / '.join(named) or 'pipeline'}: the {step.name} step's overrides do not "
                                    f"compose: {error}\nfix that list and run the same command again") from None


def check_settings(cfg: DictConfig, root: Path, out: Path) -> None:
    """What can be checked before any step runs: the seeds, every step's overrides, the device, and the corpus
    files the steps will read."""
    import glob

    from nas_bert.stages.common import check_accelerator

    p = cfg.pipeline
    if not list(p.get("seeds") or []):
        raise PipelineError("pipeline.seeds is empty: give at least one fine-tuning seed, e.g. pipeline.seeds=[0,1,2]")
    extra = set(quantization_seeds(p)) - set(p.seeds)
    if extra:
        raise PipelineError(f"pipeline.quantization.seeds has {sorted(extra)}, which pipeline.seeds={list(p.seeds)} "
                            f"does not fine-tune: quantization starts from those models; pick among them (or null)")
    check_step_overrides(cfg, root, out)
    with composed(root, "train", ["paths.output_dir=.", *p.common, *p.corpus]) as train:  # as its steps compose it
        files = train.data.get("train_files")
        check_accelerator(train.trainer)
    patterns = [files] if isinstance(files, str) else list(files or [])
    missing = [f for f in patterns if not glob.glob(str(f))]
    if missing:
        raise PipelineError(f"the pre-training corpus {missing} matches no file: point data.train_files (for "
                            f"data/corpus=gutenberg: NAS_BERT_GUTENBERG_DIR) at your text files, in pipeline.corpus")


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
    from nas_bert.stages.study import write_report

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
        from nas_bert.stages.quantization_report import write_quantization_report

        write_quantization_report(out / "quantization")
    return report
