"""Stage 3: pre-train a searched architecture (or a uniform baseline) with KD from the teacher, and
export it as a Hugging Face model directory (safetensors + tokenizer) that `from_pretrained` loads."""

from __future__ import annotations

import json
import logging
import math
import re
from functools import partial
from pathlib import Path

import lightning as L
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from nas_bert.arch import Arch
from nas_bert.distill.masking import TokenMasker
from nas_bert.distill.mlm_head import EncoderWithMLMHead, MissingMLMHead, fit_mlm_head, load_masked_lm
from nas_bert.distill.state_cache import cache_spec
from nas_bert.encoder import encoder_params
from nas_bert.inherit import inherit_from_supernet, inherit_teacher_embeddings, load_supernet_checkpoint
from nas_bert.modeling import NasBertForMaskedLM
from nas_bert.modeling.students import (
    build_student,
    equal_size_baseline,
    load_searched_arch,
    searched_arch_file,
    uniform_arch,
)
from nas_bert.reports.card import card_after_pretraining
from nas_bert.stages.common import (
    build,
    build_trainer,
    finish_loggers,
    log_model_artifact,
    push_export,
    start_run,
)
from nas_bert.teacher import FrozenTeacher, load_encoder, resolve_model_path

log = logging.getLogger(__name__)


def searched_arch(cfg: DictConfig) -> tuple[Arch, Path]:
    """The architecture `search.py` selected: `student.arch_file`, or `student.search_run` + `student.budget`."""
    student = cfg.student
    path = Path(student.arch_file) if student.get("arch_file") else searched_arch_file(student.search_run,
                                                                                         student.budget)
    return load_searched_arch(path, build(cfg.space) if cfg.get("space") else None), path


def student_arch(cfg: DictConfig, vocab_size: int) -> Arch:
    """The searched architecture, or the uniform baseline `student.baseline` = {layers, hidden, blocks};
    `hidden: null` picks the width whose size is closest to the searched architecture's (equal size)."""
    student, baseline = cfg.student, cfg.student.get("baseline")
    if not baseline:
        return searched_arch(cfg)[0]
    if baseline.get("hidden"):
        return uniform_arch(baseline.layers, baseline.hidden, baseline.get("blocks", 1))
    target = encoder_params(searched_arch(cfg)[0], vocab_size, student.max_positions, ffn_ratio=student.ffn_ratio)
    arch = equal_size_baseline(target, baseline.layers, vocab_size, student.max_positions, student.head_dim,
                               student.ffn_ratio, baseline.get("blocks", 1))
    log.info("equal-size baseline for %s parameters: %d layers x hidden %d", f"{target:,}", baseline.layers,
             arch.blocks[0].hidden)
    return arch


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, teacher: str) -> None:
    """The data's tokenizer must be the teacher's: KD compares logits over the same vocabulary."""
    try:
        expected = AutoTokenizer.from_pretrained(resolve_model_path(teacher))
    except (OSError, ValueError):
        return  # the teacher ships no tokenizer: the logits shapes are still checked at the first step
    if tokenizer.get_vocab() != expected.get_vocab():
        ours, theirs = tokenizer.get_vocab(), expected.get_vocab()
        differ = sorted(set(ours.items()) ^ set(theirs.items()), key=lambda kv: kv[1])[:3]
        raise ValueError(
            f"the data tokenizer ({len(ours)} tokens) does not match the teacher's vocabulary ({len(theirs)} tokens; "
            f"e.g. {differ}); set data.tokenizer to the teacher's tokenizer (teacher.tokenizer)"
        )


INITS = ("auto", "scratch", "supernet", "teacher_embeddings", "extract")
AUTO_RULES = {  # what `student.init=auto` means, by the recipe's `recipe_version` (a saved run keeps its rule)
    1: "supernet for a searched student whose search run kept its supernet, else teacher_embeddings (nas-bert 0.2)",
    2: "teacher_embeddings for every student: the GLUE winner at 1M tokens of the init study (docs/RESULTS.md)"}


