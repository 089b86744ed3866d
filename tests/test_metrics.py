"""Metrics against scikit-learn / scipy / the official SQuAD logic; each example counted once under DDP."""

from __future__ import annotations

import collections
import json
import re
import string
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from torch.utils.data import DataLoader, Dataset

from nas_bert.data.glue import GLUE_TASKS
from nas_bert.metrics import (
    DedupMetric,
    GlueMetrics,
    canonical_task,
    first_occurrence,
    glue_average,
    glue_scores,
    squad_scores,
    task_of,
)

NUM_LABELS = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "stsb": 1, "mnli": 3, "mnli_mismatched": 3, "qnli": 2,
              "rte": 2, "wnli": 2}


def fake_rows(task: str, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Fixed random student/teacher logits (n, C) and labels (n,); STS-B labels are on 0..5 with ties."""
    g = torch.Generator().manual_seed(seed)
    c = NUM_LABELS[task]
    if c == 1:
        labels = torch.randint(0, 26, (n,), generator=g).float() / 5  # (n,) ties, as STS-B's 0.2 steps
        logits = (labels + torch.randn(n, generator=g)).unsqueeze(1)  # (n, 1)
    else:
        labels = torch.randint(0, c, (n,), generator=g)  # (n,)
        logits = torch.randn(n, c, generator=g) + 1.2 * torch.nn.functional.one_hot(labels, c)  # (n, C)
    teacher = logits + torch.randn(logits.shape, generator=g)  # (n, C)
    return {"idx": torch.arange(n), "logits": logits, "labels": labels, "teacher_logits": teacher}


def reference(task: str, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """What Hugging Face run_glue reports, computed with scikit-learn / scipy."""
    if task == "stsb":
        preds = logits[:, 0]
        out = {"pearson": pearsonr(preds, labels)[0], "spearmanr": spearmanr(preds, labels)[0]}
    else:
        preds = logits.argmax(-1)
        if task == "cola":
            out = {"matthews_correlation": matthews_corrcoef(labels, preds)}
        elif task in ("mrpc", "qqp"):
            out = {"f1": f1_score(labels, preds), "accuracy": accuracy_score(labels, preds)}
        else:
            out = {"accuracy": accuracy_score(labels, preds)}
    return {**out, "combined_score": float(np.mean(list(out.values())))}


def with_padding(rows: dict[str, torch.Tensor], extra: torch.Tensor, seed: int) -> list[dict[str, torch.Tensor]]:
    """The rows plus copies of rows `extra`, shuffled and split into uneven batches."""
    order = torch.cat([torch.arange(len(rows["idx"])), extra])
    order = order[torch.randperm(len(order), generator=torch.Generator().manual_seed(seed))]
    return [{k: v[chunk] for k, v in rows.items()} for chunk in order.split(13)]


@pytest.mark.parametrize("task", list(NUM_LABELS))
def test_glue_metrics_match_sklearn_and_scipy_and_ignore_duplicates(task):
    rows = fake_rows(task, 120, seed=len(task))
    logits, labels = rows["logits"], rows["labels"]
    if task == "stsb":
        extra = torch.arange(0, 120, 3)
    else:
        wrong = (logits.argmax(-1) != labels).nonzero().flatten()
        extra = torch.cat([wrong, wrong[:5]])  # duplicated wrong predictions would lower every score
    metric = GlueMetrics(task)
    for batch in with_padding(rows, extra, seed=1):
        metric.update(batch["idx"], batch["logits"], batch["labels"])
    got = metric.compute()

    want = reference(task, logits.double().numpy(), labels.numpy())
    assert got.keys() == {*want, "num_examples"}  # no loyalty without teacher logits
    assert got["num_examples"] == 120
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
    padded = glue_scores(task, torch.cat([logits, logits[extra]]), torch.cat([labels, labels[extra]]))
    assert all(abs(padded[k] - want[k]) > 1e-3 for k in padded)  # the duplicates would have mattered


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_matthews_correlation_is_zero_for_constant_predictions_as_in_sklearn():
    labels = torch.tensor([1, 1, 1, 1])
    logits = torch.tensor([[0.0, 1.0]]).repeat(4, 1)  # always predicts 1: sklearn gives 0, torchmetrics 1
    assert glue_scores("cola", logits, labels)["matthews_correlation"] == 0.0
    assert matthews_corrcoef(labels.numpy(), logits.argmax(-1).numpy()) == 0.0


def test_prob_loyalty_is_one_minus_mean_scipy_jensen_shannon_distance():
    rows = fake_rows("mnli", 50, seed=3)
    rows["teacher_logits"][0, 1] = -float("inf")  # a zero teacher probability
    rows["logits"][1] *= 30  # a nearly one-hot student distribution
    metric = GlueMetrics("mnli")
    for batch in with_padding(rows, torch.arange(10), seed=2):
        metric.update(batch["idx"], batch["logits"], batch["labels"], batch["teacher_logits"])
    got = metric.compute()
    p = torch.softmax(rows["teacher_logits"].double(), -1).numpy()
    q = torch.softmax(rows["logits"].double(), -1).numpy()
    assert p[0, 1] == 0
    want = 1 - np.mean([jensenshannon(p[i], q[i]) for i in range(50)])
    assert got["prob_loyalty"] == pytest.approx(want, rel=1e-9)
    agree = (rows["logits"].argmax(-1) == rows["teacher_logits"].argmax(-1)).double().mean().item()
    assert got["label_loyalty"] == pytest.approx(agree)
    same = GlueMetrics("mnli")
    same.update(rows["idx"], rows["logits"], rows["labels"], rows["logits"])
    assert same.compute()["prob_loyalty"] == pytest.approx(1.0) and same.compute()["label_loyalty"] == 1.0


def test_label_loyalty_by_hand():
    student = torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0], [5.0, 0.0]])  # 0 1 0 1 0
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 5.0], [9.0, 0.0]])  # 0 0 1 1 0
    metric = GlueMetrics("sst2")
    metric.update(torch.tensor([0, 1, 2, 3, 4]), student, torch.tensor([0, 1, 1, 1, 0]), teacher)
    metric.update(torch.tensor([2, 3]), teacher[2:4], torch.tensor([1, 1]), teacher[2:4])  # padding: ignored
    got = metric.compute()
    assert got["label_loyalty"] == pytest.approx(3 / 5)
    assert got["accuracy"] == pytest.approx(4 / 5) and got["num_examples"] == 5


def test_regression_loyalty_by_hand():
    metric = GlueMetrics("stsb")
    student, teacher = torch.tensor([[1.0], [4.0], [2.5]]), torch.tensor([[1.5], [4.0], [9.0]])
    metric.update(torch.tensor([0, 1, 2]), student, torch.tensor([1.0, 4.2, 2.0]), teacher)
    got = metric.compute()
    assert got["label_loyalty"] == pytest.approx(1 - (0.5 / 5 + 0 + 1) / 3)  # |2.5 - 9| is clipped to 5
    assert "prob_loyalty" not in got


def test_task_names_and_checks():
    assert canonical_task("SST-2") == "sst2" and canonical_task("MNLI-mm") == "mnli_mismatched"
    assert canonical_task("mnli_matched") == "mnli_matched" and canonical_task("sts_b") == "stsb"
    assert canonical_task("MNLI-m") == "mnli_matched" and canonical_task("mnli") == "mnli"
    # one task registry: the metrics read the data registry's entries
    assert task_of("mnli_mismatched") is task_of("MNLI") is GLUE_TASKS["mnli"]
    assert all(task_of(name) is task for name, task in GLUE_TASKS.items())
    assert GlueMetrics("STS-B", num_labels=1, is_regression=True).is_regression
    with pytest.raises(ValueError, match="labels"):
        GlueMetrics("mnli", num_labels=2)
    with pytest.raises(ValueError, match="unknown GLUE task"):
        GlueMetrics("squad")


def test_glue_average_counts_mnli_once_as_the_mean_of_matched_and_mismatched():
    results = {"cola": {"matthews_correlation": 0.5, "combined_score": 0.5},
               "mrpc": {"f1": 0.9, "accuracy": 0.8},  # combined score computed: 0.85
               "mnli": {"accuracy": 0.84, "combined_score": 0.84},
               "mnli-mm": {"accuracy": 0.82, "combined_score": 0.82}}
    assert glue_average(results) == pytest.approx((0.5 + 0.85 + 0.83) / 3)
    with pytest.raises(ValueError, match="twice"):
        glue_average({"mnli": {"accuracy": 0.8}, "mnli_matched": {"accuracy": 0.8}})


def test_dedup_keeps_the_first_occurrence_sorted_by_index():
    idx = torch.tensor([5, 2, 5, 9, 2, 0])
    assert first_occurrence(idx).tolist() == [5, 1, 0, 3]
    metric = DedupMetric(("start", "end"))
    metric.update(torch.tensor([5, 2]), start=torch.tensor([[1.0, 1.0], [2.0, 2.0]]), end=torch.tensor([1, 2]))
    metric.update(torch.tensor([5, 0]), start=torch.tensor([[7.0, 7.0], [0.0, 0.0]]), end=torch.tensor([7, 0]))
    rows = metric.compute()
    assert rows["idx"].tolist() == [0, 2, 5] and rows["end"].tolist() == [0, 2, 1]
    assert rows["start"][:, 0].tolist() == [0.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="every update or on none"):
        metric.update(torch.tensor([1]), start=torch.tensor([[1.0, 1.0]]))


# ---- SQuAD: the official evaluation scripts' logic, written out here as the reference ----


def official_normalize(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def official_v1_evaluate(answers: dict[str, list[str]], predictions: dict[str, str]) -> dict[str, float]:
    def f1_score_v1(prediction, ground_truth):
        prediction_tokens = official_normalize(prediction).split()
        ground_truth_tokens = official_normalize(ground_truth).split()
        common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    f1 = exact = total = 0
    for qid, ground_truths in answers.items():
        total += 1
        if qid not in predictions:
            continue
        exact += max(official_normalize(predictions[qid]) == official_normalize(g) for g in ground_truths)
        f1 += max(f1_score_v1(predictions[qid], g) for g in ground_truths)
    return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}


def official_v2_evaluate(answers: dict[str, list[str]], predictions: dict[str, str]) -> dict[str, float]:
    def get_tokens(s):
        return official_normalize(s).split() if s else []

    def compute_f1(a_gold, a_pred):
        gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
        common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
        num_same = sum(common.values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(pred_toks)
        recall = 1.0 * num_same / len(gold_toks)
        return (2 * precision * recall) / (precision + recall)

    exact_scores, f1_scores = {}, {}
    for qid, texts in answers.items():
        gold_answers = [a for a in texts if official_normalize(a)] or [""]
        exact_scores[qid] = max(int(official_normalize(a) == official_normalize(predictions[qid]))
                                for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, predictions[qid]) for a in gold_answers)

    def make_eval_dict(qids):
        return {"exact": 100.0 * sum(exact_scores[k] for k in qids) / len(qids),
                "f1": 100.0 * sum(f1_scores[k] for k in qids) / len(qids), "total": len(qids)}

    out = make_eval_dict(list(answers))
    has_ans = [k for k, v in answers.items() if [a for a in v if a]]
    no_ans = [k for k in answers if k not in has_ans]
    for prefix, qids in (("HasAns_", has_ans), ("NoAns_", no_ans)):
        if qids:
            out.update({f"{prefix}{k}": v for k, v in make_eval_dict(qids).items()})
    return out


SQUAD_ANSWERS = {
    "punct": ["Denver Broncos"],
    "articles": ["the Eiffel Tower"],
    "partial": ["the Norman conquest of England"],
    "multi": ["1066", "in 1066", "the year 1066"],
    "case": ["Saint-Denis"],
    "wrong": ["Paris"],
    "repeat": ["New York New York"],
}
SQUAD_PREDICTIONS = {
    "punct": "Denver Broncos.",
    "articles": "An Eiffel tower!",
    "partial": "Norman conquest",
    "multi": "year 1066 AD",
    "case": "saint denis",
    "wrong": "London, England",
    "repeat": "New York",
}


def test_squad_v1_matches_the_official_logic():
    answers = {**SQUAD_ANSWERS, "empty_gold": ["The"], "missing": ["x"]}  # "missing" has no prediction
    predictions = {**SQUAD_PREDICTIONS, "empty_gold": "a"}  # both normalise to nothing: EM 1, F1 0 in v1.1
    got = squad_scores(predictions, answers)
    want = official_v1_evaluate(answers, predictions)
    assert got["exact_match"] == pytest.approx(want["exact_match"], abs=1e-12)
    assert got["f1"] == pytest.approx(want["f1"], abs=1e-12)
    assert got["total"] == len(answers)
    assert 0 < want["f1"] < 100 and want["f1"] != want["exact_match"]  # partial overlaps are in play


def test_squad_v1_agrees_with_torchmetrics_away_from_empty_answers():
    from torchmetrics.functional.text import squad

    preds = [{"prediction_text": t, "id": i} for i, t in SQUAD_PREDICTIONS.items()]
    target = [{"answers": {"text": t, "answer_start": [0] * len(t)}, "id": i} for i, t in SQUAD_ANSWERS.items()]
    theirs = squad(preds, target)
    ours = squad_scores(SQUAD_PREDICTIONS, SQUAD_ANSWERS)
    assert ours["exact_match"] == pytest.approx(theirs["exact_match"].item(), rel=1e-6)
    assert ours["f1"] == pytest.approx(theirs["f1"].item(), rel=1e-6)


def test_squad_v2_matches_the_official_logic_including_no_answer():
    answers = {**SQUAD_ANSWERS, "na_right": [""], "na_wrong": [""], "na_list": [], "na_article": [""],
               "gold_the": ["The", "an"]}
    predictions = {**SQUAD_PREDICTIONS, "na_right": "", "na_wrong": "Denver", "na_list": "",
                   "na_article": "the", "gold_the": ""}
    got = squad_scores(predictions, answers, version_2=True)
    want = official_v2_evaluate(answers, predictions)
    assert set(want) == {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
                         "NoAns_f1", "NoAns_total"}
    for key, value in want.items():
        assert got[key.replace("exact", "exact_match")] == pytest.approx(value, abs=1e-12), key
    assert want["NoAns_total"] == 4 and want["NoAns_exact"] == 75.0  # "Denver" for an unanswerable question


def squad_rows_scores(metric: DedupMetric, texts: dict[int, str], golds: dict[int, list[str]]) -> dict[str, float]:
    """The live SQuAD path in miniature: rows gathered once per index (DedupMetric), then `squad_scores` over the
    questions they name; a row's `answer` picks its prediction text, `num_examples` counts the questions."""
    rows = metric.compute()
    idx, answer = rows["idx"].tolist(), rows["answer"].tolist()
    preds = {f"q{i}": texts[a] for i, a in zip(idx, answer)}
    return {**squad_scores(preds, {f"q{i}": golds[i] for i in idx}, version_2=True), "num_examples": len(idx)}


def test_squad_rows_count_each_question_once():
    metric = DedupMetric(("answer",))
    texts = {0: "x", 1: "", 2: "wrong"}
    metric.update(torch.tensor([0, 1]), answer=torch.tensor([0, 1]))
    metric.update(torch.tensor([0]), answer=torch.tensor([2]))  # a padded duplicate: the first row is kept
    got = squad_rows_scores(metric, texts, {0: ["x"], 1: [""]})
    assert got["num_examples"] == 2 and got["exact_match"] == 100.0


# ---- DDP: Lightning inserts a DistributedSampler that pads the eval sets ----

DDP_SETS = (("mrpc", 101), ("stsb", 40), ("mnli", 7))


class RowsDataset(Dataset):
    def __init__(self, task: str, n: int) -> None:
        self.rows = fake_rows(task, n, seed=n)

    def __len__(self) -> int:
        return len(self.rows["idx"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.rows.items()}


def squad_texts(idx: torch.Tensor) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Deterministic predictions and golds for questions q{idx}; every third one unanswerable."""
    preds = {f"q{i}": ("" if i % 4 == 0 else f"The answer {i % 5}.") for i in idx.tolist()}
    golds = {f"q{i}": ([""] if i % 3 == 0 else [f"answer {i % 7}", "an answer"]) for i in idx.tolist()}
    return preds, golds


class EvalModule(L.LightningModule):
    """Feeds the stored logits to the metrics and writes what each rank computed."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.layer = torch.nn.Linear(1, 1)  # DDP needs a parameter
        self.metrics = torch.nn.ModuleList([GlueMetrics(task) for task, _ in DDP_SETS])
        self.squad = DedupMetric(("answer",))  # one row per question, as SQuAD features are gathered
        self.seen = [0] * len(DDP_SETS)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(RowsDataset(task, n), batch_size=8) for task, n in DDP_SETS]

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.seen[dataloader_idx] += len(batch["idx"])
        self.metrics[dataloader_idx].update(batch["idx"], batch["logits"], batch["labels"], batch["teacher_logits"])
        if dataloader_idx == 0:
            self.squad.update(batch["idx"], answer=batch["idx"])

    def on_validation_epoch_end(self):
        rows = self.squad.compute()  # gathered from both ranks, each question once
        preds, golds = squad_texts(rows["idx"])
        squad = {**squad_scores(preds, golds, version_2=True), "num_examples": int(rows["idx"].numel())}
        result = {"glue": [m.compute() for m in self.metrics], "squad": squad, "seen": self.seen}
        (self.out_dir / f"rank{self.global_rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_ddp_counts_every_example_once_and_matches_one_process(tmp_path):
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.validate(EvalModule(tmp_path))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert [a + b for a, b in zip(ranks[0]["seen"], ranks[1]["seen"])] == [102, 40, 8]  # the sampler padded

    for (task, n), got in zip(DDP_SETS, ranks[0]["glue"]):
        single = GlueMetrics(task)
        rows = RowsDataset(task, n).rows
        single.update(rows["idx"], rows["logits"], rows["labels"], rows["teacher_logits"])
        assert got["num_examples"] == n
        assert got == pytest.approx(single.compute(), rel=1e-12), task
    single_squad = squad_scores(*squad_texts(torch.arange(101)), version_2=True)
    assert ranks[0]["squad"] == pytest.approx({**single_squad, "num_examples": 101}, rel=1e-12)
