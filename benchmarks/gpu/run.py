"""Run everything on a GPU machine in one call: install the kit, check the machine, `pytest -m gpu`, the suite.

    python3 benchmarks/gpu/run.py --kit .gpu_kit --out $OUT          # carry: [".gpu_kit"]

1. installs the kit's wheels into a temporary site folder (`pip --target`), put first on sys.path and PYTHONPATH;
2. checks the machine in seconds: CUDA present, every package importable; names what is missing, exits non-zero
   (2: packages, 3: CUDA) before anything long starts;
3. restores the kit's float16 teacher to float32 in a temporary folder (NAS_BERT_TEACHER for tests and suite);
4. runs the GPU test tier (`pytest -m gpu`), then the GPU suite (`benchmarks/gpu_suite.py`), then, with
   `--steps tests,suite,study` (or a second call, `--steps study`), the GPU study (`pipeline=gpu_study`) on the
   kit's data, each in its own process with its own time limit, so one that fails or hangs leaves the others'.

Writes to --out, after every step (a later failure keeps what came before): kit.json and kit.md (machine,
steps, test counts), tests.log, suite.json, suite.md, suite.log, study.log, study.tar.gz (at most 8 files come
back from a device call).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from kit import CORPUS, DATA, GLUE_ARCHIVE, IMPORTS, MANIFEST, TEACHER, WHEELS

ROOT = Path(__file__).resolve().parents[2]
GPU_TESTS = ("tests/test_gpu.py",)


def install_wheels(wheels: Path, site: Path) -> None:
    """pip-install every wheel of `wheels` into `site` (no index, no deps) and put `site` first on the paths."""
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    if files:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--disable-pip-version-check", "--upgrade", "--target", str(site), *files],
                       check=True)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    os.environ["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")


def missing_imports(names: dict[str, str]) -> list[str]:
    """'name (from where)' of every module of `names` that does not import, with the error."""
    missing = []
    for name, source in names.items():
        try:
            importlib.import_module(name)
        except Exception as err:  # any failure to import is reported by name
            missing.append(f"{name} (from {source}: {type(err).__name__}: {err})")
    return missing


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "date": time.strftime("%Y-%m-%d")}
    if info["cuda_available"]:
        info["device"] = torch.cuda.get_device_name(0)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            info["driver"] = None
    return info


def restore_teacher(packed: Path, out: Path) -> Path:
    """The kit's half-precision teacher saved again in float32 (what the code loads), with its tokenizer."""
    import torch
    from transformers import AutoModel

    AutoModel.from_pretrained(packed, dtype=torch.float32).save_pretrained(out)
    for f in packed.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def junit_counts(xml: Path) -> dict[str, int]:
    if not xml.is_file():
        return {}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} if suite is not None else {}


def run_step(command: list[str], log: Path, timeout_s: float) -> dict:
    """Run `command` from the repo root, its output into `log`; returns rc (124 on timeout) and seconds."""
    start = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = 124
            f.write(f"\n[run.py] stopped after {timeout_s:.0f} s\n")
    return {"command": " ".join(command), "rc": rc, "seconds": round(time.perf_counter() - start, 1)}


def study_command(teacher: Path, run_dir: Path) -> list[str]:
    """`search.py +pipeline=gpu_study` on the kit's teacher (its steps get it through pipeline.common, after the
    config's own entries)."""
    import yaml

    common = yaml.safe_load((ROOT / "conf/pipeline/gpu_study.yaml").read_text())["pipeline"]["common"]
    steps = ",".join([*common, f"teacher.name_or_path={teacher}", "teacher.hub_id=null"])
    return [sys.executable, "search.py", "+pipeline=gpu_study", f"hydra.run.dir={run_dir}",
            f"teacher.name_or_path={teacher}", "teacher.hub_id=null", f"pipeline.common=[{steps}]"]


def run_study(kit: Path, work: Path, teacher: Path, out: Path, timeout_s: float) -> dict:
    """The GPU study on the kit's data; its report (summary, plots, latency, architectures) comes back as one
    archive, `study.tar.gz`, whatever the step's end (the pipeline resumes from its run folder)."""
    data = kit / DATA
    if not (data / GLUE_ARCHIVE).is_file():
        return {"rc": 2, "detail": f"the kit has no study data ({data / GLUE_ARCHIVE}): prepare it without "
                                   f"--no-study-data"}
    with tarfile.open(data / GLUE_ARCHIVE) as archive:
        archive.extractall(work / "glue", filter="data")
    os.environ |= {"GLUE_DIR": str(work / "glue"), "NAS_BERT_GUTENBERG_DIR": str(data / CORPUS)}
    run_dir = work / "study"
    step = run_step(study_command(teacher, run_dir), out / "study.log", timeout_s)
    with tarfile.open(out / "study.tar.gz", "w:gz") as archive:
        for pattern in ("summary.*", "*.png", "latency.json", "baselines.json", "search/architectures/*.yaml",
                        "finetune/results.jsonl"):
            for path in sorted(run_dir.glob(pattern)):
                archive.add(path, arcname=str(path.relative_to(run_dir)))
    return step | {"detail": "study.tar.gz (summary.md, summary.csv, plots), study.log"}


