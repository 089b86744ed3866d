"""Ranking fidelity (issue 24): does a search run's supernet rank architectures as training them does?

From a finished search run (`--search`), `--archs` architectures spread over the CPU study's budgets: the uniform
BERTs of `UNIFORM` that its space expresses, each budget's pick, and random combinations of the blocks' survivors
of 2-6M parameters. Each is scored in the supernet (the summed block loss the selection ranks by, and the whole-model
loss it re-ranks by, on the search's own scoring batches), pre-trained stand-alone with the CPU study's recipe and
tokens (conf/pipeline/cpu_study.yaml), and fine-tuned with its task-KD recipe on STS-B and SST-2 (seed 0). The
report: Kendall tau between every pair of the four measures (each as higher-is-better), a CSV and a scatter plot.
The choice of architectures is saved (`<work>/archs/`), every step is skipped once its output exists, and the CSV
is rebuilt from the outputs: run it again to continue.

    NAS_BERT_GUTENBERG_DIR=../shared/data/corpus/gutenberg GLUE_DIR=../shared/data/glue python benchmarks/ranking.py \\
        --search outputs/search/latest --out docs/results/ranking.csv --plot docs/results/ranking.png
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from datetime import date
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # conf/paths, as the entry points set it

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nas_bert import register_resolvers  # noqa: E402
from nas_bert.arch import IDENTITY, Arch, BlockArch  # noqa: E402
from nas_bert.pipeline.run import run_step, unfinished  # noqa: E402
from nas_bert.pipeline.step_pool import run_side_by_side  # noqa: E402
from nas_bert.pipeline.steps import Model, composed, finetune_step, pretrain_step, teacher_model  # noqa: E402
from nas_bert.reports.finetune_summary import task_score  # noqa: E402

register_resolvers()  # ${package_dir:...} in conf/, here and in the spawned workers (they import this module)
UNIFORM = ((3, 64), (6, 64), (3, 96), (6, 96), (4, 128), (6, 128))  # (layers, width): 2.2M to 5.2M parameters
TASKS = ("stsb", "sst2")
MEASURES = ("approx_loss", "model_loss", "pretrain_val_loss", "glue")  # glue: the mean of TASKS
PARAM_RANGE = (2.0e6, 6.0e6)  # the random architectures: around the study's budgets (1/7 and 1/4 of 22.7M)


def choose_architectures(search: Path, count: int, seed: int, vocab: int, positions: int) -> dict[str, Arch]:
    """name -> architecture: `UNIFORM` where the space holds it, each budget's pick, random survivors' paths."""
    from nas_bert.encoder import encoder_params
    from nas_bert.modeling.students import uniform_arch
    from nas_bert.nas.shrinking import read_alive
    from nas_bert.space import SearchSpace

    space = SearchSpace.from_dict(json.loads((search / "latency_table.json").read_text())["space"])
    chosen: dict[str, Arch] = {}
    for layers, width in UNIFORM:
        arch = uniform_arch(layers, width, space.num_blocks)
        if width in space.hidden_sizes and all(b.depth <= space.slots_per_block for b in arch.blocks):
            chosen[f"bert-L{layers}-H{width}"] = Arch(blocks=tuple(
                BlockArch(b.hidden, b.ops + (IDENTITY,) * (space.slots_per_block - b.depth)) for b in arch.blocks))
    for file in sorted((search / "architectures").glob("*.yaml")):  # two budgets with one pick: one model
        arch = Arch.load(file)
        if all(arch.blocks != other.blocks for other in chosen.values()):
            chosen[f"nas-bert-{file.stem}"] = arch
    alive = read_alive(search / "shrinking.json")
    rng = np.random.default_rng(seed)
    for _ in range(100_000):
        if len(chosen) >= count:
            break
        arch = space.sample(rng, alive)
        fits = PARAM_RANGE[0] <= encoder_params(arch, vocab, positions, ffn_ratio=space.ffn_ratio) <= PARAM_RANGE[1]
        if fits and all(arch.blocks != other.blocks for other in chosen.values()):
            chosen[f"random-{len(chosen)}"] = arch
    else:
        print(f"only {len(chosen)} architectures: the survivors hold too few paths of {PARAM_RANGE} parameters")
    return chosen


def given_architectures(search: Path, files: list[Path]) -> dict[str, Arch]:
    """name (the file's stem) -> architecture, each checked against the search's space before anything runs (the
    error names the file and its first bad block and slot)."""
    from nas_bert.arch import ArchitectureError
    from nas_bert.space import SearchSpace

    space = SearchSpace.from_dict(json.loads((search / "latency_table.json").read_text())["space"])
    chosen = {}
    for file in files:
        try:
            chosen[file.stem] = space.validate(Arch.load(file))
        except ArchitectureError as err:
            where = "" if str(file) in str(err) else f"{file}: "
            raise SystemExit(f"{where}{err}; rank architectures of the space {space.name!r} the search ran") from err
    return chosen


def supernet_scores(search: Path, work: Path, archs: dict[str, Arch]) -> dict[str, dict[str, float]]:
    """name -> the supernet's approximate (summed block) and whole-model loss, on the search's scoring batches."""
    from hydra import compose, initialize_config_dir

    from nas_bert.stages.common import build
    from nas_bert.stages.search import load_supernet, scoring_states
    from nas_bert.utils.modes import eval_mode

    with initialize_config_dir(config_dir=str(search.resolve()), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.output_dir={work / 'scoring'}"])
    model, datamodule = build(cfg.model), build(cfg.data)
    load_supernet(model, search)
    states, masks = scoring_states(cfg, model, datamodule)
    with eval_mode(model), torch.no_grad():
        return {name: {"approx_loss": sum(model.score_block(n, b, states, masks) for n, b in enumerate(a.blocks)),
                       "model_loss": model.score_model(a, states, masks)} for name, a in archs.items()}


def last_val_loss(run: Path) -> float:
    rows = [r for r in csv.DictReader((run / "csv" / "metrics.csv").open()) if r.get("val/loss")]
    return float(rows[-1]["val/loss"])


def kendall(x: list[float], y: list[float]) -> float:
    from torchmetrics.functional import kendall_rank_corrcoef

    return float(kendall_rank_corrcoef(torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)))


def agreement(rows: list[dict]) -> dict[tuple[str, str], float]:
    """Kendall tau of every pair of measures, each made higher-is-better (losses negated)."""
    value = {m: [(-1 if m.endswith("loss") else 1) * float(r[m]) for r in rows] for m in MEASURES}
    return {(a, b): kendall(value[a], value[b]) for i, a in enumerate(MEASURES) for b in MEASURES[i + 1:]}


def plot(rows: list[dict], figure: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 3.6))
    FigureCanvasAgg(fig)
    taus = agreement(rows)
    pairs = (("model_loss", "glue"), ("pretrain_val_loss", "glue"), ("model_loss", "pretrain_val_loss"))
    for ax, (x, y) in zip(fig.subplots(1, 3), pairs):
        for r in rows:
            kind = r["name"].split("-")[0]
            ax.scatter(float(r[x]), float(r[y]), color={"bert": "C0", "nas": "C3", "random": "C2"}[kind], s=18)
            ax.annotate(r["name"].replace("nas-bert-", ""), (float(r[x]), float(r[y])), fontsize=6)
        ax.set(xlabel=x, ylabel=y, title=f"Kendall tau {taus[(x, y)]:+.2f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--search", type=Path, required=True, help="a finished search run (its folder)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--archs", type=int, default=12)
    parser.add_argument("--arch-files", type=Path, nargs="+", default=None,
                        help="rank these architecture files instead (each must lie in the search's space)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "ranking")
    parser.add_argument("--workers", type=int, default=2, help="fine-tunings side by side (the CPU study's 2)")
    parser.add_argument("--smoke", action="store_true", help="debug sizes and the bundled corpus and GLUE samples")
    args = parser.parse_args()
    search, work = args.search.resolve(), args.work.resolve()
    start = time.perf_counter()
    with composed(ROOT, "search", ["+pipeline=cpu_study", f"paths.output_dir={work}"]) as cfg:
        p = cfg.pipeline
        if args.smoke:  # as a pipeline under debug=fast: debug sizes, the bundled corpus and GLUE samples
            p.common, p.pretrain, p.finetune, p.corpus, p.task_overrides, p.glue, p.tokens = (
                ["debug=fast"], [], [], [], {}, [], None)
        from transformers import AutoConfig

        from nas_bert.encoder import encoder_params
        from nas_bert.teacher import resolve_model_path

        teacher = AutoConfig.from_pretrained(resolve_model_path(cfg.teacher.name_or_path))
        ffn_ratio = int(cfg.space.ffn_ratio)
        arch_dir = work / "archs"
        if not arch_dir.is_dir():  # chosen once: a resumed run keeps its architectures
            chosen = (given_architectures(search, args.arch_files) if args.arch_files else
                      choose_architectures(search, args.archs, args.seed, teacher.vocab_size, 512))
            arch_dir.mkdir(parents=True)
            for name, arch in chosen.items():
                arch.save(arch_dir / f"{name}.yaml")
        archs = {f.stem: Arch.load(f) for f in sorted(arch_dir.glob("*.yaml"))}
        models = {name: Model(name, "ranked", None, str(work / "pretrain" / name / "model"), arch,
                              arch_file=str(arch_dir / f"{name}.yaml")) for name, arch in archs.items()}
        pretrains = [pretrain_step(cfg, work, m) for m in models.values()]
        teachers = {t: finetune_step(cfg, work, teacher_model(cfg), t, p.teacher_seed, None) for t in TASKS}
        tuned = {(name, t): finetune_step(cfg, work, m, t, 0, teachers[t].output.parent / "model")
                 for name, m in models.items() for t in TASKS}
    scores_file = work / "supernet_scores.json"
    if not scores_file.is_file():
        scores_file.write_text(json.dumps(supernet_scores(search, work, archs), indent=2))
    scores = json.loads(scores_file.read_text())
    run = partial(run_step, root=ROOT, log_dir=work / "logs", in_process=True)
    for step in pretrains:
        run(step)
    run_side_by_side(unfinished(list(teachers.values())), run, args.workers)
    firsts = [tuned[next(iter(models)), t] for t in TASKS]
    run_side_by_side(unfinished(firsts), run, args.workers)  # each saves its task's teacher logits for the others
    run_side_by_side(unfinished([s for s in tuned.values() if s not in firsts]), run, args.workers)

    rows = []
    for name, model in models.items():
        task = {t: task_score(json.loads(tuned[name, t].output.read_text())) for t in TASKS}
        rows.append({"name": name, "params": encoder_params(model.arch, teacher.vocab_size, 512, ffn_ratio=ffn_ratio),
                     **scores[name], "pretrain_val_loss": last_val_loss(work / "pretrain" / name), **task,
                     "glue": sum(task.values()) / len(task), "arch": " | ".join(
                         f"{b.hidden}: {' '.join(op for op in b.ops if op != IDENTITY)}" for b in model.arch.blocks),
                     "machine": f"{platform.node()} ({os.cpu_count()} cores)", "date": date.today().isoformat()})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for (a, b), tau in agreement(rows).items():
        print(f"Kendall tau({a}, {b}) = {tau:+.3f}")
    if args.plot:
        plot(rows, args.plot)
    print(f"{len(rows)} architectures; this sitting took {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
