"""Pushing an exported model folder (weights, tokenizer, modeling code, card, ONNX files) to the Hugging Face Hub,
with `export.push_to_hub=true export.hub_model_id=<user or org>/<name>` (see conf/train.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, get_token


class HubPushError(RuntimeError):
    """The push is misconfigured or failed; the local export is always kept."""


def check_push_settings(export: Any) -> None:
    """Before any training: a push needs a repository id and a token (a network is only known when pushing)."""
    if not export or not export.get("push_to_hub"):
        return
    if not export.get("hub_model_id"):
        raise HubPushError("export.push_to_hub=true needs export.hub_model_id=<user or org>/<name>")
    if get_token() is None:
        raise HubPushError("export.push_to_hub=true but there is no Hugging Face token: run `huggingface-cli login` "
                           "or set HF_TOKEN, or set export.push_to_hub=false and upload the export later")


def push_model(folder: str | Path, repo_id: str, private: bool = True, api: HfApi | None = None) -> str:
    """Create `repo_id` if needed and upload the whole folder in one commit; returns the commit's URL."""
    api = api or HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder),
                                   commit_message=f"Upload {Path(folder).parent.name} (nas-bert export)")
    except Exception as err:  # offline, no token, HTTP or network errors (of whichever HTTP client the hub uses)
        raise HubPushError(f"could not push {folder} to the Hub repository {repo_id} ({type(err).__name__}: {err}). "
                           f"The export is kept at {folder}; once online and logged in, upload it with "
                           f"`huggingface-cli upload {repo_id} {folder}`") from err
    return str(commit.commit_url)