def student_init(cfg: DictConfig, arch: Arch) -> tuple[str, Path | None]:
    """How the student starts (checked before any training) and the supernet checkpoint when it inherits one.

    `supernet`: the search run's supernet weights for the path; `teacher_embeddings`: the teacher's embedding
    tables projected to the student's width (PCA), the rest fresh; `extract`: the teacher's own layers, heads,
    neurons and dimensions (`nas_bert.extract`, ETD); `scratch`: all fresh (the paper); `auto`: the rule of the
    recipe's version (`AUTO_RULES`)."""
    init = cfg.student.init
    if init not in INITS:
        raise ValueError(f"student.init must be one of {', '.join(INITS)}, got {init!r}")
    if init == "auto":
        init = auto_init(cfg)
    elif init == "extract":
        check_extraction(cfg, arch)
    if init != "supernet":
        return init, None
    path = supernet_checkpoint(cfg)
    if not path.is_file():
        raise FileNotFoundError(f"student.init=supernet: no supernet checkpoint at {path}; set "
                                f"student.supernet_checkpoint to a search run's checkpoints/last.ckpt")
    return "supernet", path


def supernet_checkpoint(cfg: DictConfig) -> Path:
    """`student.supernet_checkpoint`, or the search run's `checkpoints/last.ckpt`."""
    ckpt = cfg.student.get("supernet_checkpoint")
    return Path(ckpt) if ckpt else searched_arch(cfg)[1].parent.parent / "checkpoints" / "last.ckpt"


def auto_init(cfg: DictConfig) -> str:
    """`student.init=auto` resolved by the rule of the recipe's version (`AUTO_RULES`; a recipe saved before
    `recipe_version` existed is version 1). Version 2: `teacher_embeddings`, searched students and baselines alike.
    In the init study extraction lowered the pre-training loss of both students tried but not their GLUE average
    at 1M tokens (+0.6 for the uniform bert-L4-H128, -5.8 for the searched 1/4 student), and supernet inheritance
    had cost the searched student most in the CPU study."""
    version = int(cfg.get("recipe_version") or 1)
    if version not in AUTO_RULES:
        raise ValueError(f"recipe_version {version} is newer than this nas-bert knows ({max(AUTO_RULES)}); "
                         f"upgrade nas-bert, or set student.init explicitly")
    if version == 1 and not cfg.student.get("baseline") and supernet_checkpoint(cfg).is_file():
        log.info("student.init=auto (recipe version 1): supernet")
        return "supernet"
    log.info("student.init=auto (recipe version %d): teacher_embeddings (%s)", version, AUTO_RULES[version])
    return "teacher_embeddings"


def check_extraction(cfg: DictConfig, arch: Arch) -> None:
    """`student.init=extract`: the student fits in the teacher (widths, head size, FFNs, layers), checked from the
    teacher's config before anything is loaded or trained."""
    from transformers import AutoConfig

    from nas_bert.extract import TeacherShape, layer_map
    from nas_bert.extract.plan import arch_widths, check_fits, student_layers

    if cfg.student.extract.selection not in ("importance", "random"):
        raise ValueError(f"student.extract.selection must be importance or random, got "
                         f"{cfg.student.extract.selection!r}")
    shape = TeacherShape.of(AutoConfig.from_pretrained(resolve_model_path(cfg.teacher.name_or_path)))
    check_fits(arch_widths(arch), shape, cfg.student.head_dim, cfg.student.ffn_ratio)
    layer_map(student_layers(arch), shape.layers, cfg.student.extract.layers)


def extract_from_teacher(cfg: DictConfig, student: NasBertForMaskedLM, teacher: FrozenTeacher, dataset,
                         masker: TokenMasker) -> dict:
    """`student.init=extract`: the teacher's weights copied into the student, chosen at random (seeded) or by
    importance on the first `student.extract.batches` training batches; returns the extraction report."""
    from nas_bert.extract import extract_student
    from nas_bert.extract.importance import teacher_selection

    e = cfg.student.extract
    selection = teacher_selection(teacher.model, dataset, masker, int(cfg.student.head_dim), e.selection,
                                  int(e.batches), int(e.batch_size), cfg.seed if e.seed is None else int(e.seed))
    return extract_student(student, teacher.model, selection, e.layers)


def slug(name: str) -> str:
    """A folder name for a model path or hub id."""
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")[-80:]


def has_own_mlm_head(name_or_path: str) -> bool:
    """Whether the teacher checkpoint ships a pre-trained MLM head (BERT-base does; all-MiniLM-L6-v2 does not)."""
    try:
        load_masked_lm(resolve_model_path(name_or_path))
    except MissingMLMHead:
        return False
    return True


