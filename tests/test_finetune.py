"""Stage 4: GLUE / SQuAD fine-tuning with task KD, exact evaluation (also under DDP), the entry point."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering, BertForSequenceClassification

from nas_bert.data.glue import GlueDataModule
from nas_bert.data.squad import SquadDataModule
from nas_bert.distill.logit_cache import TeacherLogitCache
from nas_bert.lit import GlueFineTuning, SquadFineTuning
from nas_bert.lit.finetune import task_kd_loss
from nas_bert.stages.finetune import final_metrics, load_task_model
from nas_bert.teacher import FrozenTeacher

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "tests" / "fixtures" / "glue"
SQUAD = ROOT / "tests" / "fixtures" / "squad" / "dev-v1.1-sample.json"


def tiny_bert(cls, seed: int = 0, **config):
    torch.manual_seed(seed)
    return cls(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=48, max_position_embeddings=128, **config))


def frozen(model: torch.nn.Module, path: Path) -> FrozenTeacher:
    """`model` as a fine-tuned teacher: saved, then loaded as the stage loads teachers."""
    model.save_pretrained(path)
    return FrozenTeacher(str(path), loader=type(model).from_pretrained)


def glue_data(task: str, tokenizer: Path, cache_dir: Path, **kwargs) -> GlueDataModule:
    return GlueDataModule(task=task, tokenizer=str(tokenizer), data_dir=str(GLUE), batch_size=4,
                          cache_dir=str(cache_dir), include_test=False, **kwargs)


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
    assert not cache.full and cache.complete(torch.tensor([1, 4, 9])) and cache.full  # ids of a subset
    torch.testing.assert_close(cache.lookup(torch.tensor([9, 1]), lambda: compute(None)),  # full: never computes
                               torch.tensor([[9.0] * 3, [1.0] * 3]))


def test_kd_loss_is_kl_for_classes_and_mse_for_regression():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    kl = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1), log_target=True,
                                    reduction="batchmean")
    torch.testing.assert_close(task_kd_loss(s, t, regression=False, temperature=1.0), kl)
    torch.testing.assert_close(task_kd_loss(s[:, :1], t[:, :1], regression=True, temperature=2.0),
                               torch.nn.functional.mse_loss(s[:, 0], t[:, 0]))


def test_glue_distillation_logs_every_metric_and_loyalty(tiny_teacher_dir, cache_dir, tmp_path):
    data = glue_data("stsb", tiny_teacher_dir, cache_dir, max_train_samples=12)  # example ids are not 0..11
    teacher = frozen(tiny_bert(BertForSequenceClassification, seed=1, num_labels=1), tmp_path / "teacher")
    model = tiny_bert(BertForSequenceClassification, num_labels=1)
    logits_file = tmp_path / "logits" / "stsb.pt"
    module = GlueFineTuning(model, "stsb", optimizer=partial(torch.optim.AdamW, lr=1e-3), teacher=teacher,
                            teacher_logits_file=str(logits_file))
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(module, datamodule=data)
    saved = torch.load(logits_file, weights_only=True)  # complete after the first epoch: kept for later runs
    assert set(saved) == {"train", "validation"}
    torch.testing.assert_close(saved["train"], module.teacher_cache.rows, equal_nan=True)  # NaN: ids not in the subset
    later = GlueFineTuning(tiny_bert(BertForSequenceClassification, num_labels=1), "stsb", teacher=teacher,
                           optimizer=partial(torch.optim.AdamW, lr=1e-3), teacher_logits_file=str(logits_file))
    teacher.model.forward = None  # a later run never calls the teacher, in training or in evaluation
    trainer(tmp_path, max_epochs=1, limit_train_batches=2).fit(later, datamodule=data)
    batch = next(iter(data.train_dataloader()))
    torch.testing.assert_close(later.teacher_logits(batch, train=True), saved["train"][batch["idx"]])
    assert later.saved_splits == {"train", "validation"} and later.eval_teacher_caches[0].full
    metrics = fit.callback_metrics
    dev = len(data.eval_datasets["validation"])
    assert int(metrics["val/glue/stsb/num_examples"]) == dev
    assert {"val/glue/stsb/pearson", "val/glue/stsb/spearmanr", "val/glue/stsb/label_loyalty", "train/kd",
            "best/glue/stsb/combined_score", "val/score"} <= set(metrics)
    assert not module.teacher_cache.rows[data.train_dataset["idx"]].isnan().any()  # every training example cached
    assert module.teacher_cache.full and later.teacher_cache.full  # the second epoch's look-ups check nothing
    assert not any(k.startswith("teacher") for k in module.state_dict())
    assert module.evaluated_at_step == fit.global_step  # the last epoch's validation saw the final weights: reused
    again = {k: float(v) for k, v in fit.validate(module, datamodule=data, verbose=False)[0].items()}
    assert final_metrics(fit, module, data) == pytest.approx(again)


def run_ddp_eval(module, data, tmp_path) -> dict:
    fit = trainer(tmp_path, devices=2, strategy="ddp_fork", max_epochs=1, limit_train_batches=1)
    fit.fit(module, datamodule=data)
    return {k: float(v) for k, v in fit.callback_metrics.items()}


@pytest.mark.slow
def test_two_process_evaluation_counts_every_example_once(tiny_teacher_dir, cache_dir, tmp_path):
    data = glue_data("mnli", tiny_teacher_dir, cache_dir)
    data.prepare_data()
    data.setup()
    model = tiny_bert(BertForSequenceClassification, num_labels=3)
    module = GlueFineTuning(model, "mnli", optimizer=partial(torch.optim.AdamW, lr=1e-3))
    metrics = run_ddp_eval(module, data, tmp_path)
    for split, name in (("validation_matched", "mnli_matched"), ("validation_mismatched", "mnli_mismatched")):
        assert metrics[f"val/glue/{name}/num_examples"] == len(data.eval_datasets[split])  # 3 and 4: odd sizes

    squad = SquadDataModule(tokenizer=str(tiny_teacher_dir), validation_file=str(SQUAD), max_seq_length=96,
                            doc_stride=32, batch_size=4, cache_dir=str(cache_dir),
                            split_validation_for_training=True)
    squad.prepare_data()
    squad.setup()
    qa = SquadFineTuning(tiny_bert(BertForQuestionAnswering), optimizer=partial(torch.optim.AdamW, lr=1e-3),
                         teacher=frozen(tiny_bert(BertForQuestionAnswering, seed=1), tmp_path / "teacher"))
    metrics = run_ddp_eval(qa, squad, tmp_path)
    assert metrics["val/squad/total"] == len(squad.eval_examples)
    assert 0.0 <= metrics["val/squad/label_loyalty"] <= 1.0 and "val/squad/f1_loyalty" in metrics


def test_the_task_head_can_learn_at_a_scaled_rate():
    model = tiny_bert(BertForSequenceClassification, num_labels=2)
    module = GlueFineTuning(model, "rte", optimizer=partial(torch.optim.AdamW, lr=1e-4), head_lr_scale=20.0)
    module.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    groups = module.configure_optimizers()["optimizer"].param_groups
    head = {id(p) for n, p in model.named_parameters() if not n.startswith("bert.")}
    rates = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert rates.keys() == {id(p) for p in model.parameters()}  # every parameter once
    assert all(rates[i] == pytest.approx(2e-3) for i in head)
    assert all(lr == 1e-4 for i, lr in rates.items() if i not in head)
    with pytest.raises(ValueError, match="head_lr_scale"):
        GlueFineTuning(model, "rte", optimizer=partial(torch.optim.AdamW, lr=1e-4), head_lr_scale=0.0)


def test_a_fresh_regression_head_starts_at_the_label_mean(tiny_teacher_dir, cache_dir, tmp_path):
    data = glue_data("stsb", tiny_teacher_dir, cache_dir)
    data.setup("fit")
    mean = torch.tensor(data.train_dataset["label"], dtype=torch.float64).mean().item()
    encoder = tiny_bert(BertForSequenceClassification, num_labels=3)  # an encoder whose head has another shape
    encoder.save_pretrained(tmp_path / "encoder")
    model = load_task_model(str(tmp_path / "encoder"), data, "finetune.model_path")
    assert model.classifier.bias.item() == pytest.approx(mean) and 1.0 < mean < 4.0
    with torch.no_grad():
        model.classifier.bias.fill_(-7.0)
    model.save_pretrained(tmp_path / "trained")  # a head trained for this task already is kept
    assert load_task_model(str(tmp_path / "trained"), data, "finetune.model_path").classifier.bias.item() == -7.0