def write_report(out: Path, report: dict) -> None:
    (out / "kit.json").write_text(json.dumps(report, indent=2))
    env = report.get("machine", {})
    lines = [f"# GPU kit run, {env.get('date', '')}", "",
             f"{env.get('device', 'no CUDA device')}, driver {env.get('driver')}, torch {env.get('torch')} "
             f"(CUDA {env.get('cuda')}), Python {env.get('python')}", "", "| step | rc | seconds | detail |",
             "|---|---:|---:|---|"]
    for name, step in report.get("steps", {}).items():
        detail = step.get("detail", "")
        lines.append(f"| {name} | {step.get('rc', '')} | {step.get('seconds', '')} | {detail} |")
    (out / "kit.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kit", type=Path, default=ROOT / ".gpu_kit")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", default="tests,suite", help="comma-separated: tests, suite, study")
    parser.add_argument("--tests-timeout", type=float, default=200)
    parser.add_argument("--suite-timeout", type=float, default=330)
    parser.add_argument("--suite-args", default="", help="extra arguments of gpu_suite.py, e.g. '--smoke'")
    parser.add_argument("--study-timeout", type=float, default=330)
    parser.add_argument("--allow-cpu", action="store_true", help="go on without CUDA (to try the kit on a CPU)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"steps": {}}
    start = time.perf_counter()
    if not (args.kit / MANIFEST).is_file():
        print(f"error: {args.kit} is no kit (no {MANIFEST}): run `python benchmarks/gpu/prepare.py` on the CPU "
              f"machine and carry the folder", file=sys.stderr)
        return 2
    report["kit"] = json.loads((args.kit / MANIFEST).read_text())
    work = Path(tempfile.mkdtemp(prefix="nas_bert_gpu_"))
    try:
        install_wheels(args.kit / WHEELS, work / "site")
    except subprocess.CalledProcessError as err:
        detail = (f"the kit's wheels did not install (pip rc {err.returncode}; they are for Python 3.12, this is "
                  f"{platform.python_version()})")
        report["steps"]["check"] = {"rc": 2, "detail": detail}
        write_report(args.out, report)
        print(f"error: {report['steps']['check']['detail']}", file=sys.stderr)
        return 2
    missing = missing_imports(IMPORTS)
    report["machine"] = machine()
    report["steps"]["check"] = {"rc": 0, "seconds": round(time.perf_counter() - start, 1),
                                "detail": "; ".join(missing) or "all packages import"}
    if missing:
        report["steps"]["check"]["rc"] = 2
        write_report(args.out, report)
        print("error: missing on this machine: " + "; ".join(missing), file=sys.stderr)
        return 2
    if not report["machine"]["cuda_available"] and not args.allow_cpu:
        report["steps"]["check"] |= {"rc": 3, "detail": "no CUDA device"}
        write_report(args.out, report)
        print(f"error: CUDA is not available (torch {report['machine']['torch']}, built for CUDA "
              f"{report['machine']['cuda']}): run this on the GPU machine, or pass --allow-cpu", file=sys.stderr)
        return 3
    teacher = restore_teacher(args.kit / TEACHER, work / "teacher")
    os.environ |= {"NAS_BERT_TEACHER": str(teacher), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled",
                   "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
    write_report(args.out, report)
    steps = args.steps.split(",")
    if "tests" in steps:
        xml = work / "tests.xml"  # read for the counts: at most 8 files come back from a device call
        step = run_step([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-o",
                         "addopts=-ra", f"--junitxml={xml}", *GPU_TESTS], args.out / "tests.log", args.tests_timeout)
        counts = junit_counts(xml)
        report["steps"]["tests"] = step | {"counts": counts, "detail": ", ".join(f"{k} {v}" for k, v in
                                                                                   counts.items())}
        write_report(args.out, report)
    if "suite" in steps:
        command = [sys.executable, "benchmarks/gpu_suite.py", "--out", str(args.out), "--teacher", str(teacher),
                   "--budget-s", str(max(30.0, args.suite_timeout - 30)), *args.suite_args.split()]
        step = run_step(command, args.out / "suite.log", args.suite_timeout)
        report["steps"]["suite"] = step | {"detail": "suite.md, suite.json"}
        write_report(args.out, report)
    if "study" in steps:
        report["steps"]["study"] = run_study(args.kit, work, teacher, args.out, args.study_timeout)
        write_report(args.out, report)
    print((args.out / "kit.md").read_text())
    return max((s.get("rc", 0) for s in report["steps"].values()), default=0)


if __name__ == "__main__":
    sys.exit(main())
