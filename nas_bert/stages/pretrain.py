"""Stage 3: pre-train a searched architecture (or a uniform baseline) with KD from the teacher, and
export it as a Hugging Face model directory (safetensors + tokenizer) that `from_pretrained` loads."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig
from transformers import DataCollatorForLanguageModeling

from nas_bert.arch import Arch
from nas_bert.distill.mlm_teacher import prepare_mlm_teacher
from nas_bert.modeling.students import build_student, load_searched_arch, uniform_arch
from nas_bert.stages.common import build_trainer, finish_loggers, start_run
from nas_bert.utils.batch import first_batches

log = logging.getLogger(__name__)


def student_arch(cfg: DictConfig) -> Arch:
    """The searched architecture file, or the uniform baseline `student.baseline` = {layers, hidden}."""
    student = cfg.student
    if student.get("baseline"):
        return uniform_arch(student.baseline.layers, student.baseline.hidden, student.baseline.get("blocks", 1))
    path = Path(student.arch_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"architecture file {path} does not exist: run `python search.py` first, or set "
            f"student.arch_file=<run>/architectures/<budget>.yaml (or student.baseline={{layers: 6, hidden: 256}})"
        )
    return load_searched_arch(path, instantiate(cfg.space) if cfg.get("space") else None)


def run_pretrain(cfg: DictConfig) -> dict[str, float]:
    output_dir = start_run(cfg)
    arch = student_arch(cfg)

    datamodule = instantiate(cfg.data)
    tokenizer = datamodule.tokenizer
    datamodule.prepare_data()
    datamodule.setup("fit")
    head = cfg.mlm_head
    head_dir = Path(head.dir) / re.sub(r"[^A-Za-z0-9]+", "-", cfg.teacher.name_or_path).strip("-")[-80:]
    teacher, report = prepare_mlm_teacher(
        cfg.teacher.name_or_path, tokenizer, head_dir,
        fit_batches=first_batches(datamodule.train_dataset, head.batch_size, head.fit_batches),
        eval_batches=first_batches(datamodule.val_dataset, head.batch_size, head.eval_batches),
        fit_steps=head.fit_steps, lr=head.lr)
    (output_dir / "mlm_head.json").write_text(json.dumps(report, indent=2))
    datamodule.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability)

    s = cfg.student
    student = build_student(arch, vocab_size=len(tokenizer), max_positions=s.max_positions, head_dim=s.head_dim,
                            ffn_ratio=s.ffn_ratio, dropout=s.dropout)
    module = instantiate(cfg.model, student=student, teacher=teacher)
    trainer = build_trainer(cfg)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        metrics = trainer.validate(module, datamodule=datamodule)[0]
    finally:
        finish_loggers(trainer)
    if trainer.is_global_zero:
        export_dir = output_dir / "model"
        student.save_pretrained(export_dir)
        tokenizer.save_pretrained(export_dir)
        log.info("exported the student (%s parameters) to %s", f"{student.num_parameters():,}", export_dir)
    return {k: float(v) for k, v in metrics.items()}
