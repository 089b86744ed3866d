"""benchmarks/hf_trainer_glue.py: the plain HF Trainer cross-check of GLUE fine-tuning, run in process on the
GLUE fixtures with a tiny NAS-BERT student and the tiny teacher (a few steps each)."""

from __future__ import annotations

import csv
import importlib.util
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch

from nas_bert.data.glue import GlueDataModule, get_glue_task
from nas_bert.modeling.students import build_student, uniform_arch

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "tests" / "fixtures" / "glue"
SCORES = {"rte": ("accuracy",), "mrpc": ("accuracy", "f1"), "stsb": ("pearson", "spearman"), "cola": ("mcc",),
          "sst2": ("accuracy",)}
QUICK = ["--max-train-samples", "8", "--batch-size", "4", "--epochs", "2", "--max-length", "64"]


def load_script() -> ModuleType:
    path = ROOT / "benchmarks" / "hf_trainer_glue.py"
    spec = importlib.util.spec_from_file_location("hf_trainer_glue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf_glue = load_script()


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory, tiny_teacher_dir: Path) -> Path:
    """A `train.py`-style export, `<run>/model`: a tiny NAS-BERT student with the teacher's tokenizer."""
    out = tmp_path_factory.mktemp("tiny_student_run") / "model"
    student = build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16)
    student.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tiny_teacher_dir / name, out / name)
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_row(row: dict[str, str], task: str) -> None:
    lo = -100.0 if task in ("stsb", "cola") else 0.0  # correlations may be negative
    for key in ("score_best", "score_final", *SCORES[task]):
        assert math.isfinite(float(row[key])) and lo <= float(row[key]) <= 100.0, (task, key, row[key])
    assert float(row["score_best"]) >= float(row["score_final"])
    assert float(row["score_best"]) == pytest.approx(
        sum(float(row[m]) for m in SCORES[task]) / len(SCORES[task]))
    assert all(row[m] == "" for m in hf_glue.METRICS if m not in SCORES[task])
    assert len(row["epoch_scores"].split()) == 2  # evaluated after each of the 2 epochs


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models: with more threads, synchronisation costs more than the work (more so on busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_student_and_teacher_rows_and_resume(tmp_path: Path, student_dir: Path, tiny_teacher_dir: Path,
                                             one_thread: None, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "results.csv"
    rows = hf_glue.main(["--model", str(student_dir.parent), "--glue-dir", str(GLUE), "--tasks",
                         "rte,MRPC,sts-b", "--seeds", "0", "--out", str(out), "--classifier-pooling", "pair",
                         *QUICK])  # <run>: <run>/model
    rows += hf_glue.main(["--model", str(tiny_teacher_dir), "--name", "teacher", "--glue-dir", str(GLUE),
                          "--tasks", "cola", "--seeds", "0", "--out", str(out), *QUICK])
    saved = read_rows(out)
    assert len(rows) == len(saved) == 4
    run = student_dir.parent.name
    assert [(r["name"], r["task"], r["seed"]) for r in saved] == [
        (run, "rte", "0"), (run, "mrpc", "0"), (run, "stsb", "0"), ("teacher", "cola", "0")]
    assert saved[0]["model"] == str(student_dir)
    assert [r["classifier_pooling"] for r in saved] == ["pair", "pair", "pair", ""]  # the teacher: its own
    for row in saved:
        check_row(row, row["task"])
        assert row["train_examples"] == "8" and row["steps"] == "4"  # 2 epochs of 8 / 4
        dev = hf_glue.read_split(str(GLUE), get_glue_task(row["task"]), "validation")
        assert row["eval_examples"] == str(len(dev))
        assert row["lr"] == "5e-05" and row["torch"] == torch.__version__ and row["machine"]

    # resume: the row already there is skipped, the missing ones run
    capsys.readouterr()
    again = hf_glue.main(["--model", str(tiny_teacher_dir), "--name", "teacher", "--glue-dir", str(GLUE),
                          "--tasks", "cola,sst2", "--seeds", "0", "--out", str(out), *QUICK,
                          "--max-steps", "1"])
    assert [(r["task"], r["seed"]) for r in again] == [("sst2", 0)]
    assert "skip teacher cola seed 0" in capsys.readouterr().out
    saved = read_rows(out)
    assert len(saved) == 5 and saved[-1]["task"] == "sst2" and saved[-1]["steps"] == "1"
    assert 0 <= float(saved[-1]["score_final"]) <= 100


def test_same_training_subset_as_the_datamodule(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    dm = GlueDataModule("sst2", str(tiny_teacher_dir), data_dir=str(GLUE), cache_dir=str(tmp_path),
                        max_train_samples=5, seed=3, include_test=False)
    dm.setup("fit")
    ours = hf_glue.read_split(str(GLUE), get_glue_task("sst2"), "train", limit=5, seed=3)
    assert ours["idx"] == dm.train_dataset["idx"] and ours["sentence"] == dm.train_dataset["sentence"]
    assert len(set(ours["idx"])) == 5


def test_glue_metrics_match_known_values() -> None:
    import numpy as np

    logits = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # predicts 1, 0, 1, 1
    labels = np.array([1, 0, 0, 1])
    mrpc = hf_glue.glue_metrics(get_glue_task("mrpc"), logits, labels)
    assert mrpc["accuracy"] == 75.0 and mrpc["f1"] == pytest.approx(80.0)
    assert mrpc["score"] == pytest.approx(77.5)
    cola = hf_glue.glue_metrics(get_glue_task("cola"), logits, labels)
    assert cola == {"mcc": pytest.approx(100 / 3**0.5), "score": pytest.approx(100 / 3**0.5)}
    stsb = hf_glue.glue_metrics(get_glue_task("stsb"), np.array([[1.0], [2.0], [3.0], [5.0]]),
                                np.array([0.5, 1.0, 4.0, 4.5]))
    assert stsb["spearman"] == pytest.approx(100.0) and 80 < stsb["pearson"] < 100
    assert stsb["score"] == pytest.approx((stsb["pearson"] + 100) / 2)


@pytest.mark.parametrize(("change", "error", "match"), [
    ({"--model": "/nonexistent/model"}, FileNotFoundError, "no such directory"),
    ({"--tasks": "rte,qqq"}, ValueError, "Unknown GLUE task 'qqq'"),
    ({"--tasks": "mnli"}, ValueError, "not supported by this script"),
    ({"--tasks": "wnli"}, ValueError, "not supported by this script"),
    ({"--tasks": "rte"}, FileNotFoundError, "--glue-dir .*no folder 'RTE'"),
    ({"--classifier-pooling": "pair"}, ValueError, "'bert' model"),
], ids=["missing-model-dir", "unknown-task", "mnli", "wnli", "missing-task-dir", "pooling-of-a-bert"])
def test_bad_input_names_the_problem(tmp_path: Path, tiny_teacher_dir: Path, change: dict, error: type,
                                     match: str) -> None:
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)  # a GLUE dir without RTE
    args = {"--model": str(tiny_teacher_dir), "--glue-dir": str(tmp_path / "glue"), "--tasks": "sst2",
            "--out": str(tmp_path / "r.csv"), **change}
    with pytest.raises(error, match=match):
        hf_glue.main([x for kv in args.items() for x in kv])
    assert not (tmp_path / "r.csv").exists()


def test_out_with_other_columns_is_refused(tmp_path: Path, tiny_teacher_dir: Path) -> None:
    out = tmp_path / "other.csv"
    out.write_text("model,task\nx,rte\n")
    with pytest.raises(ValueError, match="write to another file"):
        hf_glue.main(["--model", str(tiny_teacher_dir), "--glue-dir", str(GLUE), "--tasks", "rte",
                      "--out", str(out)])


@pytest.mark.parametrize("model", ["teacher", "student"])
def test_a_fresh_regression_head_starts_at_the_label_mean(model: str, tiny_teacher_dir: Path,
                                                           student_dir: Path) -> None:
    path = tiny_teacher_dir if model == "teacher" else student_dir
    stsb, labels = get_glue_task("stsb"), [1.0, 2.0, 4.5]
    for flag, bias in (("--head-at-label-mean", 2.5), ("--no-head-at-label-mean", 0.0)):
        args = hf_glue.parse_args(["--model", str(path), "--glue-dir", str(GLUE), "--out", "x.csv", flag])
        head = hf_glue.load_model(path, stsb, args, labels)
        outputs = [p for name, p in head.named_parameters() if name.endswith("bias") and p.numel() == 1]
        assert len(outputs) == 1 and outputs[0].item() == pytest.approx(bias)
