"""GPU-efficiency options (fused AdamW, on CPU too; TF32 and torch.compile, unchanged on CPU), no wandb import without
a W&B logger, and the GPU kit's size rule and machine check."""

from __future__ import annotations

import ast
import importlib.util
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from nas_bert.lit.compile import called_parts, compile_in_place, compile_options
from nas_bert.lit.optim import configure_optimization, fused_option, weight_decay_groups
from nas_bert.modeling.students import build_student, uniform_arch
from nas_bert.stages.common import instantiate_loggers, log_model_artifact
from nas_bert.utils.cuda import use_tensor_cores

ROOT = Path(__file__).resolve().parents[1]


def load_kit():
    spec = importlib.util.spec_from_file_location("gpu_kit", ROOT / "benchmarks" / "gpu" / "kit.py")
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    return kit


def test_adamw_is_fused_over_cpu_or_cuda_parameters():
    on_cpu = [torch.nn.Parameter(torch.zeros(2))]
    on_cuda = [SimpleNamespace(device=torch.device("cuda", 0), is_floating_point=lambda: True)]
    adamw = partial(torch.optim.AdamW, lr=1e-3)
    assert fused_option(adamw, [{"params": on_cuda}]) == {"fused": True}
    assert fused_option(torch.optim.Adam, on_cpu) == {"fused": True}
    assert fused_option(adamw, [{"params": on_cpu}, {"params": on_cuda}]) == {}  # mixed devices: torch's default
    assert fused_option(adamw, [torch.zeros(2, dtype=torch.long)]) == {}
    assert fused_option(partial(torch.optim.AdamW, foreach=True), on_cpu) == {}  # the config's choice stands
    assert fused_option(partial(torch.optim.SGD, lr=0.1), on_cpu) == {}


def test_fused_cpu_adamw_matches_the_loop_and_matmul_precision_is_unchanged():
    model = torch.nn.Linear(4, 3)
    built = configure_optimization(model, None, partial(torch.optim.AdamW, lr=1e-3), None)["optimizer"]
    assert built.defaults["fused"]
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    reference = torch.optim.AdamW(weight_decay_groups(twin), lr=1e-3, foreach=False)
    for _ in range(3):
        for net, opt in ((model, built), (twin, reference)):
            opt.zero_grad()
            net(torch.ones(2, 4)).square().sum().backward()
            opt.step()
    torch.testing.assert_close(model.weight, twin.weight)
    before = torch.get_float32_matmul_precision()
    assert use_tensor_cores("cpu") is False and torch.get_float32_matmul_precision() == before


def test_compile_wraps_the_called_parts_in_place():
    assert compile_options(None) is None and compile_options(False) is None
    assert compile_options(True) == {} and compile_options({"mode": "max-autotune"}) == {"mode": "max-autotune"}
    with pytest.raises(TypeError, match="compile must be"):
        compile_options("yes")
    student = build_student(uniform_arch(1, 16, 1), vocab_size=50, max_positions=16, head_dim=8)
    keys = list(student.state_dict())
    assert called_parts(student) == [student.base_model, student.lm_head]
    compile_in_place([student], {"backend": "eager"})  # compiled lazily: nothing runs here
    assert all(part._compiled_call_impl is not None for part in called_parts(student))
    assert student._compiled_call_impl is None and list(student.state_dict()) == keys  # checkpoints unchanged
    classifier = torch.nn.Linear(2, 2)
    assert called_parts(classifier) == [classifier]


def test_nothing_imports_wandb_without_a_wandb_logger(monkeypatch, tmp_path):
    """The GPU image has no wandb: no module imports it at load time, and CSV-only runs never reach it."""
    for path in (ROOT / "nas_bert").rglob("*.py"):
        top = ast.parse(path.read_text()).body  # module-level statements only (function bodies import lazily)
        names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
        names += [n.module for n in top if isinstance(n, ast.ImportFrom) and n.module]
        assert not [n for n in names if n.split(".")[0] == "wandb"], path
    monkeypatch.setitem(sys.modules, "wandb", None)  # any `import wandb` now raises
    cfg = OmegaConf.create({"logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger",
                                               "save_dir": str(tmp_path)}}})
    loggers = instantiate_loggers(cfg)
    log_model_artifact(loggers, tmp_path)
    assert [type(logger).__name__ for logger in loggers] == ["CSVLogger"]


