"""The students a pipeline trains: per budget the searched architecture and its uniform BERT baselines, each
chosen once per run folder."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nas_bert.pipeline.step_times import record_step_time
from nas_bert.pipeline.steps import Model, PipelineError

log = logging.getLogger(__name__)

STUDENT_MAX_POSITIONS = 512  # conf/train.yaml student.max_positions: the position table counted in a baseline's size


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
    from nas_bert.nas.baselines import (
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
