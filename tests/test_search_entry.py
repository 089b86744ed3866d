"""`python search.py` end to end on a tiny teacher, and its errors on bad input."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from nas_bert.arch import Arch
from nas_bert.student import encoder_params

ROOT = Path(__file__).resolve().parents[1]


def run_search(tmp_path: Path, *overrides: str, script: str = "search.py", run: str = "run",
               ) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, str(ROOT / script), f"hydra.run.dir={tmp_path / run}",
           f"paths.cache_dir={tmp_path / 'cache'}", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_search_writes_checkpoint_logs_and_config(tmp_path, tiny_teacher_dir):
    result = run_search(tmp_path, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(k.startswith("supernet.") for k in ckpt["state_dict"])  # no teacher weights
    config = yaml.safe_load((run / "checkpoints" / "config.yaml").read_text())
    assert config["teacher"]["name_or_path"] == str(tiny_teacher_dir) and config["space"]["name"] == "tiny"
    text = (run / "config.yaml").read_text()
    assert "output_dir: ${hydra:runtime.output_dir}" in text  # the run folder stays a variable ...
    assert {line.split("${")[1].split("}")[0] for line in text.splitlines() if "${" in line} == {
        "hydra:runtime.output_dir", "paths.output_dir"}  # ... and everything else is resolved
    rows = list(csv.DictReader(open(run / "csv" / "metrics.csv")))
    assert any(r.get("val/block2_mse") for r in rows) and any(r.get("train/loss") for r in rows)
    assert list((run / "wandb").glob("offline-run-*"))

    # stage 2: one architecture per budget, each within its budget, priced like the real model
    budgets = {b["name"]: b for b in config["search"]["selection"]["budgets"]}
    files = sorted((run / "architectures").glob("*.yaml"))
    assert [f.stem for f in files] == sorted(budgets)
    for f in files:
        arch = Arch.load(f)
        assert arch.meta["params"] == encoder_params(arch, 30522, 128) <= arch.meta["budget"]["max_params"]
        assert arch.meta["space"]["name"] == "tiny" and arch.meta["model_loss"] > 0
    shrinking = json.loads((run / "shrinking.json").read_text())
    assert shrinking["rounds"] >= 1 and len(shrinking["alive"]) == 3
    assert (run / "pareto.png").stat().st_size > 10_000 and (run / "latency_table.json").is_file()
    assert sum(1 for _ in open(run / "candidates.csv")) > len(files)

    # the saved recipe re-runs on its own, into a new folder
    rerun = subprocess.run(
        [sys.executable, str(ROOT / "search.py"), "--config-path", str(run), "--config-name", "config",
         f"hydra.run.dir={tmp_path / 'rerun'}"],
        cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"},
        capture_output=True, text=True, timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "rerun" / "checkpoints" / "last.ckpt").is_file()


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_teacher_dir) -> Path:
    """One finished tiny search, shared by the selection tests below."""
    tmp = tmp_path_factory.mktemp("searched")
    result = run_search(tmp, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


@pytest.mark.slow
def test_select_from_a_finished_run_without_training(searched, tiny_teacher_dir):
    result = run_search(searched, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}",
                        f"search.select_from={searched / 'run'}", "search.selection.budgets=[{name: half, max_params_fraction: 0.5}]",
                        run="reselect")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [f.stem for f in (searched / "reselect" / "architectures").glob("*.yaml")] == ["half"]
    assert not (searched / "reselect" / "checkpoints" / "last.ckpt").exists()  # no training happened


@pytest.mark.slow
def test_a_budget_no_model_meets_names_the_smallest_and_keeps_the_rest(searched, tiny_teacher_dir):
    budgets = "search.selection.budgets=[{name: nothing, max_params: 1000},{name: plenty, max_params_fraction: 0.9}]"
    result = run_search(searched, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}",
                        f"search.select_from={searched / 'run'}", budgets, run="impossible")
    assert result.returncode != 0
    assert "budget 'nothing' (max_params=0.001M) is met by no architecture: the smallest has" in result.stderr
    assert (searched / "impossible" / "architectures" / "plenty.yaml").is_file()  # nothing already found is lost


@pytest.mark.slow
def test_a_latency_table_of_another_space_is_refused(searched, tiny_teacher_dir):
    common = ["debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}",
              f"search.select_from={searched / 'run'}", "space.hidden_sizes=[16,48]"]
    result = run_search(searched, *common, run="other_space")
    assert result.returncode != 0 and "hidden_sizes" in result.stderr and "remeasure" in result.stderr


@pytest.mark.slow
def test_train_entry_point_fits_the_configured_module(tmp_path, tiny_teacher_dir):
    result = run_search(tmp_path, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}",
                        "stage=fit", "model=supernet", "callbacks=supernet", script="train.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("task_name: train")


@pytest.mark.slow
def test_pretrain_exports_a_model_that_loads_with_from_pretrained(searched, tiny_teacher_dir):
    """Stage 3 on stage 2's output: the searched tiny architecture, pre-trained with KD, exported."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    arch_file = sorted((searched / "run" / "architectures").glob("*.yaml"))[0]
    common = ["debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}", f"student.arch_file={arch_file}",
              "student.max_positions=128", f"paths.cache_dir={searched / 'cache'}"]
    result = run_search(searched, *common, "export_onnx=true", script="train.py", run="pretrain")
    assert result.returncode == 0, result.stderr[-3000:]
    run = searched / "pretrain"
    assert (run / "model" / "model.onnx").is_file() and "onnxruntime matches PyTorch" in result.stdout + result.stderr
    assert json.loads((run / "mlm_head.json").read_text())["mlm_head"] == "fitted"  # the tiny teacher has none
    model = AutoModelForMaskedLM.from_pretrained(run / "model")
    tokenizer = AutoTokenizer.from_pretrained(run / "model")
    arch = Arch.load(arch_file)
    assert sum(p.numel() for p in model.nas_bert.parameters()) == encoder_params(arch, 30522, 128) == arch.meta["params"]
    logits = model(**tokenizer(["a compressed model"], return_tensors="pt")).logits
    assert logits.shape[-1] == len(tokenizer)
    # again, inheriting the supernet's weights and with the TinyBERT hidden-state term on
    again = run_search(searched, *common, "student.init=supernet", "model.intermediate.hidden_weight=1.0",
                       script="train.py", run="pretrain_again")
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((searched / "pretrain_again" / "mlm_head.json").read_text())["mlm_head"] == "cached"
    init = json.loads((searched / "pretrain_again" / "student_init.json").read_text())
    assert init["init"] == "supernet" and init["ops"] == sum(b.depth for b in arch.blocks)
    assert init["checkpoint"] == str(searched / "run" / "checkpoints" / "last.ckpt")
    rows = list(csv.DictReader(open(searched / "pretrain_again" / "csv" / "metrics.csv")))
    assert any(r.get("train/hidden_mse") for r in rows)

    missing = run_search(searched, *common[:-3], "student.arch_file=/no/arch.yaml", script="train.py", run="x")
    assert missing.returncode != 0 and "run `python search.py` first" in missing.stderr
    unknown = run_search(searched, *common[:-3], f"student.search_run={searched / 'run'}", "student.budget=nope",
                         script="train.py", run="y")
    assert unknown.returncode != 0 and "budget 'nope' was not searched" in unknown.stderr
    assert ", ".join(sorted(p.stem for p in (searched / "run" / "architectures").glob("*.yaml"))) in unknown.stderr


