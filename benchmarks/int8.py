"""int8 vs fp32 on the CPU: each exported model (`--models`) in four forms, timed side by side in the same
round-robin passes (`time_calls`: eval, no_grad, the least of `--rounds` quiet medians):

- torch fp32, torch int8 (`torch.ao` dynamic quantization of the Linear layers),
- onnxruntime fp32 (`model.onnx`), onnxruntime int8 (`model_int8.onnx`, `quantize_dynamic`),

at each batch size (`--batch-sizes`, sequence `--seq-len`), with the int8 forms' least output cosine to fp32.
The ONNX files are written into the model folder when missing (`python -m nas_bert.modeling.quantize`).
Prints a Markdown table, appends it to `--out` when given, and writes `--json`.

    python benchmarks/int8.py --models <study>/pretrain/*/model --batch-sizes 1,32 --out docs/BENCHMARKS.md
    python benchmarks/int8.py --smoke                       # a tiny random student, in seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

import nas_bert  # noqa: F401  (registers the NAS-BERT Auto classes)
from nas_bert.modeling import NasBertConfig, NasBertModel
from nas_bert.modeling.onnx_export import (
    _OnnxWrapper,
    export_onnx,
    load_pretrained,
    output_names,
    random_inputs,
)
from nas_bert.modeling.quantize import check_close, onnx_runner, quantize_onnx, quantize_torch
from nas_bert.nas.timing import cpu_model, time_calls


def forms(model_dir: Path) -> tuple[torch.nn.Module, dict[str, object]]:
    """The fp32 model and its four runnable forms (callables of an input dict)."""
    model = load_pretrained(model_dir, "base")
    names = output_names(model)
    fp32_onnx, int8_onnx = model_dir / "model.onnx", model_dir / "model_int8.onnx"
    if not fp32_onnx.is_file():
        export_onnx(model, fp32_onnx)
    if not int8_onnx.is_file():
        quantize_onnx(fp32_onnx, int8_onnx)
    torch_fp32, torch_int8 = _OnnxWrapper(model, names).eval(), _OnnxWrapper(quantize_torch(model), names).eval()
    return model, {"torch fp32": lambda x: torch_fp32(**x), "torch int8": lambda x: torch_int8(**x),
                   "onnxruntime fp32": onnx_runner(fp32_onnx, names), "onnxruntime int8": onnx_runner(int8_onnx, names)}


def measure(models: list[Path], batch_sizes: list[int], seq_len: int, rounds: int, min_run_time: float) -> list[dict]:
    loaded = []  # each model's forms, built and checked against fp32 once
    for model_dir in models:
        model, runs = forms(model_dir)
        cosines = {form: 1.0 if "fp32" in form else check_close(model, run, f"{model_dir} {form}", threshold=0.0)
                   for form, run in runs.items()}
        name = model_dir.parent.name if model_dir.name == "model" else model_dir.name
        loaded.append((name, model, runs, cosines))
    rows = []
    for batch in batch_sizes:
        calls, meta = [], []
        for name, model, runs, cosines in loaded:
            inputs = random_inputs(model, batch, seq_len)
            inputs["attention_mask"][:] = 1  # full sequences: the deployment setting
            for form, run in runs.items():
                calls.append(lambda run=run, inputs=inputs: run(inputs))
                meta.append({"model": name, "form": form, "batch": batch, "seq_len": seq_len,
                             "cosine_to_fp32": round(cosines[form], 5),
                             "params": sum(p.numel() for p in model.parameters())})
        seconds, contention = time_calls(calls, min_run_time, rounds)
        for row, s, c in zip(meta, seconds, contention):
            rows.append({**row, "latency_ms": 1000 * s, "contention": c})
    for row in rows:  # speed-ups against the same model's torch fp32 at the same batch
        base = next(r for r in rows if r["model"] == row["model"] and r["batch"] == row["batch"]
                    and r["form"] == "torch fp32")
        row["speedup_vs_torch_fp32"] = base["latency_ms"] / row["latency_ms"]
    return rows


def markdown(rows: list[dict], command: str) -> str:
    head = (f"\n## int8 vs fp32 on the CPU (`benchmarks/int8.py`)\n\n`{command}`, {cpu_model()}, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.system()}, {date.today()}\n\n"
            "| model | params | batch | form | latency (ms) | vs torch fp32 | cosine to fp32 |\n"
            "|---|---:|---:|---|---:|---:|---:|\n")
    return head + "".join(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['batch']} | {r['form']} | "
                          f"{r['latency_ms']:.2f} | {r['speedup_vs_torch_fp32']:.2f}x | {r['cosine_to_fp32']:.4f} |\n"
                          for r in rows)


def smoke_model(directory: Path) -> Path:
    torch.manual_seed(0)
    arch = {"blocks": [{"hidden": 32, "ops": ["mha", "sepconv3"]}, {"hidden": 64, "ops": ["ffn", "mha"]}]}
    model = NasBertModel(NasBertConfig(arch=arch, vocab_size=200, max_position_embeddings=64, head_dim=16)).eval()
    model.save_pretrained(directory / "smoke" / "model")
    export_onnx(model, directory / "smoke" / "model" / "model.onnx", seq_len=16, dynamo=False)  # the fast exporter
    return directory / "smoke" / "model"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", type=Path, default=[], help="exported model folders (<run>/model)")
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-run-time", type=float, default=0.5, help="seconds per timed median")
    parser.add_argument("--out", type=Path, default=None, help="append the Markdown table to this file")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="a tiny random student, batch 1 and 2, seq 16")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.models, args.batch_sizes, args.seq_len, args.min_run_time = [smoke_model(Path(tmp))], "1,2", 16, 0.01
        if not args.models:
            parser.error("give --models <exported model folders> (or --smoke)")
        rows = measure(args.models, [int(b) for b in args.batch_sizes.split(",")], args.seq_len, args.rounds,
                       args.min_run_time)
    table = markdown(rows, "python benchmarks/int8.py " + " ".join(sys.argv[1:] if argv is None else argv))
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
