"""What the search hands on: one architecture file per budget, a console table, a Pareto plot and
W&B tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.figure import Figure
from rich.table import Table

from nas_bert.arch import Arch
from nas_bert.search.approximation import Ranked
from nas_bert.search.selection import Budget
from nas_bert.space import SearchSpace
from nas_bert.utils import wide_console

COLUMNS = ["budget", "selected", "approx_rank", "params_M", "gflops", "latency_ms", "approx_loss", "model_loss",
           "layers"]


@dataclass
class BudgetResult:
    """A budget, its re-ranked top-T (best first) and how many models met it."""

    budget: Budget
    ranked: list[Ranked]
    num_feasible: int

    @property
    def best(self) -> Ranked:
        return self.ranked[0]


def architecture_file(result: BudgetResult, space: SearchSpace, teacher: str, out_dir: Path) -> Path:
    """`<out_dir>/<budget>.yaml`: the chosen Arch with its costs, losses and provenance in `meta`."""
    best, budget = result.best, result.budget
    meta = {
        "budget": {"name": budget.name, "max_params": budget.max_params,
                   "max_latency_ms": None if budget.max_latency is None else budget.max_latency * 1e3},
        "params": best.params, "flops_per_sequence": best.flops, "predicted_latency_ms": best.latency * 1e3,
        "approx_loss": best.approx_loss, "model_loss": best.model_loss, "approx_rank": best.approx_rank,
        "num_feasible": result.num_feasible, "teacher": teacher, "space": space.to_dict(),
    }
    return Arch(blocks=best.arch.blocks, embed=best.arch.embed, meta=meta).save(out_dir / f"{budget.name}.yaml")


def rows(results: list[BudgetResult]) -> list[list[Any]]:
    """One row per model of every budget's top-T, in COLUMNS order."""
    out = []
    for result in results:
        for i, m in enumerate(result.ranked):
            out.append([result.budget.name, i == 0, m.approx_rank, m.params / 1e6, m.flops / 1e9, m.latency * 1e3,
                        m.approx_loss, m.model_loss, " ".join(m.arch.layers)])
    return out


def print_selected(results: list[BudgetResult]) -> None:
    table = Table(title="NAS-BERT: selected architecture per budget")
    for col in ("budget", "params", "GFLOPs/seq", "pred. latency", "approx loss", "model loss", "feasible",
                "blocks (width: ops)"):
        table.add_column(col)
    for r in results:
        b = r.best
        blocks = " | ".join(f"{blk.hidden}: {' '.join(op for op in blk.ops if op != 'identity')}"
                            for blk in b.arch.blocks)
        table.add_row(r.budget.name, f"{b.params / 1e6:.2f}M", f"{b.flops / 1e9:.2f}", f"{b.latency * 1e3:.2f} ms",
                      f"{b.approx_loss:.4f}", f"{b.model_loss:.4f}", f"{r.num_feasible:,}", blocks)
    wide_console().print(table)


def pareto_plot(results: list[BudgetResult], path: Path) -> Path:
    """Params and latency against approximate loss for every top-T model; the selected ones marked."""
    fig = Figure(figsize=(11, 4.2))  # no pyplot: nothing global (backend, open figures) changes
    axes = fig.subplots(1, 2)
    for ax, (key, label) in zip(axes, [("params", "parameters (M)"), ("latency", "predicted latency (ms)")]):
        scale = 1e-6 if key == "params" else 1e3
        for r in results:
            xs = [getattr(m, key) * scale for m in r.ranked]
            ys = [m.approx_loss for m in r.ranked]
            points = ax.scatter(xs, ys, s=10, alpha=0.5, label=f"{r.budget.name} top-{len(r.ranked)}")
            ax.scatter([getattr(r.best, key) * scale], [r.best.approx_loss], s=90, marker="*",
                       color=points.get_facecolor()[0], edgecolors="black", zorder=3)
        ax.set_xlabel(label)
        ax.set_ylabel("approximate loss (sum of block losses)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Candidates per budget (stars: selected after whole-model re-ranking)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def log_results(loggers: list[Logger], results: list[BudgetResult], plot: Path) -> None:
    """W&B: a table of every top-T model (selected ones flagged) and the Pareto plot."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key="search/candidates", columns=COLUMNS, data=rows(results))
            logger.log_image(key="search/pareto", images=[str(plot)])
