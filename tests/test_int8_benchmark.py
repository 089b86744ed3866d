"""`benchmarks/int8.py --smoke`: the four forms of a model timed side by side, in seconds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "int8.py"


def test_smoke_times_four_forms_per_batch(tmp_path):
    spec = importlib.util.spec_from_file_location("int8_benchmark", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--smoke", "--rounds", "1", "--out", str(tmp_path / "b.md"), "--json", str(tmp_path / "b.json")])
    assert {(r["form"], r["batch"]) for r in rows} == {(f, b) for f in ("torch fp32", "torch int8", "onnxruntime fp32",
                                                                       "onnxruntime int8") for b in (1, 2)}
    assert all(r["latency_ms"] > 0 and r["cosine_to_fp32"] > 0.9 for r in rows)
    assert all(r["speedup_vs_torch_fp32"] == 1.0 for r in rows if r["form"] == "torch fp32")
    assert "| smoke |" in (tmp_path / "b.md").read_text() and (tmp_path / "b.json").is_file()
