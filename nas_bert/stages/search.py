"""Stage 2: supernet training with progressive shrinking, then one architecture per budget.

`run_search` = latency table -> supernet training with shrinking -> loss table -> vectorised
multi-budget selection -> whole-model re-ranking -> architecture files, tables and plot.
`search.select_from=<run dir>` skips training and selects from that run's supernet.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from rich.table import Table

from nas_bert.nas.approximation import (
    VocabSpec,
    block_tables,
    budgets_from_config,
    coupling_costs,
    loss_table,
    rerank,
    select_feasible,
)
from nas_bert.nas.contenders import with_contenders
from nas_bert.nas.latency import LatencyTable, candidate_latency, default_table_path, load_or_measure
from nas_bert.nas.ranking import block_ranking, scored_candidates, top_spread
from nas_bert.nas.shrinking import read_alive
from nas_bert.reports.ranking import log_ranking, print_ranking, write_ranking
from nas_bert.reports.search import (
    COLUMNS,
    BudgetResult,
    architecture_file,
    contender_notes,
    log_results,
    pareto_plot,
    print_selected,
    rows,
    sample_cloud,
)
from nas_bert.space import SearchSpace
from nas_bert.stages.common import build, build_trainer, finish_loggers, start_run
from nas_bert.utils import wide_console
from nas_bert.utils.batch import first_batches

log = logging.getLogger(__name__)
SHRINKING_STATE = "shrinking.json"


class SearchBudgetError(ValueError):
    """Some budgets were met by no architecture (the others were written)."""


def block_progress(start: dict[str, float], end: dict[str, float]) -> list[dict[str, float]]:
    """Per-block val MSE before and after training, from two validation results."""
    return [{"metric": key, "start": start.get(key, float("nan")), "end": end[key]}
            for key in sorted(k for k in end if k.startswith("val/block"))]


def print_progress(rows: list[dict[str, float]]) -> None:
    table = Table(title="Supernet: validation MSE on the reference path")
    for col in ("metric", "step 0", "end", "end / step 0"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["metric"], f"{r['start']:.4f}", f"{r['end']:.4f}", f"{r['end'] / r['start']:.3f}")
    wide_console().print(table)


def latency_table_for(cfg: DictConfig, space: SearchSpace, vocab: VocabSpec) -> LatencyTable:
    """Load the cached table for this space and device, or measure it (once per device)."""
    lat = cfg.search.latency
    device = lat.device
    if device == "auto":
        device = "cuda" if cfg.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"
    path = default_table_path(lat.dir, space, device, lat.batch_size, lat.seq_len)
    table = load_or_measure(path, space, device, lat.batch_size, lat.seq_len, vocab.vocab_size, vocab.max_positions,
                            lat.min_run_time, remeasure=lat.remeasure)
    log.info("latency table: %s", path)
    return table


def vocab_of(model) -> VocabSpec:
    config = model.teacher.config
    return VocabSpec(config.vocab_size, getattr(config, "max_position_embeddings", 512),
                     getattr(config, "type_vocab_size", 2))


def load_supernet(model, run_dir: Path) -> Path:
    """Load the supernet weights of a finished search run into `model` (same space required)."""
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"no supernet checkpoint at {ckpt_path}; search.select_from must be a search run dir")
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.on_load_checkpoint(ckpt)  # the same space and teacher-width checks as a resume
    model.load_state_dict(ckpt["state_dict"])
    return ckpt_path


def train_supernet(cfg: DictConfig, model, datamodule, table: LatencyTable, output_dir: Path):
    """Supernet training with progressive shrinking; returns the trainer."""
    shrinking = build(cfg.search.shrinking, candidate_latency=candidate_latency(model.space, table),
                      state_file=str(output_dir / SHRINKING_STATE))
    trainer = build_trainer(cfg, [shrinking])
    start = {}
    if cfg.get("validate_before_training") and not cfg.get("ckpt_path"):
        start = trainer.validate(model, datamodule=datamodule)[0]
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    end = trainer.validate(model, datamodule=datamodule)[0]
    if trainer.is_global_zero and start:
        print_progress(block_progress(start, end))
    return trainer


def scoring_states(cfg: DictConfig, model, datamodule) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """The teacher's states and masks of the dev batches every candidate and model is scored on: the
    `search.selection.loss_batches` after those shrinking scores with."""
    sel, shrink = cfg.search.selection, cfg.search.shrinking
    datamodule.setup("validate")
    skip = shrink.eval_batches * (shrink.eval_batch_size or datamodule.eval_batch_size)  # not used for shrinking
    return model.reference_states(first_batches(datamodule.val_dataset, sel.batch_size, sel.loss_batches,
                                                offset=skip))


def select_architectures(cfg: DictConfig, model, datamodule, table: LatencyTable, run_dir: Path,
                         output_dir: Path, loggers) -> list[BudgetResult]:
    """Loss table, multi-budget selection, re-ranking; writes architectures/<budget>.yaml."""
    sel, space = cfg.search.selection, model.space
    alive = read_alive(run_dir / SHRINKING_STATE)
    states, masks = scoring_states(cfg, model, datamodule)
    ranking = cfg.search.get("ranking") or {}
    scored = scored_candidates(space, alive, int(ranking.get("probes_per_block") or 0), cfg.seed)
    scored_losses = loss_table(model, scored, states, masks)  # the survivors' and the probes', each scored once
    rankings = [block_ranking(space, n, scored[n], loss) for n, loss in enumerate(scored_losses)]
    losses = [loss[np.searchsorted(index, np.asarray(a))] for index, loss, a in zip(scored, scored_losses, alive)]
    vocab = vocab_of(model)
    blocks = block_tables(space, alive, losses, table, sel.flops_seq_len)
    coupling = coupling_costs(space, table, vocab, sel.flops_seq_len)
    teacher_params = model.teacher.num_parameters()
    budgets = budgets_from_config(sel.budgets, teacher_params)
    selections, errors = select_feasible(blocks, coupling, budgets, k=sel.top_t)
    results = [BudgetResult(b, rerank(model, space, selections[b.name], states, masks),
                            selections[b.name].num_feasible) for b in budgets if b.name in selections]
    # the uniform BERTs and the other budgets' picks join every budget they meet, also one no searched model met
    found = {r.budget.name: r for r in results}
    contended = with_contenders(model, space, {b: found[b.name].ranked if b.name in found else [] for b in budgets},
                                table, vocab, sel.flops_seq_len, states, masks)
    results = [BudgetResult(b, contended[b], found[b.name].num_feasible if b.name in found else 0)
               for b in budgets if contended[b]]
    errors = [e for e in errors if not contended[e.budget]]

    own = {r.budget.name: [m for m in r.ranked if m.origin == "search"] for r in results}  # the top-T alone
    spreads = [top_spread(r.budget.name, [m.approx_loss for m in own[r.budget.name]],
                          [m.model_loss for m in own[r.budget.name]], r.best.approx_rank)
               for r in results if own[r.budget.name]]
    write_ranking(rankings, spreads, output_dir / "ranking.md", contender_notes(results))
    print_ranking(rankings)
    log_ranking(loggers, rankings, spreads)
    arch_dir = output_dir / "architectures"
    written = [architecture_file(r, space, model.teacher.name_or_path, arch_dir) for r in results]
    with open(output_dir / "candidates.csv", "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, *rows(results)])
    if results:
        plot = pareto_plot(results, output_dir / "pareto.png", sample_cloud(blocks, coupling, seed=cfg.seed))
        print_selected(results)
        log_results(loggers, results, plot)
    for path in written:
        log.info("architecture: %s", path)
    if errors:
        raise SearchBudgetError("\n".join(str(e) for e in errors)
                                + f"\n(the other budgets were written: {[str(p) for p in written]})")
    return results


def link_latest(output_dir: Path, link: Path) -> None:
    """`link` (`latest_link`, e.g. outputs/search/latest) -> this run: the next stage finds it without a date."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(output_dir.resolve(), target_is_directory=True)
    tmp.replace(link)  # atomic


