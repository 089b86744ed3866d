"""The ranking diagnostics of a search run (`nas_bert.nas.ranking`) as `<run>/ranking.md`, a console summary, log
warnings and W&B scalars and tables."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

from lightning.pytorch.loggers import Logger, WandbLogger
from rich.table import Table

from nas_bert.nas.ranking import DEPTH_SIGNAL, BlockRanking, TopSpread
from nas_bert.utils import wide_console

log = logging.getLogger(__name__)


def number(value: float, digits: int = 4) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def warnings_of(rankings: list[BlockRanking]) -> list[str]:
    """One sentence per block that cannot tell its depths apart, or whose loss does not fall with its size."""
    out = []
    for r in rankings:
        if not r.tells_depths_apart:
            out.append(f"block {r.block} cannot tell its depths apart: within its widths, Spearman(depth, loss) "
                       f"averages {number(r.depth_signal, 2)} (a ranking supernet gives <= {DEPTH_SIGNAL}), so its "
                       f"ops are picked by chance rather than by what they can do")
        if not r.params_spearman < 0:
            out.append(f"block {r.block}: its loss does not fall with its parameters "
                       f"(Spearman {number(r.params_spearman, 2)})")
    return out


def ranking_markdown(rankings: list[BlockRanking], spreads: list[TopSpread], notes: list[str] = ()) -> str:
    """The report: per block the loss by width and by depth and the rank correlations, per budget the spread."""
    lines = ["# Ranking diagnostics", "",
             "Block losses of the scored candidates (shrinking's survivors and probes spread over every width and "
             "depth): best / mean / count per group. A supernet that ranks gives lower losses to wider and deeper "
             "blocks: Spearman(params, loss) and Spearman(depth, loss) below 0.", ""]
    warnings = [*warnings_of(rankings), *notes]
    if warnings:
        lines += ["**Warnings**", "", *[f"- {w}" for w in warnings], ""]
    for r in rankings:
        lines += [f"## Block {r.block}", "",
                  f"Spearman(params, loss) = {number(r.params_spearman, 3)}; mean within-width Spearman(depth, loss) "
                  f"= {number(r.depth_signal, 3)}", "",
                  "| width | candidates | best | mean | Spearman(depth, loss) |", "|---:|---:|---:|---:|---:|"]
        lines += [f"| {w} | {g.count} | {number(g.best)} | {number(g.mean)} | {number(r.depth_spearman[w], 3)} |"
                  for w, g in r.by_width.items()]
        lines += ["", "| depth | candidates | best | mean |", "|---:|---:|---:|---:|"]
        lines += [f"| {d} | {g.count} | {number(g.best)} | {number(g.mean)} |" for d, g in r.by_depth.items()]
        lines.append("")
    if spreads:
        lines += ["## Top-T per budget", "",
                  "| budget | models | approx. loss range | relative | whole-model loss range | "
                  "winner's approx. rank |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {s.budget} | {s.count} | {s.approx_range:.6f} | {100 * s.approx_relative:.3f}% | "
                  f"{s.model_range:.6f} | {s.reranked_first} |" for s in spreads]
    return "\n".join(lines) + "\n"


def write_ranking(rankings: list[BlockRanking], spreads: list[TopSpread], path: Path,
                  notes: list[str] = ()) -> Path:
    """`ranking.md` and, beside it, `ranking.json` (the same numbers, for scripts); the warnings (and `notes`,
    e.g. a uniform BERT beating a budget's search) also in the log."""
    path.write_text(ranking_markdown(rankings, spreads, notes))
    numbers = {"blocks": [{**asdict(r), "depth_signal": r.depth_signal, "tells_depths_apart": r.tells_depths_apart}
                          for r in rankings], "budgets": [asdict(s) for s in spreads], "notes": list(notes)}
    path.with_suffix(".json").write_text(json.dumps(numbers, indent=2, allow_nan=True))
    for warning in [*warnings_of(rankings), *notes]:
        log.warning("ranking: %s", warning)
    return path


def print_ranking(rankings: list[BlockRanking]) -> None:
    table = Table(title="Ranking: does each block's loss follow its capacity? (Spearman < 0: yes)")
    for col in ("block", "best loss by width", "Spearman(params, loss)", "Spearman(depth, loss) in widths", "depths"):
        table.add_column(col)
    for r in rankings:
        widths = " ".join(f"{w}:{number(g.best, 3)}" for w, g in r.by_width.items())
        table.add_row(str(r.block), widths, number(r.params_spearman, 2), number(r.depth_signal, 2),
                      "told apart" if r.tells_depths_apart else "[bold red]NOT told apart[/]")
    wide_console().print(table)


def log_ranking(loggers: list[Logger], rankings: list[BlockRanking], spreads: list[TopSpread]) -> None:
    """W&B: per block the two correlations as scalars, and the loss by width as a table."""
    scalars = {f"search/ranking/block{r.block}/{name}": value for r in rankings
               for name, value in (("params_spearman", r.params_spearman), ("depth_spearman", r.depth_signal))
               if not math.isnan(value)}
    scalars |= {f"search/ranking/{s.budget}/top_t_relative_spread": s.approx_relative for s in spreads}
    rows = [[r.block, w, g.count, g.best, g.mean, r.depth_spearman[w]] for r in rankings for w, g in r.by_width.items()]
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_metrics(scalars)
            logger.log_table(key="search/ranking_by_width", data=rows,
                             columns=["block", "width", "candidates", "best", "mean", "depth_spearman"])