@pytest.mark.slow
def test_equal_size_baseline_pretrains_with_the_same_recipe(searched, tiny_teacher_dir):
    arch_file = sorted((searched / "run" / "architectures").glob("*.yaml"))[-1]
    result = run_search(searched, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}",
                        f"student.arch_file={arch_file}", "student.max_positions=128",
                        "student.baseline={layers: 2, hidden: null, blocks: 1}", script="train.py", run="baseline")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((searched / "baseline" / "model" / "config.json").read_text())
    target = Arch.load(arch_file).meta["params"]
    ours = encoder_params(Arch.from_dict(config["arch"]), 30522, 128)
    assert config["layers"] == [f"{op}_{config['hidden_size']}" for op in ("mha", "ffn")] * 2
    for other in (config["hidden_size"] - 8, config["hidden_size"] + 8):  # the closest width (head_dim 8)
        alt = encoder_params(Arch.from_dict({"blocks": [{"hidden": other, "ops": ["mha", "ffn"] * 2}]}), 30522, 128)
        assert abs(ours - target) <= abs(alt - target)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("teacher.name_or_path=/no/such/teacher", "teacher path /no/such/teacher does not exist"),
        ("space.num_blocks=4", "do not split evenly into 4 blocks"),
        ("data.train_files=/no/such/corpus.txt", "/no/such/corpus.txt"),
        ("space.ops=[mha,attention]", "unknown op 'attention'"),
    ],
)
def test_bad_input_fails_with_a_clear_message(tmp_path, tiny_teacher_dir, override, message):
    result = run_search(tmp_path, "debug=fast", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}", override)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
