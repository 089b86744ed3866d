"""Helpers shared by the corpus, GLUE and SQuAD DataModules: tokenizer loading and fingerprints, cache
fingerprints and paths, Hub loading with the offline hint, path errors and argument checks.

Every error raised here names the problem and the fix; the DataModules add which setting to change.
"""

from __future__ import annotations

import glob
import hashlib
import os
from typing import Any

import datasets
from transformers import AutoTokenizer, PreTrainedTokenizerBase

__all__ = [
    "MIN_SEQ_LEN",
    "cache_path",
    "check_file",
    "check_max_seq_length",
    "check_positive",
    "describe_dir",
    "digest",
    "hub_offline",
    "load_hub_dataset",
    "load_tokenizer",
    "resolve_files",
    "tokenizer_fingerprint",
]

# Shortest max_seq_length a DataModule accepts (room for [CLS], [SEP] and a few tokens).
MIN_SEQ_LEN = 8


# --------------------------------------------------------------------------- fingerprints and caches
def digest(*parts: Any) -> str:
    """Short stable hash used as a ``datasets`` fingerprint (16 hex chars, like datasets' own)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase, *extra: Any) -> str:
    """Stable hash of a fast tokenizer (class name and serialized backend, plus ``extra`` parts).

    Used in explicit cache fingerprints: hashing the tokenizer object itself is slow and not always stable.
    """
    backend = tokenizer.backend_tokenizer.to_str()
    return digest(type(tokenizer).__name__, hashlib.sha256(backend.encode("utf-8")).hexdigest(), *extra)


def cache_path(cache_dir: str | None, *parts: str) -> str:
    """``<cache_dir or the datasets cache>/<parts...>``, creating its parent directory."""
    root = cache_dir or datasets.config.HF_DATASETS_CACHE
    path = os.path.join(os.fspath(root), *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


# --------------------------------------------------------------------------- paths
def describe_dir(directory: str, limit: int = 20) -> str:
    """Human-readable listing of ``directory`` for error messages."""
    if not directory:
        directory = "."
    if not os.path.isdir(directory):
        return f"directory {os.path.abspath(directory)!r} does not exist either"
    entries = sorted(os.listdir(directory))
    if not entries:
        return f"directory {os.path.abspath(directory)!r} is empty"
    shown = ", ".join(entries[:limit]) + (
        f", ... ({len(entries) - limit} more)" if len(entries) > limit else ""
    )
    return f"directory {os.path.abspath(directory)!r} contains: {shown}"


def check_file(path: str | os.PathLike, what: str, alternative: str = "") -> str:
    """Absolute path of the existing file ``path``; else ``FileNotFoundError`` naming it and its directory.

    ``what`` opens the message (e.g. ``"train_files: file"``); ``alternative`` is appended to the fix
    (e.g. ``", or set validation_file to null to use the Hub dataset"``).
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{what} {os.path.abspath(path)!r} does not exist; {describe_dir(os.path.dirname(path))}. "
            f"Fix the path (relative paths are resolved against the current working directory "
            f"{os.getcwd()!r}){alternative}."
        )
    return os.path.abspath(path)


def resolve_files(patterns: list[str], arg_name: str) -> list[str]:
    """Expand globs and check that every file exists; returns absolute paths, in a stable order."""
    files: list[str] = []
    for pattern in patterns:
        path = os.path.expanduser(pattern)
        if glob.has_magic(path):
            matches = sorted(p for p in glob.glob(path, recursive=True) if os.path.isfile(p))
            if not matches:
                raise FileNotFoundError(
                    f"{arg_name}: the glob {pattern!r} (resolved from cwd {os.getcwd()!r}) matches no files; "
                    f"{describe_dir(_glob_root(path))}. Fix the pattern or the directory "
                    f"(relative paths are resolved against the current working directory)."
                )
            files.extend(os.path.abspath(p) for p in matches)
        elif os.path.isdir(path):
            raise FileNotFoundError(
                f"{arg_name}: {os.path.abspath(path)!r} is a directory, not a text file; "
                f"{describe_dir(path)}. Pass a glob such as {os.path.join(pattern, '*.txt')!r}."
            )
        else:
            files.append(check_file(path, f"{arg_name}: file"))
    return files


def _glob_root(pattern: str) -> str:
    """The longest leading directory of ``pattern`` without glob characters."""
    parts = pattern.split(os.sep)
    root = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        root.append(part)
    return os.sep.join(root) or ("/" if pattern.startswith(os.sep) else ".")


