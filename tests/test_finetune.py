"""Stage 4: GLUE / SQuAD fine-tuning with task KD, exact evaluation (also under DDP), the entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification

from nas_bert.data.glue import GlueDataModule
from nas_bert.data.squad import SquadDataModule
from nas_bert.lit import GlueFineTuning, SquadFineTuning
from nas_bert.lit.finetune import TeacherLogitCache, task_kd_loss

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "tests" / "fixtures" / "glue"
SQUAD = ROOT / "tests" / "fixtures" / "squad" / "dev-v1.1-sample.json"


def tiny_bert(cls, seed: int = 0, **config):
    torch.manual_seed(seed)
    return cls(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=48, max_position_embeddings=128, **config))


def glue_data(task: str, tokenizer: Path, tmp_path: Path) -> GlueDataModule:
    return GlueDataModule(task=task, tokenizer=str(tokenizer), data_dir=str(GLUE), batch_size=4,
                          cache_dir=str(tmp_path / "cache"), include_test=False)


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs)


def test_teacher_logits_are_computed_once_per_example():
    cache, calls = TeacherLogitCache(), []

    def compute(idx):
        calls.append(idx.tolist())
        return idx[:, None].float().repeat(1, 3)  # (B, 3)

    idx = torch.tensor([4, 1])
    torch.testing.assert_close(cache.lookup(idx, lambda: compute(idx)), torch.tensor([[4.0] * 3, [1.0] * 3]))
    torch.testing.assert_close(cache.lookup(idx.flip(0), lambda: compute(idx.flip(0))),
                               torch.tensor([[1.0] * 3, [4.0] * 3]))
    assert calls == [[4, 1]]  # the second lookup was served from the cache
    cache.lookup(torch.tensor([9, 4]), lambda: compute(torch.tensor([9, 4])))
    assert calls[-1] == [9, 4] and cache.rows.shape == (10, 3)


def test_kd_loss_is_kl_for_classes_and_mse_for_regression():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    kl = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True,
                                    reduction="batchmean")
    torch.testing.assert_close(task_kd_loss(s, t, regression=False, temperature=1.0), kl)
    torch.testing.assert_close(task_kd_loss(s[:, :1], t[:, :1], regression=True, temperature=2.0),
                               torch.nn.functional.mse_loss(s[:, 0], t[:, 0]))


def test_glue_distillation_logs_every_metric_and_loyalty(tiny_teacher_dir, tmp_path):
    data = glue_data("stsb", tiny_teacher_dir, tmp_path)
    teacher = tiny_bert(BertForSequenceClassification, seed=1, num_labels=1)
    model = tiny_bert(BertForSequenceClassification, num_labels=1)
    module = GlueFineTuning(model, "stsb", optimizer=partial(torch.optim.AdamW, lr=1e-3), teacher=teacher)
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(module, datamodule=data)
    metrics = fit.callback_metrics
    dev = len(data.eval_datasets["validation"])
    assert int(metrics["val/glue/stsb/num_examples"]) == dev
    assert {"val/glue/stsb/pearson", "val/glue/stsb/spearmanr", "val/glue/stsb/label_loyalty", "train/kd",
            "best/glue/stsb/combined_score", "val/score"} <= set(metrics)
    assert module.teacher_cache.rows.shape[0] == len(data.train_dataset)  # every training example cached
    assert not any(k.startswith("teacher") for k in module.state_dict())


def run_ddp_eval(module, data, tmp_path) -> dict:
    fit = trainer(tmp_path, devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=1)
    fit.fit(module, datamodule=data)
    return {k: float(v) for k, v in fit.callback_metrics.items()}


@pytest.mark.slow
def test_two_process_evaluation_counts_every_example_once(tiny_teacher_dir, tmp_path):
    data = glue_data("mnli", tiny_teacher_dir, tmp_path)
    data.prepare_data()
    data.setup()
    model = tiny_bert(BertForSequenceClassification, num_labels=3)
    module = GlueFineTuning(model, "mnli", optimizer=partial(torch.optim.AdamW, lr=1e-3))
    metrics = run_ddp_eval(module, data, tmp_path)
    for split, name in (("validation_matched", "mnli_matched"), ("validation_mismatched", "mnli_mismatched")):
        assert metrics[f"val/glue/{name}/num_examples"] == len(data.eval_datasets[split])  # 3 and 4: odd sizes

    squad = SquadDataModule(tokenizer=str(tiny_teacher_dir), validation_file=str(SQUAD), max_seq_length=96,
                            doc_stride=32, batch_size=4, cache_dir=str(tmp_path / "cache"),
                            split_validation_for_training=True)
    squad.prepare_data()
    squad.setup()
    qa = SquadFineTuning(tiny_bert(BertForQuestionAnswering), optimizer=partial(torch.optim.AdamW, lr=1e-3),
                         teacher=tiny_bert(BertForQuestionAnswering, seed=1))
    metrics = run_ddp_eval(qa, squad, tmp_path)
    assert metrics["val/squad/total"] == len(squad.eval_examples)
    assert 0.0 <= metrics["val/squad/label_loyalty"] <= 1.0 and "val/squad/f1_loyalty" in metrics


def run_train(tmp_path: Path, *overrides: str, run: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    where = f"hydra.sweep.dir={tmp_path / run}" if multirun else f"hydra.run.dir={tmp_path / run}"
    cmd = [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), where,
           f"paths.log_dir={tmp_path}", f"paths.cache_dir={tmp_path / 'cache'}",
           f"finetune.results_file={tmp_path / 'results.jsonl'}", "trainer.max_epochs=1", "data.batch_size=4",
           "data.num_workers=0", *overrides]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_teachers_then_students_with_kd_fill_the_summary(tiny_teacher_dir, tmp_path):
    """The two multirun commands of the README: teachers per task, then students with KD from them."""
    from nas_bert.modeling.students import build_student, uniform_arch

    glue = ["data/glue=local", f"data.data_dir={GLUE}", f"teacher.name_or_path={tiny_teacher_dir}"]
    teachers = run_train(tmp_path, "experiment=glue_teacher", *glue, "data.task=rte,mrpc",
                         "finetune.predict_test=true", run="teachers", multirun=True)
    assert teachers.returncode == 0, teachers.stderr[-3000:]
    assert (tmp_path / "finetune" / "teachers" / "mrpc" / "model" / "config.json").is_file()
    assert (tmp_path / "teachers" / "0" / "glue_submission" / "RTE.tsv").read_text().startswith("index\tprediction\n")
    assert len(list((tmp_path / "teachers").glob("*/wandb/offline-run-*"))) == 2  # one W&B run per job

    student_dir = tmp_path / "nas-bert-1m" / "model"
    build_student(uniform_arch(2, 32, 1), vocab_size=30522, max_positions=128, head_dim=16).save_pretrained(student_dir)
    students = run_train(tmp_path, "experiment=glue_students", *glue, "data.task=rte",
                         f"finetune.model_path={student_dir}", run="students", multirun=True)
    assert students.returncode == 0, students.stderr[-3000:]
    result = json.loads((tmp_path / "students" / "0" / "results.json").read_text())
    assert result["model"] == "nas-bert-1m" and result["kd"] and result["params"] < 1.2e6
    assert "glue/rte/label_loyalty" in result["best"]
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[0].startswith("| model | params (M) | mrpc | rte | GLUE avg | loyalty % |") and len(summary) == 4

    wrong = run_train(tmp_path, "experiment=finetune_glue", *glue, "data.task=mnli",
                      f"finetune.model_path={student_dir}",
                      f"finetune.teacher_path={tmp_path / 'finetune' / 'teachers' / 'rte' / 'model'}", run="wrong")
    assert wrong.returncode != 0 and "has 2 labels, task mnli has 3" in wrong.stderr
    unknown = run_train(tmp_path, "experiment=finetune_glue", *glue, "data.task=qqq", run="unknown")
    assert unknown.returncode != 0 and "qqq" in unknown.stderr

    squad = run_train(tmp_path, "experiment=finetune_squad", "data/squad=local_dev_split",
                      f"data.validation_file={SQUAD}", "data.max_seq_length=96", "data.doc_stride=32",
                      f"teacher.name_or_path={tiny_teacher_dir}", run="squad")
    assert squad.returncode == 0, squad.stderr[-3000:]
    assert "squad_v1.1" in (tmp_path / "summary.md").read_text().splitlines()[0]


@pytest.mark.slow
def test_optuna_sweep_runs_trials_as_grouped_wandb_runs(tiny_teacher_dir, tmp_path):
    glue = ["data/glue=local", f"data.data_dir={GLUE}", f"teacher.name_or_path={tiny_teacher_dir}", "data.task=rte"]
    sweep = run_train(tmp_path, "experiment=finetune_glue", "hparams_search=finetune_optuna", *glue,
                      "hydra.sweeper.n_trials=2", run="sweep", multirun=True)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.kd_weight"}  # batch size: fixed by run_train
    scores = [json.loads(line)["final"]["val/score"] for line in open(tmp_path / "results.jsonl")]
    assert len(scores) == 2 and best["best_value"] == pytest.approx(max(scores))  # each trial returned its score
    runs = sorted((tmp_path / "sweep").glob("*/wandb/offline-run-*"))
    assert len(runs) == 2  # one W&B run per trial, each closed before the next began
    groups = {yaml.safe_load((tmp_path / "sweep" / job / "config.yaml").read_text())["logger"]["wandb"]["group"]
              for job in ("0", "1")}
    assert groups == {"sweep-sweep"}
