"""Supernet training step vs. the same path trained as a standalone extracted model.

For each of K sampled paths, one training step (forward of every block on its teacher input,
masked MSE, backward, AdamW step, zero_grad) is timed on the supernet and on `extract(path)`,
interleaved, on the same inputs. The teacher is left out (its cost is the same for both);
teacher states are random tensors of the teacher's width. Prints a Markdown table and the
overall overhead = sum(supernet medians) / sum(standalone medians) - 1.

    python benchmarks/supernet_step.py                       # MiniLM space, CPU
    python benchmarks/supernet_step.py --space nas_bert --teacher-width 768 --device cuda
    python benchmarks/supernet_step.py --teacher <dir or hub id>   # also the teacher's share of a step
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from nas_bert.distill import masked_mse
from nas_bert.lit.optim import weight_decay_groups
from nas_bert.nas.supernet import Supernet
from nas_bert.nas.timing import cpu_model
from nas_bert.space import SearchSpace

CONF = Path(__file__).resolve().parents[1] / "conf" / "space"


def load_space(name: str) -> SearchSpace:
    return SearchSpace.from_dict(yaml.safe_load((CONF / f"{name}.yaml").read_text()))


def make_step(model: torch.nn.Module, run_blocks, states, mask):
    """A closure doing one full training step of `model`."""
    optimizer = torch.optim.AdamW(weight_decay_groups(model), lr=1e-4)

    def step() -> None:
        preds = run_blocks(states[:-1], mask)
        loss = torch.stack([masked_mse(p, y, mask) for p, y in zip(preds, states[1:])]).sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, device: torch.device, repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="minilm", help="a config name in conf/space")
    parser.add_argument("--teacher-width", type=int, default=384)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--paths", type=int, default=8, help="sampled paths to measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per path and model (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--teacher", help="also time this teacher's forward (its width replaces --teacher-width)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    space = load_space(args.space)
    teacher = None
    if args.teacher:
        from nas_bert.teacher import FrozenTeacher

        teacher = FrozenTeacher(args.teacher, space.num_blocks).to(device)
        args.teacher_width = teacher.hidden_size
    supernet = Supernet(space, args.teacher_width).to(device)
    states = [torch.randn(args.batch, args.seq_len, args.teacher_width, device=device)
              for _ in range(space.num_blocks + 1)]  # Y_0..Y_N
    mask = torch.ones(args.batch, args.seq_len, device=device)
    rng = np.random.default_rng(0)

    rows = []
    for _ in range(args.paths):
        arch = supernet.sample(rng)
        standalone = supernet.extract(arch).to(device)
        super_step = make_step(supernet, lambda xs, m, a=arch: supernet(xs, m, a), states, mask)
        alone_step = make_step(
            standalone, lambda xs, m, s=standalone: [s.forward_block(n, x, m) for n, x in enumerate(xs)], states, mask
        )
        alone = timed(alone_step, device, args.repeats)
        sup = timed(super_step, device, args.repeats)
        rows.append({"path": [b.layers for b in arch.blocks], "params": sum(p.numel() for p in standalone.parameters()),
                     "standalone_s": alone, "supernet_s": sup, "ratio": sup / alone})

    overhead = sum(r["supernet_s"] for r in rows) / sum(r["standalone_s"] for r in rows) - 1
    teacher_share = None
    if teacher is not None:
        ids = torch.randint(1000, 20000, (args.batch, args.seq_len), device=device)
        teacher_s = timed(lambda: teacher(ids, mask), device, args.repeats)
        path_s = statistics.mean(r["supernet_s"] for r in rows)
        teacher_share = teacher_s / (teacher_s + path_s)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"space={args.space} teacher_width={args.teacher_width} batch={args.batch} seq_len={args.seq_len} "
          f"device={device_name} threads={torch.get_num_threads()} torch={torch.__version__}")
    print("| path params | standalone step (ms) | supernet step (ms) | ratio |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['params'] / 1e6:.2f}M | {1e3 * r['standalone_s']:.1f} | {1e3 * r['supernet_s']:.1f} "
              f"| {r['ratio']:.3f} |")
    print(f"\nsupernet overhead over standalone (sum of medians): {100 * overhead:+.1f}%")
    if teacher_share is not None:
        print(f"teacher forward share of a full supernet step (teacher + mean path step): {100 * teacher_share:.0f}%")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "device": device_name,
                                         "overhead": overhead, "teacher_share": teacher_share, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
