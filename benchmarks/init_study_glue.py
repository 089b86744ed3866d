"""GLUE at 1M tokens for the init study (issue 23): every (student, init, seed) of `benchmarks/init_study.py`
pre-trained for the CPU study's 1M tokens with its recipe, then fine-tuned with the CPU study's task-KD recipe
(conf/pipeline/cpu_study.yaml: the teacher fine-tuned once per task, every student distilled from it) on STS-B,
SST-2 (capped at 8000 as in the study), MRPC and CoLA. The fine-tuning seed is the pre-training seed, so the spread
over seeds holds both. The steps are the pipeline's own (`nas_bert.pipeline`), in process, two side by side.

One CSV row per (student, init, seed, task), written as each seed finishes; finished steps (their outputs under
`--work`) and rows are skipped, so the study resumes across sittings (commit the CSV between them).

    NAS_BERT_GUTENBERG_DIR=../shared/data/corpus/gutenberg GLUE_DIR=../shared/data/glue \\
        python benchmarks/init_study_glue.py --out docs/results/init_study_glue.csv --work outputs/init_study_glue
    python benchmarks/init_study_glue.py --smoke --out /tmp/glue.csv --work /tmp/glue   # debug sizes, bundled data
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
from datetime import date
from functools import partial
from pathlib import Path

from init_study import INITS, STUDENTS, append_rows, run_one, val_rows

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))  # conf/paths, as the entry points set it

from nas_bert import register_resolvers  # noqa: E402
from nas_bert.pipeline.run import run_step, unfinished  # noqa: E402
from nas_bert.pipeline.step_pool import run_side_by_side  # noqa: E402
from nas_bert.pipeline.steps import Model, Step, composed, finetune_step, teacher_model  # noqa: E402
from nas_bert.reports.finetune_summary import loyalty, task_score  # noqa: E402

TASKS = ("stsb", "sst2", "mrpc", "cola")
TOKENS = 1_000_000
register_resolvers()  # ${package_dir:...} in conf/, here and in the spawned workers (they import this module)
COLUMNS = ("student", "init", "seed", "task", "score", "loyalty", "pretrain_val_loss", "params", "machine", "date")


def fine_tuning_steps(work: Path, pretrained: dict[tuple[str, str], Path], seed: int,
                      smoke: bool) -> tuple[list[Step], dict[tuple[str, str, str], Step]]:
    """(the teacher's step per task, every student's step per (student, init, task)) of one seed, built by the
    pipeline from the CPU study's settings."""
    with composed(ROOT, "search", ["+pipeline=cpu_study", f"paths.output_dir={work}"]) as cfg:
        p = cfg.pipeline
        if smoke:  # the debug sizes and the bundled GLUE samples, as a pipeline under debug=fast
            p.common, p.finetune, p.task_overrides, p.glue = ["debug=fast"], [], {}, []
        teacher = teacher_model(cfg)
        teachers = {task: finetune_step(cfg, work, teacher, task, p.teacher_seed, None) for task in TASKS}
        students = {}
        for (student, init), path in pretrained.items():
            model = Model(f"{student}.{init}.s{seed}", "searched", None, str(path))
            for task in TASKS:
                students[student, init, task] = finetune_step(cfg, work, model, task, seed,
                                                              teachers[task].output.parent / "model")
    return list(teachers.values()), students


def run_seed(seed: int, args: argparse.Namespace) -> list[dict]:
    """Pre-train the seed's students (one at a time), fine-tune the teacher and them; the seed's CSV rows."""
    pretrained, val_loss = {}, {}
    for student in STUDENTS:
        for init in INITS:
            run = args.work / "pretrain" / f"{student}_{init}_s{seed}"
            if not (run / "model" / "config.json").is_file():
                run_one(student, init, seed, TOKENS, args.work / "pretrain", args.smoke)
            pretrained[student, init] = run / "model"
            val_loss[student, init] = val_rows(run)[-1]["val/loss"]
    teachers, students = fine_tuning_steps(args.work, pretrained, seed, args.smoke)
    run = partial(run_step, root=ROOT, log_dir=args.work / "logs", in_process=True)
    run_side_by_side(unfinished(teachers), run, args.workers)
    first_init = next(iter(INITS))
    firsts = [students[next(iter(STUDENTS)), first_init, task] for task in TASKS]
    run_side_by_side(unfinished(firsts), run, args.workers)  # each saves its task's teacher logits for the others
    run_side_by_side(unfinished([s for s in students.values() if s not in firsts]), run, args.workers)
    rows = []
    for (student, init, task), step in students.items():
        result = json.loads(step.output.read_text())
        rows.append({"student": student, "init": init, "seed": seed, "task": task, "score": task_score(result),
                     "loyalty": loyalty(result), "pretrain_val_loss": val_loss[student, init],
                     "params": result.get("params", ""), "machine": f"{platform.node()} ({os.cpu_count()} cores)",
                     "date": date.today().isoformat()})
    return rows


def report(out: Path) -> str:
    """Markdown: per (student, init) the mean +- std over seeds of each task and of the 4-task average, and the
    average's lead over `teacher_embeddings` (the issue's goal: >= 2 points)."""
    import statistics

    rows = list(csv.DictReader(out.open()))
    lines = [f"| student | init | seeds | pre-training loss | {' | '.join(TASKS)} | average | vs teacher_embeddings |",
             "|---|---|---:|" + "---:|" * (len(TASKS) + 3)]
    for student in STUDENTS:
        averages = {}
        for init in INITS:
            mine = [r for r in rows if r["student"] == student and r["init"] == init]
            seeds = sorted({int(r["seed"]) for r in mine if all(
                any(q["task"] == t and q["seed"] == r["seed"] for q in mine) for t in TASKS)})
            if not seeds:
                continue
            score = {(int(r["seed"]), r["task"]): float(r["score"]) for r in mine}
            loss = {int(r["seed"]): float(r["pretrain_val_loss"]) for r in mine}
            averages[init] = [sum(score[s, t] for t in TASKS) / len(TASKS) for s in seeds]

            def cell(values: list[float], digits: int = 1) -> str:
                mean = f"{statistics.mean(values):.{digits}f}"
                return f"{mean} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else mean

            lead = ""
            if "teacher_embeddings" in averages and init != "teacher_embeddings":
                lead = f"{statistics.mean(averages[init]) - statistics.mean(averages['teacher_embeddings']):+.1f}"
            lines.append(f"| {student} | {init} | {len(seeds)} | {cell([loss[s] for s in seeds], 3)} | "
                         + " | ".join(cell([score[s, t] for s in seeds]) for t in TASKS)
                         + f" | {cell(averages[init])} | {lead} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "init_study_glue")
    parser.add_argument("--workers", type=int, default=2, help="fine-tunings side by side (the CPU study's 2)")
    parser.add_argument("--smoke", action="store_true", help="debug sizes on the bundled corpus and GLUE samples")
    parser.add_argument("--report", action="store_true", help="only print the CSV's table (markdown)")
    args = parser.parse_args()
    if args.report:
        print(report(args.out))
        return
    args.work = args.work.resolve()
    finished = {int(r["seed"]) for r in csv.DictReader(args.out.open())} if args.out.is_file() else set()
    for seed in args.seeds:
        if seed in finished:
            continue
        rows = run_seed(seed, args)
        append_rows(args.out, COLUMNS, rows)
        for row in rows:
            print(row["student"], row["init"], seed, row["task"], round(row["score"], 2), flush=True)


if __name__ == "__main__":
    main()
