"""`benchmarks/gpu_suite.py --smoke`: the GPU suite's code path on CPU at tiny sizes, so it cannot rot between
GPU loans."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.py"


def test_smoke_runs_every_section_and_reports_the_goals(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_suite", SCRIPT)
    suite = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_suite", suite)  # its dataclasses look their module up
    spec.loader.exec_module(suite)
    result = suite.main(["--smoke", "--out", str(tmp_path)])
    assert {name: s["status"] for name, s in result["sections"].items()} == {
        name: "ok" for name in ("anchor", "supernet", "pretrain KD", "fine-tuning", "supernet vs extracted path",
                                "latency MAPE", "latency: student vs teacher vs baseline")}
    rows = {(r["stage"].split(":")[0], r["precision"], r["compiled"]) for r in result["rows"]}
    assert rows == {("anchor", "bf16", False)} | {(stage, p, False) for p in ("fp32", "bf16") for stage in (
        "supernet training", "student pre-training KD", "fine-tuning (GLUE head)")}
    assert all(r["tokens_per_s"] > 0 and r["flops_per_step"] > 0 for r in result["rows"])
    assert set(result["goals"]) == {"supernet training", "student pre-training KD", "latency MAPE"}
    assert set(result["sections"]["latency MAPE"]["result"]) == {"1x16", "2x16"}
    assert json.loads((tmp_path / "suite.json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    assert "| goal | measured | target | met |" in (tmp_path / "suite.md").read_text()
