"""`export.push_to_hub`: what a push would upload (checked offline, on a recording stand-in for the Hub client),
the settings refused before any training, and a failed push that keeps the local export."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers.runs import compose_config
from huggingface_hub import HfApi

from nas_bert.hub import HubPushError, check_push_settings, push_model
from nas_bert.modeling import NasBertConfig, NasBertForMaskedLM
from nas_bert.reports.model_card import update_card
from nas_bert.stages.common import start_run

ARCH = {"blocks": [{"hidden": 32, "ops": ["mha", "ffn"]}]}


class RecordingHub:
    """Stands in for `HfApi`: records the repository it would create and every file it would upload."""

    def __init__(self) -> None:
        self.repos, self.files = [], []

    def create_repo(self, repo_id: str, private: bool, exist_ok: bool) -> None:
        self.repos.append((repo_id, private, exist_ok))

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str):
        self.files = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file())
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0")


@pytest.fixture
def export(tmp_path):
    torch.manual_seed(0)
    folder = tmp_path / "run" / "model"
    NasBertForMaskedLM(NasBertConfig(arch=ARCH, vocab_size=50, max_position_embeddings=16, head_dim=16)
                       ).save_pretrained(folder)
    update_card(folder, model_name="run", origin="A test export")
    return folder


def test_a_push_uploads_the_weights_code_and_card(export):
    hub = RecordingHub()
    url = push_model(export, "org/nas-bert-test", private=True, api=hub)
    assert hub.repos == [("org/nas-bert-test", True, True)] and url.startswith("https://huggingface.co/org/")
    assert {"model.safetensors", "config.json", "README.md", "modeling_nas_bert.py", "encoder.py",
            "nas_bert_card.json"} <= set(hub.files)


def test_a_failed_push_names_the_fix_and_keeps_the_export(export):
    before = sorted(p.name for p in export.iterdir())
    with pytest.raises(HubPushError, match=r"huggingface-cli upload org/nas-bert-test .*model"):
        push_model(export, "org/nas-bert-test", api=HfApi())  # the tests run with HF_HUB_OFFLINE=1
    assert sorted(p.name for p in export.iterdir()) == before


def test_push_settings_are_checked_before_training(tmp_path, monkeypatch):
    check_push_settings({"push_to_hub": False})
    with pytest.raises(HubPushError, match="hub_model_id"):
        check_push_settings({"push_to_hub": True, "hub_model_id": None})
    monkeypatch.setattr("nas_bert.hub.get_token", lambda: None)
    cfg = compose_config("train", tmp_path / "run", "export.push_to_hub=true", "export.hub_model_id=org/x")
    with pytest.raises(HubPushError, match="huggingface-cli login"):
        start_run(cfg)
    assert not (tmp_path / "run" / "config.yaml").exists()
