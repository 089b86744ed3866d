"""What the pre-training and fine-tuning stages tell an exported model's card (see nas_bert.reports.model_card)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from nas_bert.arch import Arch
from nas_bert.encoder import encoder_flops
from nas_bert.reports.model_card import teacher_license, update_card


def architecture(arch: Arch) -> dict:
    """The card's architecture facts: the blocks and the embedding size, without the search's `meta`."""
    return {key: value for key, value in arch.to_dict().items() if key != "meta"}


def teacher_hub_id(cfg: DictConfig) -> str | None:
    """The teacher's Hub id: `teacher.hub_id`, else `teacher.name_or_path` unless that is a local folder."""
    name = str(cfg.teacher.name_or_path)
    return cfg.teacher.get("hub_id") or (None if Path(name).exists() else name)


def origin(cfg: DictConfig) -> str:
    """What the pre-trained student is and where it comes from, as the card's opening sentence."""
    s = cfg.student
    if s.get("baseline"):
        what = "A hand-designed uniform BERT baseline (one repeated MHA + FFN layer)"
    elif s.get("arch_file"):
        what = f"A student of the architecture in `{s.arch_file}`"
    else:
        what = f"The student the search selected for budget `{s.budget}` (search run `{s.search_run}`)"
    teacher = teacher_hub_id(cfg) or cfg.teacher.name_or_path
    return (f"{what}, distilled from `{teacher}` with nas-bert (NAS-BERT, KDD 2021: block-wise architecture search "
            f"and knowledge distillation)")


def table_setting(cfg: DictConfig) -> str | None:
    """Where a searched student's predicted latency comes from: its search run's latency table setting."""
    import json

    s = cfg.student
    table = Path(str(s.search_run)) / "latency_table.json"
    if s.get("baseline") or s.get("arch_file") or not table.is_file():
        return None
    data = json.loads(table.read_text())
    return f"{data['device'].get('name')}, batch {data['batch_size']}, sequence {data['seq_len']}"


def measured_latency_ms(encoder: torch.nn.Module, vocab_size: int, seq_len: int) -> float:
    from nas_bert.nas.baselines import encoder_latency_ms

    return encoder_latency_ms(encoder, vocab_size, batch_size=1, seq_len=seq_len, min_run_time=0.1)


def card_after_pretraining(cfg: DictConfig, export_dir: Path, arch: Arch, student: Any, objective: str, init: str,
                           steps: int, world_size: int) -> Path:
    """The card of a pre-trained student: what it is, its size, predicted and measured latency, its recipe."""
    from nas_bert.nas.timing import device_info

    seq_len = int(cfg.data.max_seq_length)
    encoder = student.nas_bert
    device = next(encoder.parameters()).device
    tokens = steps * int(cfg.data.batch_size) * seq_len * world_size * int(cfg.trainer.get("accumulate_grad_batches")
                                                                           or 1)
    return update_card(
        export_dir, model_name=Path(cfg.paths.output_dir).name, base_model=teacher_hub_id(cfg),
        license=teacher_license(str(cfg.teacher.name_or_path)), pipeline_tag="fill-mask", origin=origin(cfg),
        architecture=architecture(arch),
        size={"params": encoder.num_parameters(), "flops_per_sequence": encoder_flops(arch, seq_len),
              "seq_len": seq_len},
        latency={"predicted_ms": arch.meta.get("predicted_latency_ms"), "table_setting": table_setting(cfg),
                 "measured_ms": measured_latency_ms(encoder, encoder.config.vocab_size, seq_len),
                 "batch_size": 1, "seq_len": seq_len, "device": device_info(device)["name"]},
        recipe={"corpus": cfg.data.get("train_files"), "tokens": tokens, "steps": steps, "objective": objective,
                "init": init, "teacher": str(cfg.teacher.name_or_path)})


def card_after_finetuning(cfg: DictConfig, export_dir: Path, task: str, final: dict[str, float], seed: int,
                          model: Any) -> None:
    """The fine-tuned model's card (the source model's facts and this score), and the score added to the source
    model's own card when it has one (a nas-bert export). Without a record, a NAS-BERT model's architecture and
    size come from its config."""
    from nas_bert.data.glue import GLUE_TASKS
    from nas_bert.reports.model_card import read_record

    source = Path(str(cfg.finetune.get("init_from") or cfg.finetune.model_path))
    glue = GLUE_TASKS.get(task)  # None: SQuAD
    prefix, dataset = (f"val/glue/{task}/", glue.folder) if glue else ("val/squad/", "SQuAD v1.1")
    results = [{"task": task, "metric": key.removeprefix(prefix), "value": float(value), "seed": seed,
                "dataset": "glue" if glue else "squad", "config": task if glue else None, "dataset_name": dataset}
               for key, value in final.items()
               if key.startswith(prefix) and not key.endswith(("num_examples", "loss", "total", "loyalty"))]
    record = read_record(source) if source.is_dir() else {}
    facts = dict(record)
    if "architecture" not in facts and hasattr(model.config, "to_arch"):
        arch = model.config.to_arch()
        facts["architecture"] = architecture(arch)
        facts["size"] = {"params": model.base_model.num_parameters(), "seq_len": int(cfg.data.max_seq_length),
                         "flops_per_sequence": encoder_flops(arch, int(cfg.data.max_seq_length))}
    name = record.get("model_name") or (source.parent.name if source.name == "model" else source.name)
    name = name.removesuffix(f"-{task}")  # tuned again on its own task (e.g. quantization-aware): named once
    tuned = f"fine-tuned on {dataset} with nas-bert"
    lsq = getattr(model.config, "lsq", None)  # quantization-aware: its scores are not the source model's
    if lsq:
        tuned += f", quantization-aware (LSQ: {lsq['weight_bits']}-bit weights, {lsq['act_bits']}-bit activations)"
        name += f"-w{lsq['weight_bits']}a{lsq['act_bits']}"
    made = f"{record['origin']}; then {tuned}" if record.get("origin") else f"`{source}`, {tuned}"
    update_card(export_dir, **{**facts, "model_name": f"{name}-{task}", "origin": made,
                               "base_model": record.get("base_model") or teacher_hub_id(cfg),
                               "pipeline_tag": "text-classification" if glue else "question-answering",
                               "results": results})
    if record and not lsq:
        update_card(source, results=results)
