"""What the search hands on: one architecture file per budget, a console table, a picture of what it explored
(the cloud of combinations, its frontier, the top-T and the selected model per budget) and W&B tables."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.loggers import Logger, WandbLogger
from matplotlib.figure import Figure
from rich.table import Table

from nas_bert.arch import Arch
from nas_bert.nas.approximation import Ranked
from nas_bert.nas.selection import BlockTable, Budget, CouplingCosts
from nas_bert.space import SearchSpace
from nas_bert.utils import wide_console

COLUMNS = ["budget", "selected", "approx_rank", "params_M", "gflops", "latency_ms", "approx_loss", "model_loss",
           "origin", "layers"]


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
        "origin": best.origin,
        "num_feasible": result.num_feasible, "teacher": teacher, "space": space.to_dict(),
    }
    return Arch(blocks=best.arch.blocks, embed=best.arch.embed, meta=meta).save(out_dir / f"{budget.name}.yaml")


def rows(results: list[BudgetResult]) -> list[list[Any]]:
    """One row per model of every budget's top-T, in COLUMNS order."""
    out = []
    for result in results:
        for i, m in enumerate(result.ranked):
            out.append([result.budget.name, i == 0, m.approx_rank, m.params / 1e6, m.flops / 1e9, m.latency * 1e3,
                        m.approx_loss, m.model_loss, m.origin, " ".join(m.arch.layers)])
    return out


def print_selected(results: list[BudgetResult]) -> None:
    table = Table(title="NAS-BERT: selected architecture per budget")
    for col in ("budget", "params", "GFLOPs/seq", "pred. latency", "approx loss", "model loss", "feasible", "from",
                "blocks (width: ops)"):
        table.add_column(col)
    for r in results:
        b = r.best
        blocks = " | ".join(f"{blk.hidden}: {' '.join(op for op in blk.ops if op != 'identity')}"
                            for blk in b.arch.blocks)
        table.add_row(r.budget.name, f"{b.params / 1e6:.2f}M", f"{b.flops / 1e9:.2f}", f"{b.latency * 1e3:.2f} ms",
                      f"{b.approx_loss:.4f}", f"{b.model_loss:.4f}", f"{r.num_feasible:,}", b.origin, blocks)
    wide_console().print(table)
    for note in contender_notes(results):
        wide_console().print(note)


def contender_notes(results: list[BudgetResult]) -> list[str]:
    """A sentence per budget whose pick is not the search's own: a uniform BERT, or another budget's pick, beat
    every model of its top-T by whole-model loss (`nas_bert.nas.contenders`)."""
    notes = []
    for r in results:
        own = next((m for m in r.ranked if m.origin == "search"), None)
        if own is None:
            notes.append(f"budget {r.budget.name}: no searched model meets it, only {r.best.origin} among the "
                         f"contenders; it is the pick")
        elif r.best.origin != "search":
            notes.append(f"budget {r.budget.name}: {r.best.origin} (whole-model loss {r.best.model_loss:.4f}) beats "
                         f"the search's best of this budget ({own.model_loss:.4f}) and is its pick")
    return notes


@dataclass
class Cloud:
    """Whole-model costs and approximate losses of combinations of the blocks' survivors; each field (N,)."""

    params: np.ndarray
    latency: np.ndarray  # seconds
    loss: np.ndarray


def sample_cloud(blocks: list[BlockTable], coupling: CouplingCosts, n: int = 20_000, seed: int = 0) -> Cloud:
    """Every combination of the survivors when there are at most `n`, else `n` drawn uniformly: what the
    selection chose from, costed like a whole model (embeddings at block 0's width, projections between widths)."""
    sizes = [len(b) for b in blocks]
    if math.prod(sizes) <= n:
        choice = np.array(list(np.ndindex(*sizes)), dtype=np.int64).reshape(-1, len(sizes))  # (N, B)
    else:
        rng = np.random.default_rng(seed)
        choice = np.stack([rng.integers(0, size, n) for size in sizes], axis=1)  # (N, B)
    widths = [b.width[choice[:, i]] for i, b in enumerate(blocks)]
    params = coupling.first_params[widths[0]].astype(np.float64)
    latency = coupling.first_latency[widths[0]].copy()
    loss = np.zeros(len(choice))
    for i, block in enumerate(blocks):
        params += block.params[choice[:, i]]
        latency += block.latency[choice[:, i]]
        loss += block.loss[choice[:, i]]
        if i:
            params += coupling.params[widths[i - 1], widths[i]]
            latency += coupling.latency[widths[i - 1], widths[i]]
    return Cloud(params, latency, loss)


def frontier(cost: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lower envelope: for each cost, the least loss of any point at most that cost (sorted by cost)."""
    order = np.argsort(cost, kind="stable")
    best = np.minimum.accumulate(loss[order])
    keep = np.r_[True, best[1:] < best[:-1]]
    return cost[order][keep], best[keep]


def pareto_plot(results: list[BudgetResult], path: Path, cloud: Cloud | None = None) -> Path:
    """Params and latency against approximate loss: the cloud of combinations, its frontier, each budget's limit,
    top-T and selected model; a third panel sets the top-T's whole-model losses beside their approximate ones."""
    fig = Figure(figsize=(15, 4.4))  # no pyplot: nothing global (backend, open figures) changes
    axes = fig.subplots(1, 3)
    colors = [f"C{i}" for i in range(len(results))]
    for ax, (key, label, scale) in zip(axes, [("params", "parameters (M)", 1e-6),
                                             ("latency", "predicted latency (ms)", 1e3)]):
        xs_all, ys_all = [], []
        if cloud is not None:
            x = getattr(cloud, key) * scale
            ax.scatter(x, cloud.loss, s=3, color="0.75", alpha=0.4, rasterized=True,
                       label=f"{len(x):,} combinations of the survivors")
            xs_all.append(x), ys_all.append(cloud.loss)
        for r, color in zip(results, colors):
            xs = np.array([getattr(m, key) for m in r.ranked]) * scale
            ys = np.array([m.approx_loss for m in r.ranked])
            ax.scatter(xs, ys, s=10, alpha=0.7, color=color, label=f"{r.budget.name} top-{len(r.ranked)}")
            ax.scatter([getattr(r.best, key) * scale], [r.best.approx_loss], s=120, marker="*", color=color,
                       edgecolors="black", zorder=3)
            limit = r.budget.max_params if key == "params" else r.budget.max_latency
            if limit is not None:
                ax.axvline(limit * scale, color=color, linestyle="--", linewidth=1)
            xs_all.append(xs), ys_all.append(ys)
        fx, fy = frontier(np.concatenate(xs_all), np.concatenate(ys_all))
        ax.step(fx, fy, where="post", color="black", linewidth=1, label="frontier (approximate loss)")
        ax.set_xlabel(label)
        ax.set_ylabel("approximate loss (sum of block losses)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[2]
    for r, color in zip(results, colors):
        ax.scatter([m.approx_loss for m in r.ranked], [m.model_loss for m in r.ranked], s=10, alpha=0.7,
                   color=color, label=r.budget.name)
        ax.scatter([r.best.approx_loss], [r.best.model_loss], s=120, marker="*", color=color, edgecolors="black",
                   zorder=3)
    ax.set_xlabel("approximate loss (sum of block losses)")
    ax.set_ylabel("whole-model loss (re-ranking)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("What the search explored (dashed: budget limits; stars: selected after whole-model re-ranking)")
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