def test_kit_over_its_limit_is_refused_naming_the_largest_files(tmp_path):
    kit = load_kit()
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "a.whl").write_bytes(b"x" * 300_000)
    (tmp_path / "teacher.safetensors").write_bytes(b"x" * 900_000)
    assert kit.check_kit_size(tmp_path, limit_mib=2) == 1_200_000
    with pytest.raises(kit.KitTooLarge, match=r"teacher\.safetensors \(0\.9 MiB\), wheels/a\.whl \(0\.3 MiB\)"):
        kit.check_kit_size(tmp_path, limit_mib=1)


def test_kit_run_names_missing_packages(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "gpu"))
    spec = importlib.util.spec_from_file_location("gpu_kit_run", ROOT / "benchmarks" / "gpu" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    missing = run.missing_imports({"json": "the image", "no_such_package_nas_bert": "the kit"})
    assert len(missing) == 1 and missing[0].startswith("no_such_package_nas_bert (from the kit: ModuleNotFoundError")
    assert run.main(["--kit", "/nonexistent", "--out", "/tmp/nas_bert_kit_out"]) == 2  # no kit: refused at once


def test_the_kit_packs_the_gpu_study_data_and_runs_the_study_on_the_kit_teacher(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks" / "gpu"))
    modules = {}
    for name in ("prepare", "run"):
        spec = importlib.util.spec_from_file_location(f"gpu_kit_{name}", ROOT / "benchmarks" / "gpu" / f"{name}.py")
        modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(modules[name])
    glue, books = tmp_path / "glue", tmp_path / "books"
    for task in ("RTE", "MRPC", "STS-B", "CoLA"):
        (glue / task).mkdir(parents=True)
        for split in ("train", "dev"):
            (glue / task / f"{split}.tsv").write_text("a\tb\n")
    books.mkdir()
    for i in range(3):
        (books / f"pg{i}.txt.gz").write_bytes(b"x" * 400_000)
    with pytest.raises(FileNotFoundError, match=r"SST-2"):  # a missing task is named
        modules["prepare"].pack_study_data(glue, books, tmp_path / "kit", corpus_mib=1)
    (glue / "SST-2").mkdir()
    for split in ("train", "dev"):
        (glue / "SST-2" / f"{split}.tsv").write_text("a\tb\n")
    packed = modules["prepare"].pack_study_data(glue, books, tmp_path / "kit", corpus_mib=1)
    assert packed["books"] == 2 and (tmp_path / "kit" / "glue.tar.gz").is_file()  # 0.8 of 1.2 MiB fit
    command = modules["run"].study_command(Path("/kit/teacher"), tmp_path / "study")
    assert "+pipeline=gpu_study" in command and "teacher.name_or_path=/kit/teacher" in command
    assert command[-1].startswith("pipeline.common=[trainer=gpu,")
    assert "teacher.name_or_path=/kit/teacher" in command[-1]


def test_masks_drawn_on_cpu_are_unchanged():
    """The masker draws from a CPU generator on every device; on CPU its masks are the ones it always drew."""
    from nas_bert.distill.masking import TokenMasker

    ids = torch.arange(2, 2 + 4 * 32).reshape(4, 32) % 1000  # (B, T)
    ids[:, 0] = 1
    masked, labels = TokenMasker(mask_token_id=4, vocab_size=1000, special_token_ids=(0, 1, 2, 3, 4))(ids, (0, 7, 3))
    assert (int(masked.sum()), int((labels != -100).sum()), int(labels.clamp_min(0).sum())) == (8310, 20, 1593)