def pretrain_objective(cfg: DictConfig) -> str:
    """`model.objective`, with `auto` resolved: the paper's prediction-layer KD when the teacher has its own
    pre-trained MLM head, representation KD when it has none (a head fitted on a frozen encoder stays near
    unigram level, so its logits carry little signal, while the encoder's states are what it is good at)."""
    objective = cfg.model.objective
    if objective != "auto":
        return objective
    chosen = "prediction" if has_own_mlm_head(cfg.teacher.name_or_path) else "representation"
    log.info("model.objective=auto: %s (the teacher %s)", chosen,
             "has a pre-trained MLM head" if chosen == "prediction" else "has no pre-trained MLM head")
    return chosen


def mlm_teacher(cfg: DictConfig, datamodule, masker: TokenMasker) -> tuple[FrozenTeacher, dict]:
    """The frozen masked-LM teacher: the checkpoint's own MLM head, the cached fitted one, or one fitted now
    (also when `mlm_head.refit`); returns it and a report of which."""
    head, name = cfg.mlm_head, cfg.teacher.name_or_path
    head_dir = Path(head.dir) / slug(name)
    load_teacher = partial(FrozenTeacher, name, tokenizer=cfg.teacher.tokenizer,
                           loader=partial(load_masked_lm, head_dir=str(head_dir)))

    def fit() -> dict:
        return fit_mlm_head(name, head_dir, masker, datamodule.train_dataset, datamodule.val_dataset,
                            steps=head.fit_steps, batch_size=head.batch_size, fit_batches=head.fit_batches,
                            eval_batches=head.eval_batches, lr=head.lr, accelerator=cfg.trainer.accelerator)

    report = fit() if head.get("refit") else None
    try:
        teacher = load_teacher()
    except MissingMLMHead:
        report = fit()
        teacher = load_teacher()
    if not isinstance(teacher.model, EncoderWithMLMHead):
        return teacher, {"mlm_head": "own"}
    return teacher, report or {"mlm_head": "cached", "path": str(head_dir)}


def budget_steps(cfg: DictConfig, trainer: L.Trainer, train_sequences: int) -> int | None:
    """Optimizer steps for `tokens` (None: the trainer's own max_steps / max_epochs decide); a budget larger
    than the corpus repeats it, and says so."""
    tokens = cfg.get("tokens")
    if tokens is None:
        return None
    per_step = cfg.data.batch_size * trainer.world_size * trainer.accumulate_grad_batches  # sequences
    seq_len = cfg.data.max_seq_length
    if int(tokens) < per_step * seq_len:
        raise ValueError(f"tokens={tokens} is less than one optimizer step ({per_step} sequences x {seq_len} "
                         f"tokens = {per_step * seq_len}); raise tokens or lower data.batch_size")
    steps = math.ceil(int(tokens) / (per_step * seq_len))
    corpus = train_sequences * seq_len
    if steps * per_step > train_sequences:
        log.warning("token budget %s exceeds the corpus (%s tokens in %d packed sequences): it is read %.1f "
                    "times (epochs repeat)", f"{int(tokens):,}", f"{corpus:,}", train_sequences,
                    steps * per_step / train_sequences)
    log.info("token budget %s: %d steps of %d sequences x %d tokens", f"{int(tokens):,}", steps, per_step, seq_len)
    return steps