# --------------------------------------------------------------------------- argument checks
def check_positive(name: str, value: int | None, null_means: str | None = None) -> None:
    """``ValueError`` unless ``value`` is ``None`` or >= 1; ``null_means`` says what null does, if allowed."""
    if value is not None and value < 1:
        null = f" or null ({null_means})" if null_means else ""
        raise ValueError(f"{name} must be >= 1{null}, got {value}.")


def check_max_seq_length(
    value: int, tokenizer: PreTrainedTokenizerBase, minimum: int = MIN_SEQ_LEN, example: int = 128
) -> int:
    """``value`` as an int if ``minimum <= value <= tokenizer.model_max_length``, else ``ValueError``."""
    max_len = tokenizer.model_max_length
    if not minimum <= value <= max_len:
        raise ValueError(
            f"max_seq_length={value} is out of range: it must be between {minimum} and the tokenizer's "
            f"model_max_length={max_len} (it includes [CLS] and [SEP]). Set max_seq_length to e.g. {example}."
        )
    return int(value)


# --------------------------------------------------------------------------- Hub
def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` is set to a true value."""
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(v, "").lower() in truthy for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def load_hub_dataset(
    path: str, name: str | None = None, *, fallback: str, what: str | None = None, **kwargs: Any
) -> Any:
    """``datasets.load_dataset(path, name, **kwargs)``; a failure becomes an actionable ``ConnectionError``.

    The message names the dataset (``what``, default ``config <name>``), the cause, and the fix: download
    once (offline mode on) or check the name/network, or ``fallback`` (e.g. ``"set data_dir to a local
    GLUE directory (data/glue=local)"``).
    """
    args = (path,) if name is None else (path, name)
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:
        cache = kwargs.get("cache_dir") or "default datasets cache"
        hint = (
            f"Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE) and the dataset is not in the cache "
            f"({cache}): unset HF_HUB_OFFLINE to download it once, or {fallback}."
            if hub_offline()
            else f"Check the dataset name/config and your network, or {fallback}."
        )
        raise ConnectionError(
            f"Could not load Hub dataset {path!r} ({what or f'config {name!r}'}): {type(e).__name__}: {e}. {hint}"
        ) from e


# --------------------------------------------------------------------------- tokenizer
def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """Load a fast BERT-style tokenizer from a local directory or a Hub id, with actionable errors."""
    path = os.path.expanduser(os.fspath(name))
    looks_local = os.path.isabs(path) or path.startswith(("./", "../", "~")) or path in (".", "..")
    if (looks_local or os.path.exists(path)) and not os.path.isdir(path):
        raise FileNotFoundError(
            f"tokenizer: {os.path.abspath(path)!r} is not an existing directory; "
            f"{describe_dir(os.path.dirname(path))}. Point `tokenizer` to a directory containing "
            f"tokenizer.json (e.g. the teacher checkpoint) or to a Hub id such as 'bert-base-uncased'."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as e:
        if os.path.isdir(path):
            raise OSError(
                f"tokenizer: could not load a tokenizer from directory {os.path.abspath(path)!r} "
                f"({type(e).__name__}: {e}); {describe_dir(path)}. It needs tokenizer.json (or vocab.txt) "
                f"and tokenizer_config.json, e.g. from tokenizer.save_pretrained(dir)."
            ) from e
        hint = (
            " Offline mode is on (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE), so only cached Hub ids work:"
            " unset it to download once, or use a local directory."
            if hub_offline()
            else " Check the id / your network, or use a local directory."
        )
        raise OSError(
            f"tokenizer: could not load {name!r}: no local directory of that name (cwd {os.getcwd()!r}) "
            f"and loading it as a Hub id failed ({type(e).__name__}: {e}).{hint}"
        ) from e
    if not tokenizer.is_fast:
        raise ValueError(
            f"tokenizer: {name!r} loaded as a slow tokenizer ({type(tokenizer).__name__}); a fast one is "
            f"required. Add a tokenizer.json to the directory (e.g. save a PreTrainedTokenizerFast there)."
        )
    if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
        raise ValueError(
            f"tokenizer: {name!r} has no [CLS]/[SEP] tokens (cls_token_id={tokenizer.cls_token_id}, "
            f"sep_token_id={tokenizer.sep_token_id}); use a BERT-style tokenizer."
        )
    return tokenizer
