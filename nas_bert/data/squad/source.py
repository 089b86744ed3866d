"""Reading SQuAD v1.1 / v2.0: the official JSON files (checked against the configured version) or the Hub
datasets ``rajpurkar/squad`` / ``rajpurkar/squad_v2``, as flat examples with :data:`EXAMPLE_FEATURES`."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import datasets

from nas_bert.data.common import check_file, load_hub_dataset

__all__ = [
    "EXAMPLE_FEATURES",
    "HUB_DATASETS",
    "file_sha256",
    "load_squad_hub",
    "load_squad_json",
    "normalize_version",
]

HUB_DATASETS = {"1.1": "rajpurkar/squad", "2.0": "rajpurkar/squad_v2"}

# One example = one question: ``answers`` is empty for an unanswerable (v2.0) question.
EXAMPLE_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    }
)


def normalize_version(version: str | float) -> str:
    """``"1.1"``, ``1.1``, ``"v1.1"`` -> ``"1.1"``; ``"2.0"``, ``2``, ``"v2.0"`` -> ``"2.0"``."""
    text = str(version).strip().lower().removeprefix("v")
    text = {"2": "2.0"}.get(text, text)
    if text not in HUB_DATASETS:
        raise ValueError(f"version={version!r} is not a SQuAD version; use '1.1' or '2.0'.")
    return text


def _read_json(path: str) -> dict[str, Any]:
    """Read an official SQuAD JSON file (``{"version": ..., "data": [articles]}``)."""
    check_file(path, "SQuAD file", ", or set it to null to use the Hub dataset")
    try:
        with open(path, encoding="utf-8") as f:
            payload = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"SQuAD file {path!r} is not valid UTF-8 JSON ({type(e).__name__}: {e}).") from e
    if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
        keys = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"SQuAD file {path!r} is not in the official SQuAD format: expected an object with a 'data' list "
            f"of articles, found {keys}."
        )
    return payload


def _questions(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [qa for article in articles for paragraph in article["paragraphs"] for qa in paragraph["qas"]]


def _check_version(path: str, payload: dict[str, Any], version: str) -> None:
    """Raise if the file's declared version or its ``is_impossible`` flags contradict ``version``."""
    declared = payload.get("version")
    qas = _questions(payload["data"])
    flagged = sum("is_impossible" in qa for qa in qas)
    impossible = sum(bool(qa.get("is_impossible")) for qa in qas)
    try:
        declared_norm = normalize_version(declared) if declared is not None else None
    except ValueError:
        declared_norm = str(declared)
    if declared_norm is not None and declared_norm != version:
        problem = f"it declares a different version than the configured {version}"
    elif version == "1.1" and impossible:
        problem = "SQuAD v1.1 has no unanswerable questions"
    elif version == "2.0" and not flagged:
        problem = "a SQuAD v2.0 file flags every question with `is_impossible`"
    else:
        return
    found = f'"version": {declared!r}' if declared is not None else 'no "version" field'
    found += f", {impossible} of {len(qas)} questions unanswerable, {flagged} with an `is_impossible` flag"
    other = "2.0" if version == "1.1" else "1.1"
    raise ValueError(
        f"{path!r} is a SQuAD file of the wrong version: version={version} is configured but the file has "
        f"{found} ({problem}). Fix: point the file option to a SQuAD v{version} file, or set "
        f"version: '{other}' (data/squad={'v2' if other == '2.0' else 'v1'}) to read it as SQuAD {other}."
    )


def _flatten(articles: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Articles -> one row per question; unanswerable v2.0 questions get empty answers."""
    rows = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                rows.append(
                    {
                        "id": qa["id"],
                        "title": article.get("title", ""),
                        "context": paragraph["context"],
                        "question": qa["question"],
                        "answers": {
                            "text": [a["text"] for a in answers],
                            "answer_start": [int(a["answer_start"]) for a in answers],
                        },
                    }
                )
    return rows


def load_squad_json(path: str | os.PathLike, version: str) -> list[dict[str, Any]]:
    """Parse an official SQuAD JSON file of ``version`` ("1.1" / "2.0") into flat example dicts.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file of the other version.
    """
    path = os.path.expanduser(os.fspath(path))
    payload = _read_json(path)
    _check_version(path, payload, normalize_version(version))
    return _flatten(payload["data"])


def load_squad_hub(version: str, split: str, arg: str, cache_dir: str | None = None) -> datasets.Dataset:
    """The ``split`` of the Hub dataset of ``version`` with :data:`EXAMPLE_FEATURES` columns only.

    ``arg`` is the setting that would replace it by a local file (``train_file`` / ``validation_file``),
    named in the error when the Hub cannot be reached.
    """
    dataset = load_hub_dataset(
        HUB_DATASETS[normalize_version(version)],
        split=split,
        cache_dir=cache_dir,
        what=f"split {split!r}",
        fallback=f"set {arg} to a local SQuAD JSON file (with only a dev file: "
        f"split_validation_for_training=true, e.g. data/squad=local_dev_split)",
    )
    dataset = dataset.select_columns(list(EXAMPLE_FEATURES))
    return dataset if dataset.features == EXAMPLE_FEATURES else dataset.cast(EXAMPLE_FEATURES)


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (the fingerprint of a local SQuAD file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
