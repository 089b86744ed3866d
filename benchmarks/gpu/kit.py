"""What the GPU kit holds and its size rule, shared by `prepare.py` (CPU machine) and `run.py` (GPU machine).

A kit folder (git-ignored, default `.gpu_kit/`) travels beside the repository to a GPU machine whose image lacks
some packages and has no network:

    wheels/     pinned wheels for Python 3.12 (`--no-deps`): the packages the image lacks
    teacher/    the offline teacher (all-MiniLM-L6-v2) in float16 safetensors, with its tokenizer
    data/       for the GPU study (pipeline=gpu_study): glue.tar.gz (train + dev TSVs of its five tasks) and
                corpus/ (a slice of the Gutenberg books, pg*.txt.gz as they are)
    kit.json    what was packed: pins, teacher dtype, sizes, date
"""

from __future__ import annotations

from pathlib import Path

MIB = 1024 * 1024
LIMIT_MIB = 64  # what may travel beside the repository
TARGET_MIB = 55  # the repository (~5 MiB tracked) travels in the same 64 MiB
# The packages the GPU image lacks that nas-bert imports (nas_bert/__init__ reads omegaconf; the metrics and data
# modules read datasets; the loaders read torchdata), with the extras of datasets the image lacks too.
PACKAGES = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "torchdata", "datasets", "dill", "multiprocess")
SDIST_ONLY = ("antlr4-python3-runtime",)  # no wheel on PyPI: built here (pure Python)
# Import names the GPU run needs, each with what provides it (checked in seconds before anything runs).
IMPORTS = {"torch": "the image", "lightning": "the image", "transformers": "the image", "torchmetrics": "the image",
           "onnx": "the image", "onnxruntime": "the image", "safetensors": "the image", "pytest": "the image",
           "pyarrow": "the image", "hydra": "the kit", "omegaconf": "the kit", "antlr4": "the kit",
           "torchdata": "the kit", "datasets": "the kit"}
MANIFEST = "kit.json"
DATA = "data"
GLUE_ARCHIVE = "glue.tar.gz"
CORPUS = "corpus"
GLUE_TASKS = ("RTE", "MRPC", "STS-B", "CoLA", "SST-2")  # the study's tasks, as the GLUE script names their folders
TEACHER = "teacher"
WHEELS = "wheels"


class KitTooLarge(ValueError):
    """The kit folder would not travel: over the size limit."""


def folder_size(folder: Path) -> tuple[int, list[tuple[int, Path]]]:
    """Total bytes of the files under `folder` and (bytes, path) of each file, largest first."""
    files = sorted(((p.stat().st_size, p) for p in folder.rglob("*") if p.is_file()), reverse=True)
    return sum(size for size, _ in files), files


def check_kit_size(folder: Path, limit_mib: float = TARGET_MIB, show: int = 5) -> int:
    """Bytes of the kit; raises KitTooLarge naming the largest files when it is over `limit_mib`."""
    total, files = folder_size(Path(folder))
    if total > limit_mib * MIB:
        largest = ", ".join(f"{p.relative_to(folder)} ({size / MIB:.1f} MiB)" for size, p in files[:show])
        raise KitTooLarge(
            f"the kit {folder} holds {total / MIB:.1f} MiB, over its limit of {limit_mib:g} MiB (the repository "
            f"travels in the same {LIMIT_MIB} MiB). Largest: {largest}. Leave out or shrink these and prepare again")
    return total