def supernet_cache_spec(cfg: DictConfig, datamodule) -> dict | None:
    """`search.teacher_cache`: the teacher's states of the training sequences kept on disk (float16), so that
    epochs after the first skip the teacher's forward; None when `dir` is null."""
    cache = cfg.search.get("teacher_cache")
    if not cache or not cache.get("dir"):
        return None
    from transformers import AutoConfig

    from nas_bert.distill.state_cache import cache_spec
    from nas_bert.teacher import resolve_model_path

    datamodule.prepare_data()
    datamodule.setup("fit")
    teacher = AutoConfig.from_pretrained(resolve_model_path(cfg.teacher.name_or_path))
    return cache_spec(cache.dir, cache.max_gib, cfg.teacher.name_or_path, teacher.num_hidden_layers,
                      teacher.hidden_size, cfg.data.max_seq_length, len(datamodule.train_dataset))


def init_supernet(cfg: DictConfig, model, datamodule, output_dir: Path) -> None:
    """`search.init=extract`: every MHA / FFN op of every (slot, width) from the teacher layer its slot maps to, the
    width projections as selection matrices (`nas_bert.extract.extract_supernet`; sepconv ops stay fresh), with
    the teacher's units chosen by `search.extract.selection`; written to `<run>/supernet_init.json`. `fresh`: as
    built (the paper). A resumed run then loads its checkpoint's weights over these."""
    init = cfg.search.get("init") or "fresh"
    if init not in ("fresh", "extract"):
        raise ValueError(f"search.init must be fresh or extract, got {init!r}")
    if init == "fresh":
        return
    from nas_bert.distill.masking import TokenMasker
    from nas_bert.extract import extract_supernet
    from nas_bert.extract.importance import teacher_selection

    e = cfg.search.extract
    datamodule.setup("fit")
    masker = TokenMasker.for_tokenizer(datamodule.tokenizer, float(e.mlm_probability), seed=cfg.seed)
    selection = teacher_selection(model.teacher.model, datamodule.train_dataset, masker, model.space.head_dim,
                                  e.selection, int(e.batches), int(e.batch_size),
                                  cfg.seed if e.get("seed") is None else int(e.seed), setting="search.extract")
    report = extract_supernet(model.supernet, model.teacher.model, selection)
    (output_dir / "supernet_init.json").write_text(json.dumps(report, indent=2))
    log.info("supernet ops extracted from the teacher: %s", report)


