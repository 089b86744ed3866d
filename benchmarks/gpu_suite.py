"""The GPU suite: every training and latency figure of issue 14 side by side in one run, against a peer anchor.

Rows, each with tokens/s, step time, FLOPs per step (counted with `torch.utils.flop_counter` on an eager step),
model FLOP utilisation (achieved FLOP/s over the device's dense bf16 peak, stated) and peak memory:
* anchor: a Hugging Face `BertForMaskedLM` MLM training step, bert-base configuration, random weights, SDPA, bf16;
* supernet training (stage 1): a bert-base-shaped teacher (random weights), the paper's space, fp32/TF32 and bf16;
* student pre-training KD (stage 3): a 10M-class student from that teacher (the teacher's forward included),
  fp32/TF32, bf16, bf16 compiled;
* fine-tuning (stage 4): the same student with a classification head, fp32/TF32, bf16, bf16 compiled;
then the supernet step against the extracted path's step, the latency table's MAPE at batch 1 and 128 x 128,
and student vs teacher vs equal-size baseline latency. Warm-up steps (compilation included) are never timed.
Results are written after every section (suite.json, suite.md), so a later failure keeps the earlier ones; a
section that would start past `--budget-s` is skipped and says so. One file (about 420 lines) because it is
one script carried to a GPU machine and run in one prepared call.

    python benchmarks/gpu_suite.py --out results/                    # one H100/H200, about 5 minutes
    python benchmarks/gpu_suite.py --smoke --out /tmp/smoke          # the same code on CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import latency as latency_bench  # noqa: E402  (benchmarks/latency.py)
import latency_prediction  # noqa: E402
from supernet_step import make_step  # noqa: E402

from nas_bert.arch import Arch  # noqa: E402
from nas_bert.distill.masking import TokenMasker  # noqa: E402
from nas_bert.lit import GlueFineTuning, PretrainDistillation, SupernetDistillation  # noqa: E402
from nas_bert.lit.compile import compile_in_place  # noqa: E402
from nas_bert.lit.optim import fused_option, weight_decay_groups  # noqa: E402
from nas_bert.modeling import NasBertConfig, NasBertForSequenceClassification  # noqa: E402
from nas_bert.modeling.students import build_student, uniform_arch  # noqa: E402
from nas_bert.space import SearchSpace  # noqa: E402
from nas_bert.teacher import FrozenTeacher  # noqa: E402

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16, by the vendors' datasheets
GOALS = {"supernet training": 1.0, "student pre-training KD": 2.5}  # x the anchor's tokens/s
MAPE_GOAL = 10.0  # % at batch 128 x 128


@dataclass(frozen=True)
class Sizes:
    device: str
    batch: int
    seq_len: int
    steps: int  # timed steps per row (median)
    warmup: int
    space: str
    teacher: dict  # BertConfig arguments
    student: tuple[int, int]  # layers, hidden
    compile: bool
    paths: int  # supernet vs extracted
    latency_models: int
    latency_batches: tuple[int, ...]
    min_run_time: float
    rounds: int  # latency timings per entry (the least counts)
    vocab: int


FULL = Sizes("cuda", 128, 128, 10, 3, "nas_bert", {}, (4, 256), True, 4, 12, (1, 128), 0.05, 2, 30522)
SMOKE = Sizes("cpu", 2, 16, 1, 0, "tiny", dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                                               intermediate_size=32, max_position_embeddings=64, vocab_size=1000),
              (1, 16), False, 1, 2, (1, 2), 0.001, 1, 1000)


def load_space(name: str) -> SearchSpace:
    return SearchSpace.from_dict(yaml.safe_load((HERE.parent / "conf" / "space" / f"{name}.yaml").read_text()))


def random_batch(sizes: Sizes, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000 % sizes.vocab, sizes.vocab, (sizes.batch, sizes.seq_len), generator=g)  # (B, T)
    ids[:, 0], ids[:, -1] = 101, 102
    return {k: v.to(device) for k, v in {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                         "token_type_ids": torch.zeros_like(ids)}.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def optimizer_for(params: list, device: torch.device) -> torch.optim.Optimizer:
    factory = partial(torch.optim.AdamW, lr=1e-4)
    return factory(params=params, **fused_option(factory, params))


def training_step(loss_fn: Callable[[int], torch.Tensor], optimizer: torch.optim.Optimizer) -> Callable[[int], None]:
    def step(i: int) -> None:
        loss_fn(i).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def measure(step: Callable[[int], None], sizes: Sizes, device: torch.device, precision: str,
            flops: float | None = None) -> dict:
    """Median step seconds over `sizes.steps` steps after `sizes.warmup` untimed ones (compilation included), the
    FLOPs of one eager step (counted unless given) and the peak memory."""
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(sizes.warmup):
        with autocast():
            step(i)
    times = []
    for i in range(sizes.warmup, sizes.warmup + sizes.steps):
        sync(device)
        t0 = time.perf_counter()
        with autocast():
            step(i)
        sync(device)
        times.append(time.perf_counter() - t0)
    if flops is None:
        with FlopCounterMode(display=False) as counter, autocast():
            step(sizes.warmup)
        flops = counter.get_total_flops()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"step_ms": 1e3 * statistics.median(times), "flops_per_step": flops, "peak_gib": peak}


class Suite:
    """Runs the sections in order, writing suite.json / suite.md after each."""

    def __init__(self, sizes: Sizes, out: Path, budget_s: float, peak_tflops: float | None, work: Path) -> None:
        self.sizes, self.out, self.budget_s, self.work = sizes, out, budget_s, work
        self.device = torch.device(sizes.device)
        self.start = time.perf_counter()
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        self.peak = peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        self.result = {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                       "date": time.strftime("%Y-%m-%d"), "sizes": asdict(sizes), "bf16_peak_tflops": self.peak,
                       "rows": [], "sections": {}}
        self.tokens = sizes.batch * sizes.seq_len

    # -- bookkeeping -------------------------------------------------------------------------------
    def section(self, name: str, fn: Callable[[], object]) -> None:
        elapsed = time.perf_counter() - self.start
        if elapsed > self.budget_s:
            self.result["sections"][name] = {"status": f"skipped: {elapsed:.0f} s spent of a {self.budget_s:.0f} s "
                                                       f"budget"}
        else:
            t0 = time.perf_counter()
            try:
                value = fn()
                self.result["sections"][name] = {"status": "ok", "seconds": round(time.perf_counter() - t0, 1)}
                if value is not None:
                    self.result["sections"][name]["result"] = value
            except Exception as err:  # a failed section is reported, the others still run
                self.result["sections"][name] = {"status": f"failed: {type(err).__name__}: {err}",
                                                 "traceback": traceback.format_exc(limit=6)}
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.write()

    def add_row(self, stage: str, precision: str, compiled: bool, measured: dict, **extra) -> dict:
        tokens_s = self.tokens / (measured["step_ms"] / 1e3)
        achieved = measured["flops_per_step"] / (measured["step_ms"] / 1e3) / 1e12
        row = {"stage": stage, "precision": precision, "compiled": compiled, "tokens_per_s": tokens_s,
               **measured, "achieved_tflops": achieved,
               "mfu": achieved / self.peak if self.peak else None, **extra}
        self.result["rows"].append(row)
        return row

    # -- models ------------------------------------------------------------------------------------
    def teacher_dir(self) -> Path:
        """A bert-base-shaped BertForMaskedLM with random weights, saved once (FrozenTeacher loads folders)."""
        path = self.work / "teacher"
        if not path.is_dir():
            from transformers import BertConfig, BertForMaskedLM

            torch.manual_seed(0)
            BertForMaskedLM(BertConfig(**self.sizes.teacher)).save_pretrained(path)
        return path

    def student_arch(self) -> Arch:
        layers, hidden = self.sizes.student
        return uniform_arch(layers, hidden, 1)

    # -- sections ----------------------------------------------------------------------------------
    def anchor(self) -> None:
        from transformers import BertConfig, BertForMaskedLM

        torch.manual_seed(0)
        model = BertForMaskedLM(BertConfig(**self.sizes.teacher, attn_implementation="sdpa")).to(self.device).train()
        batch = random_batch(self.sizes, self.device)
        masker = TokenMasker(mask_token_id=103, vocab_size=self.sizes.vocab, special_token_ids=(0, 101, 102))
        optimizer = optimizer_for(weight_decay_groups(model), self.device)

        def loss(i: int) -> torch.Tensor:
            ids, labels = masker(batch["input_ids"], (i,))
            return model(**{**batch, "input_ids": ids}, labels=labels).loss

        self.add_row("anchor: HF BertForMaskedLM (bert-base, SDPA)", "bf16", False,
                     measure(training_step(loss, optimizer), self.sizes, self.device, "bf16"),
                     attention=model.config._attn_implementation,
                     params_m=sum(p.numel() for p in model.parameters()) / 1e6)

    def supernet(self) -> None:
        space = load_space(self.sizes.space)
        module = SupernetDistillation(space, FrozenTeacher(str(self.teacher_dir()), space.num_blocks),
                                      optimizer=torch.optim.AdamW).to(self.device).train()
        module.teacher.to(self.device)
        batch = random_batch(self.sizes, self.device)
        optimizer = optimizer_for(weight_decay_groups(module.supernet), self.device)

        def loss(i: int) -> torch.Tensor:
            return torch.stack(module.block_losses(batch, module.supernet.sample(np.random.default_rng(i)))).sum()

        for precision in ("fp32", "bf16"):
            self.add_row("supernet training", precision, False,
                         measure(training_step(loss, optimizer), self.sizes, self.device, precision),
                         params_m=sum(p.numel() for p in module.supernet.parameters()) / 1e6)

    def pretrain(self) -> None:
        from nas_bert.stages.pretrain import load_masked_lm

        torch.manual_seed(0)
        student = build_student(self.student_arch(), self.sizes.vocab, head_dim=load_space(self.sizes.space).head_dim)
        masker = TokenMasker(mask_token_id=103, vocab_size=self.sizes.vocab, special_token_ids=(0, 101, 102))
        teacher = FrozenTeacher(str(self.teacher_dir()), loader=load_masked_lm)
        module = PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="prediction",
                                      masker=masker)
        module.to(self.device).train()
        teacher.to(self.device)
        batch = random_batch(self.sizes, self.device)
        optimizer = optimizer_for(weight_decay_groups(module), self.device)

        def loss(i: int) -> torch.Tensor:
            return module.losses(module.masked(batch, 0, i, 0, 0))["loss"]

        params = sum(p.numel() for p in student.parameters()) / 1e6
        self._precisions("student pre-training KD", training_step(loss, optimizer),
                         lambda: compile_in_place([student, teacher.model], {}), params_m=params)

    def finetune(self) -> None:
        torch.manual_seed(0)
        config = NasBertConfig.from_arch(self.student_arch(), vocab_size=self.sizes.vocab, num_labels=2,
                                         head_dim=load_space(self.sizes.space).head_dim)
        model = NasBertForSequenceClassification(config)
        module = GlueFineTuning(model, "sst2", optimizer=torch.optim.AdamW).to(self.device).train()
        batch = random_batch(self.sizes, self.device) | {
            "labels": torch.arange(self.sizes.batch, device=self.device) % 2}
        optimizer = optimizer_for(weight_decay_groups(model), self.device)
        self._precisions("fine-tuning (GLUE head)", training_step(lambda i: module.logits(batch)[1], optimizer),
                         lambda: compile_in_place([model], {}),
                         params_m=sum(p.numel() for p in model.parameters()) / 1e6)

    def _precisions(self, stage: str, step: Callable[[int], None], compile_models: Callable[[], None],
                    **extra) -> None:
        """fp32 (TF32 on CUDA) and bf16 eager, then bf16 compiled (FLOPs of the eager bf16 step)."""
        flops = None
        for precision in ("fp32", "bf16"):
            flops = self.add_row(stage, precision, False, measure(step, self.sizes, self.device, precision),
                                 **extra)["flops_per_step"]
        if self.sizes.compile:
            compile_models()
            self.add_row(stage, "bf16", True, measure(step, self.sizes, self.device, "bf16", flops), **extra)

    def supernet_vs_extracted(self) -> dict:
        from supernet_step import timed

        from nas_bert.nas.supernet import Supernet

        space, width = load_space(self.sizes.space), self.sizes.teacher.get("hidden_size", 768)
        supernet = Supernet(space, width).to(self.device)
        states = [torch.randn(self.sizes.batch, self.sizes.seq_len, width, device=self.device)
                  for _ in range(space.num_blocks + 1)]  # Y_0..Y_N
        mask = torch.ones(self.sizes.batch, self.sizes.seq_len, device=self.device)
        rng, rows = np.random.default_rng(0), []
        for _ in range(self.sizes.paths):
            arch = supernet.sample(rng)
            alone = supernet.extract(arch).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                a = timed(make_step(alone, lambda xs, m, s=alone: [s.forward_block(n, x, m) for n, x in enumerate(xs)],
                                    states, mask), self.device, self.sizes.steps)
                s = timed(make_step(supernet, lambda xs, m, a=arch: supernet(xs, m, a), states, mask), self.device,
                          self.sizes.steps)
            rows.append({"extracted_ms": 1e3 * a, "supernet_ms": 1e3 * s, "ratio": s / a})
        return {"precision": "bf16", "rows": rows,
                "overhead": sum(r["supernet_ms"] for r in rows) / sum(r["extracted_ms"] for r in rows) - 1}

    def latency_mape(self) -> dict:
        out = {}
        for batch in self.sizes.latency_batches:
            args = argparse.Namespace(space=self.sizes.space, device=self.sizes.device, batch=batch,
                                      seq_len=self.sizes.seq_len, models=self.sizes.latency_models,
                                      min_run_time=self.sizes.min_run_time, rounds=self.sizes.rounds,
                                      max_rounds=self.sizes.rounds, chain=4, vocab=self.sizes.vocab, seed=0)
            result = latency_prediction.run(args)
            out[f"{batch}x{self.sizes.seq_len}"] = {k: result[k] for k in ("mape_pct", "mean_error_pct",
                                                                          "max_abs_error_pct", "total_seconds")}
        return out

    def latency_models(self) -> list:
        arch_file = self.student_arch().save(self.work / "student_10m.yaml")
        args = argparse.Namespace(archs=[str(arch_file)], models=[], teacher=str(self.teacher_dir()),
                                  space=self.sizes.space, baseline_layers=self.sizes.student[0] + 2,
                                  device=self.sizes.device, batch_sizes=list(self.sizes.latency_batches),
                                  seq_len=self.sizes.seq_len, min_run_time=self.sizes.min_run_time,
                                  rounds=self.sizes.rounds, max_rounds=self.sizes.rounds, chain=4)
        return [{"batch": r["batch"], "rows": [{k: row[k] for k in ("model", "params_m", "gflops_per_seq",
                                                                     "predicted_ms", "measured_ms", "speedup")}
                                                for row in r["rows"]]}
                for r in latency_bench.run(args)["results"]]

    # -- report --------------------------------------------------------------------------------------
    def goals(self) -> dict:
        rows = self.result["rows"]
        anchor = next((r["tokens_per_s"] for r in rows if r["stage"].startswith("anchor")), None)
        out = {}
        for stage, goal in GOALS.items():
            best = max((r["tokens_per_s"] for r in rows if r["stage"] == stage), default=None)
            if anchor and best:
                out[stage] = {"x_anchor": best / anchor, "goal": goal, "met": best / anchor >= goal}
        mape = self.result["sections"].get("latency MAPE", {}).get("result", {})
        big = mape.get(f"{max(self.sizes.latency_batches)}x{self.sizes.seq_len}")
        if big:
            out["latency MAPE"] = {"mape_pct": big["mape_pct"], "goal": f"< {MAPE_GOAL:g}%",
                                   "met": big["mape_pct"] < MAPE_GOAL}
        return out

    def write(self) -> None:
        self.result["goals"] = self.goals()
        self.result["seconds"] = round(time.perf_counter() - self.start, 1)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "suite.json").write_text(json.dumps(self.result, indent=2, default=str))
        (self.out / "suite.md").write_text(markdown(self.result))


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown(result: dict) -> str:
    s = result["sizes"]
    peak = result["bf16_peak_tflops"]
    lines = [f"## GPU suite: {result['device']}, torch {result['torch']} (CUDA {result['cuda']}), {result['date']}",
             "", f"Batch {s['batch']} x {s['seq_len']} tokens, median of {s['steps']} steps after {s['warmup']} "
             f"warm-up steps; MFU over a dense bf16 peak of {fmt(peak, 'g')} TFLOP/s; fp32 = TF32 matmuls on CUDA.",
             "", "| stage | precision | compiled | tokens/s | x anchor | step ms | TFLOP/step | TFLOP/s | MFU | "
             "peak GiB |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    anchor = next((r["tokens_per_s"] for r in result["rows"] if r["stage"].startswith("anchor")), None)
    for r in result["rows"]:
        ratio = r["tokens_per_s"] / anchor if anchor else None
        lines.append(f"| {r['stage']} | {r['precision']} | {'yes' if r['compiled'] else 'no'} | "
                     f"{r['tokens_per_s']:,.0f} | {fmt(ratio, '.2f')} | {r['step_ms']:.1f} | "
                     f"{r['flops_per_step'] / 1e12:.3f} | {r['achieved_tflops']:.1f} | {fmt(r['mfu'], '.1%')} | "
                     f"{fmt(r['peak_gib'], '.1f')} |")
    lines += ["", "| goal | measured | target | met |", "|---|---:|---|---|"]
    for name, g in result.get("goals", {}).items():
        measured = f"{g['x_anchor']:.2f}x anchor" if "x_anchor" in g else f"{g['mape_pct']:.1f}%"
        target = f">= {g['goal']}x" if "x_anchor" in g else g["goal"]
        lines.append(f"| {name} | {measured} | {target} | {'yes' if g['met'] else 'NO'} |")
    lines += ["", "| section | status | seconds |", "|---|---|---:|"]
    for name, sec in result["sections"].items():
        lines.append(f"| {name} | {sec['status'][:120]} | {sec.get('seconds', '')} |")
    for name in ("supernet vs extracted path", "latency MAPE", "latency: student vs teacher vs baseline"):
        value = result["sections"].get(name, {}).get("result")
        if value is not None:
            lines += ["", f"### {name}", "", "```json", json.dumps(value, indent=1, default=str)[:4000], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for suite.json and suite.md")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (the CI check of this code)")
    parser.add_argument("--budget-s", type=float, default=300, help="no section starts after this many seconds")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak (default: by device name)")
    parser.add_argument("--teacher", default=None, help="accepted for the kit's runner; the suite's teacher is a "
                                                         "random bert-base (the hub is offline)")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if sizes.device == "cuda" and not torch.cuda.is_available():
        parser.error("the full suite needs CUDA; use --smoke on a CPU")
    if sizes.device == "cuda":
        torch.set_float32_matmul_precision("high")  # fp32 rows run on TF32 tensor cores, as training does
    threads = torch.get_num_threads()
    if args.smoke:  # tiny ops: one thread never waits for a descheduled OpenMP worker on a busy CI machine
        torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_suite_") as work:
            suite = Suite(sizes, args.out, args.budget_s, args.peak_tflops, Path(work))
            for name, fn in (("anchor", suite.anchor), ("supernet", suite.supernet),
                             ("pretrain KD", suite.pretrain), ("fine-tuning", suite.finetune),
                             ("supernet vs extracted path", suite.supernet_vs_extracted),
                             ("latency MAPE", suite.latency_mape),
                             ("latency: student vs teacher vs baseline", suite.latency_models)):
                suite.section(name, fn)
    finally:
        torch.set_num_threads(threads)
    print((args.out / "suite.md").read_text())
    return suite.result


if __name__ == "__main__":
    main()
