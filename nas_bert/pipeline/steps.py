"""The steps of a pipeline: what each runs (`Step`: an entry point's config with its overrides, complete once its
output exists), how each is built from the `pipeline.*` settings, and how a step's config is composed in this
process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from nas_bert.arch import MHA

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
    arch_file: str | None = None  # a student pre-trained from this architecture file (else: its role says which)


class PipelineError(RuntimeError):
    """A step failed; the steps before it are kept and skipped when the pipeline is run again."""


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
    """(run folder, overrides) of `step` composed here: its `hydra.*` overrides dropped, the folder as
    paths.output_dir."""
    run_dir = next(o.split("=", 1)[1] for o in step.overrides if o.startswith("hydra.run.dir="))
    return run_dir, [o for o in step.overrides if not o.startswith("hydra.")] + [f"paths.output_dir={run_dir}"]


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
    """The pre-training of a student: its architecture file, the searched architecture of its budget, or a uniform
    BERT."""
    p, run = cfg.pipeline, out / "pretrain" / model.name
    if model.arch_file:
        which = (f"student.arch_file={model.arch_file}",)
    elif model.role == "searched":
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