def run_search(cfg: DictConfig) -> dict[str, float]:
    """The whole search stage; returns the final validation metrics and the selected models' losses."""
    output_dir = Path(cfg.paths.output_dir)
    start_run(cfg)
    datamodule = build(cfg.data)
    model = build(cfg.model, teacher_cache=supernet_cache_spec(cfg, datamodule))
    table = latency_table_for(cfg, model.space, vocab_of(model))
    table.save(output_dir / "latency_table.json")  # the table this run used, beside its outputs

    select_from = cfg.search.get("select_from")
    if select_from:
        run_dir = Path(select_from)
        load_supernet(model, run_dir)
        trainer, metrics = build_trainer(cfg), {}
    else:
        run_dir = output_dir
        init_supernet(cfg, model, datamodule, output_dir)
        trainer = train_supernet(cfg, model, datamodule, table, output_dir)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    try:
        if trainer.is_global_zero:
            results = select_architectures(cfg, model, datamodule, table, run_dir, output_dir, trainer.loggers)
            metrics.update({f"search/{r.budget.name}/model_loss": r.best.model_loss for r in results})
            if results and cfg.get("latest_link"):  # only a run that wrote every architecture becomes `latest`
                link_latest(output_dir, Path(cfg.latest_link))
    finally:
        finish_loggers(trainer)
    return metrics