def sequences_per_rank(cfg: DictConfig, trainer: L.Trainer, train_sequences: int) -> int:
    """How many distinct training sequences each process reads in this run (at most the corpus)."""
    if trainer.max_steps is None or trainer.max_steps < 0:  # epochs decide: the whole corpus
        return max(train_sequences // trainer.world_size, 1)
    per_step = cfg.data.batch_size * trainer.accumulate_grad_batches  # per process
    return max(min(train_sequences // trainer.world_size, trainer.max_steps * per_step), 1)


def teacher_cache_spec(cfg: DictConfig, objective: str, sequences: int, teacher: FrozenTeacher) -> dict | None:
    """{"dir", "capacity"} of the teacher state cache, or None when off (`teacher_cache.dir: null`) or unusable
    (objectives other than representation mask their inputs, so the teacher's states change every step). It holds
    every layer's states, so every student of this teacher and sequence length shares it."""
    cache = cfg.get("teacher_cache")
    if not cache or objective != "representation":
        return None
    return cache_spec(cache.get("dir"), cache.max_gib, teacher.name_or_path, teacher.config.num_hidden_layers,
                      teacher.hidden_size, cfg.data.max_seq_length, sequences)


def export_student(cfg: DictConfig, export_dir: Path, student: NasBertForMaskedLM, tokenizer: PreTrainedTokenizerBase,
                   arch: Arch, objective: str, init: str, trainer: L.Trainer) -> None:
    """`<run>/model`: weights, tokenizer, modeling code, model card, and (`export_onnx`) the checked ONNX encoder."""
    student.save_pretrained(export_dir)
    tokenizer.save_pretrained(export_dir)
    card_after_pretraining(cfg, export_dir, arch, student, objective, init, trainer.global_step, trainer.world_size)
    log.info("exported the student (%s parameters) to %s", f"{student.num_parameters():,}", export_dir)
    if cfg.get("export_onnx"):
        from nas_bert.modeling.onnx_export import check_onnx, export_onnx

        onnx_path = export_onnx(student.nas_bert, export_dir / "model.onnx")
        log.info("ONNX encoder %s: onnxruntime matches PyTorch within %.1e", onnx_path,
                 check_onnx(student.nas_bert, onnx_path))


def run_pretrain(cfg: DictConfig) -> dict[str, float]:
    output_dir = start_run(cfg)
    datamodule = build(cfg.data)
    tokenizer = datamodule.tokenizer
    check_tokenizer(tokenizer, cfg.teacher.name_or_path)
    arch = student_arch(cfg, len(tokenizer))
    init, inherit_from = student_init(cfg, arch)
    objective = pretrain_objective(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    masker = TokenMasker.for_tokenizer(tokenizer, cfg.mlm_probability, seed=cfg.seed)
    if objective == "representation":  # no MLM head needed on either side
        teacher, report = FrozenTeacher(cfg.teacher.name_or_path, cfg.teacher.num_blocks, cfg.teacher.tokenizer,
                                        loader=load_encoder), {"mlm_head": "not used (objective=representation)"}
    else:
        teacher, report = mlm_teacher(cfg, datamodule, masker)
    (output_dir / "mlm_head.json").write_text(json.dumps(report, indent=2))

    s = cfg.student
    student = build_student(arch, vocab_size=len(tokenizer), max_positions=s.max_positions, head_dim=s.head_dim,
                            ffn_ratio=s.ffn_ratio, dropout=s.dropout)
    report = {"init": init}
    if init == "supernet":
        report |= {"checkpoint": str(inherit_from),
                   **inherit_from_supernet(student, load_supernet_checkpoint(inherit_from), teacher.model)}
    elif init == "teacher_embeddings":
        report["embeddings"] = inherit_teacher_embeddings(student, teacher.model)
    elif init == "extract":
        report |= extract_from_teacher(cfg, student, teacher, datamodule.train_dataset, masker)
    (output_dir / "student_init.json").write_text(json.dumps(report, indent=2))
    trainer = build_trainer(cfg)
    steps = budget_steps(cfg, trainer, len(datamodule.train_dataset))
    if steps is not None:  # the token budget decides the length, whatever max_steps / max_epochs say
        trainer.fit_loop.epoch_loop.max_steps, trainer.fit_loop.max_epochs = steps, -1
    cache = teacher_cache_spec(cfg, objective, sequences_per_rank(cfg, trainer, len(datamodule.train_dataset)),
                               teacher)
    # objects passed to the partial, not to instantiate: Hydra would turn the masker dataclass into a config
    module = build(cfg.model, _partial_=True)(student=student, teacher=teacher, masker=masker, objective=objective,
                                              teacher_cache=cache)
    export_dir = output_dir / "model"
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = trainer.validate(module, datamodule=datamodule)[0]
        if trainer.is_global_zero:
            label = f"extract ({cfg.student.extract.selection})" if init == "extract" else init  # the card's init
            export_student(cfg, export_dir, student, tokenizer, arch, objective, label, trainer)
            log_model_artifact(trainer.loggers, export_dir)
    finally:
        finish_loggers(trainer)
    if trainer.is_global_zero:
        push_export(cfg, export_dir)  # last: a failed push loses nothing written
    return {k: float(v) for k, v in metrics.items()}
