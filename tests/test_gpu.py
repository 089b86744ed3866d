"""The GPU tier (`pytest -m gpu`, skipped without CUDA): every LightningModule trains a few bf16 steps on CUDA
(the same paths and masks as on CPU), the training step issues no host-device synchronisation from nas-bert
code, SDPA runs a fused kernel with a padding mask, CUDA latency tables (CUDA events), ONNX export of a
CUDA-trained student, `trainer=ddp` on one device (NCCL) and a compiled student step."""

from __future__ import annotations

import math
import warnings
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertForQuestionAnswering, BertForSequenceClassification

from nas_bert.distill.masking import TokenMasker
from nas_bert.lit import GlueFineTuning, PretrainDistillation, SquadFineTuning, SupernetDistillation
from nas_bert.modeling.students import build_student, uniform_arch
from nas_bert.teacher import FrozenTeacher

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
ROOT = Path(__file__).resolve().parents[1]
NAS_BERT = str(ROOT / "nas_bert")
B, T, VOCAB = 8, 32, 30522


def batches(n: int, seed: int = 0, **extra) -> list[dict[str, torch.Tensor]]:
    """`n` batches of random ids (B, T) with padding at the end of every other row, plus `extra` fields."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(1000, VOCAB, (B, T), generator=g)
        ids[:, 0] = 101
        mask = torch.ones(B, T, dtype=torch.long)
        mask[::2, T // 2:] = 0  # padding
        ids[mask == 0] = 0
        out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
                    **{k: f(i) for k, f in extra.items()}})
    return out


class Steps(L.Callback):
    """Losses of every step, and the supernet's path when there is one."""

    def __init__(self) -> None:
        self.losses, self.paths = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        if getattr(module, "last_arch", None) is not None:
            self.paths.append(module.last_arch.to_dict())


def fit(module: L.LightningModule, data: list[dict], tmp_path: Path, accelerator: str = "gpu",
        precision: str = "bf16-mixed", **kwargs) -> Steps:
    steps = Steps()
    callbacks = [steps, *kwargs.pop("callbacks", [])]
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=precision, max_steps=len(data),
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, callbacks=callbacks, **kwargs)
    loader = torch.utils.data.DataLoader(data, batch_size=None, pin_memory=accelerator == "gpu")
    trainer.fit(module, train_dataloaders=loader)
    return steps


def supernet(teacher_dir: Path, space) -> SupernetDistillation:
    return SupernetDistillation(space, FrozenTeacher(str(teacher_dir), space.num_blocks),
                                optimizer=partial(torch.optim.AdamW, lr=1e-3), seed=3)


@pytest.fixture(scope="module")
def mlm_teacher_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mlm_teacher")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                               max_position_embeddings=128)).save_pretrained(path)
    return path


def pretrain(teacher_dir: Path, **kwargs) -> PretrainDistillation:
    from nas_bert.stages.pretrain import load_masked_lm

    torch.manual_seed(0)
    student = build_student(uniform_arch(2, 32, 1), vocab_size=VOCAB, max_positions=128, head_dim=16)
    masker = TokenMasker(mask_token_id=103, vocab_size=VOCAB, special_token_ids=(0, 101, 102))
    return PretrainDistillation(student, FrozenTeacher(str(teacher_dir), loader=load_masked_lm),
                                optimizer=partial(torch.optim.AdamW, lr=1e-3), masker=masker,
                                objective="prediction", **kwargs)


def tiny_bert(cls, **config):
    torch.manual_seed(0)
    return cls(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                          max_position_embeddings=128, **config))


def glue() -> GlueFineTuning:
    return GlueFineTuning(tiny_bert(BertForSequenceClassification, num_labels=2), "rte",
                          optimizer=partial(torch.optim.AdamW, lr=1e-3))


def squad() -> SquadFineTuning:
    return SquadFineTuning(tiny_bert(BertForQuestionAnswering), optimizer=partial(torch.optim.AdamW, lr=1e-3))


GLUE_FIELDS = {"labels": lambda i: torch.arange(B) % 2, "idx": lambda i: torch.arange(B) + i * B}
SQUAD_FIELDS = {"start_positions": lambda i: torch.full((B,), 3), "end_positions": lambda i: torch.full((B,), 5)}


def test_supernet_trains_in_bf16_on_the_paths_cpu_samples(tiny_teacher_dir, tiny_space, tmp_path):
    on_gpu = fit(supernet(tiny_teacher_dir, tiny_space), batches(3), tmp_path)
    on_cpu = fit(supernet(tiny_teacher_dir, tiny_space), batches(3), tmp_path, accelerator="cpu",
                 precision="32-true")
    assert all(math.isfinite(v) for v in on_gpu.losses) and len(on_gpu.losses) == 3
    assert on_gpu.paths == on_cpu.paths


def test_pretraining_kd_trains_in_bf16_with_the_masks_cpu_draws(mlm_teacher_dir, tmp_path):
    steps = fit(pretrain(mlm_teacher_dir), batches(3), tmp_path)
    assert all(math.isfinite(v) for v in steps.losses) and len(steps.losses) == 3
    ids = batches(1)[0]["input_ids"]
    masker = TokenMasker(mask_token_id=103, vocab_size=VOCAB, special_token_ids=(0, 101, 102))
    for cpu, gpu in zip(masker(ids, (0, 5)), masker(ids.cuda(), (0, 5))):
        assert torch.equal(cpu, gpu.cpu())


@pytest.mark.parametrize("task", ["glue", "squad"])
def test_fine_tuning_trains_in_bf16(task, tmp_path):
    module, fields = (glue(), GLUE_FIELDS) if task == "glue" else (squad(), SQUAD_FIELDS)
    steps = fit(module, batches(3, **fields), tmp_path)
    assert all(math.isfinite(v) for v in steps.losses) and len(steps.losses) == 3


class SyncWatch(L.Callback):
    """Wraps the module's training_step in torch.cuda sync debug mode (after the first step, which warms up) and
    records the source lines of nas-bert that synchronised."""

    def __init__(self) -> None:
        self.lines: set[str] = set()
        self.checked = 0

    def on_train_start(self, trainer, module) -> None:
        step = module.training_step

        def watched(batch, batch_idx):
            if trainer.global_step == 0:
                return step(batch, batch_idx)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    return step(batch, batch_idx)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                    self.checked += 1
                    self.lines |= {f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                   if "synchroniz" in str(w.message) and w.filename.startswith(NAS_BERT)}

        module.training_step = watched


@pytest.mark.parametrize("which", ["supernet", "glue", "squad", "pretrain"])
def test_the_training_step_does_not_synchronise(which, tiny_teacher_dir, tiny_space, mlm_teacher_dir, tmp_path):
    module, data = {
        "supernet": lambda: (supernet(tiny_teacher_dir, tiny_space), batches(3)),
        "glue": lambda: (glue(), batches(3, **GLUE_FIELDS)),
        "squad": lambda: (squad(), batches(3, **SQUAD_FIELDS)),
        "pretrain": lambda: (pretrain(mlm_teacher_dir), batches(3)),
    }[which]()
    watch = SyncWatch()
    fit(module, data, tmp_path, callbacks=[watch])
    assert watch.checked == 2
    if which == "pretrain":  # the MLM head runs on the masked positions only: their count is read once per step
        assert {line.split(":")[0] for line in watch.lines} <= {"pretrain.py"}, watch.lines
    else:
        assert watch.lines == set()


def test_sdpa_runs_a_fused_kernel_with_a_padding_mask():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from nas_bert.ops import build_op

    mha = build_op("mha", 128, 64, 4, 0.0).cuda()
    x = torch.randn(4, 64, 128, device="cuda")  # (B, T, H)
    mask = torch.ones(4, 64, dtype=torch.long, device="cuda")
    mask[:, 40:] = 0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        reference = mha(x, mask)
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
            fused = mha(x, mask)  # raises "No available kernel" if only the math kernel could run
    torch.testing.assert_close(fused.float(), reference.float(), atol=2e-2, rtol=2e-2)


def test_cuda_latency_table_agrees_with_cuda_events_and_whole_models(tiny_space):
    from nas_bert.encoder import StudentEncoder
    from nas_bert.nas.latency import measure_latency_table, predict_latency

    table = measure_latency_table(tiny_space, "cuda", batch_size=8, seq_len=64, min_run_time=0.05, rounds=1)
    assert table.device["type"] == "cuda" and table.device["name"] == torch.cuda.get_device_name()
    arch = tiny_space.reference_arch()
    model = StudentEncoder(arch, 30522, head_dim=tiny_space.head_dim).cuda().eval()
    ids = torch.randint(1, 30522, (8, 64), device="cuda")
    mask = torch.ones_like(ids)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.no_grad():
        for _ in range(5):
            model(ids, mask)
        start.record()
        for _ in range(50):
            model(ids, mask)
        end.record()
        end.synchronize()
    measured = start.elapsed_time(end) / 50 / 1e3  # seconds per forward
    predicted = predict_latency(arch, table, tiny_space)
    assert all(v > 0 for v in table.ops.values())
    assert 0.25 < predicted / measured < 4, (predicted, measured)  # launch-bound tiny ops: same order


def test_onnx_export_of_a_cuda_trained_student(mlm_teacher_dir, tmp_path):
    from nas_bert.modeling.onnx_export import check_onnx, export_onnx

    module = pretrain(mlm_teacher_dir)
    steps = fit(module, batches(2), tmp_path)
    student = module.student
    assert len(steps.losses) == 2 and next(student.parameters()).is_cuda
    path = export_onnx(student, tmp_path / "model.onnx", dynamo=False)
    check_onnx(student, path, atol=1e-3)  # onnxruntime (CPU) against the CUDA model


def test_ddp_trainer_config_runs_one_device_with_nccl(tiny_teacher_dir, tiny_space, tmp_path):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf" / "trainer" / "ddp.yaml")
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "conf" / "trainer" / "default.yaml"),
                          {k: v for k, v in cfg.items() if k != "defaults"})
    cfg.merge_with({"default_root_dir": str(tmp_path), "devices": 1, "max_steps": 2, "val_check_interval": None,
                    "limit_val_batches": 0, "log_every_n_steps": 1})
    steps = Steps()
    trainer = instantiate(cfg, callbacks=[steps], logger=False, enable_progress_bar=False,
                          enable_checkpointing=False)
    trainer.fit(supernet(tiny_teacher_dir, tiny_space),
                train_dataloaders=torch.utils.data.DataLoader(batches(2), batch_size=None))
    assert torch.distributed.is_initialized() and torch.distributed.get_backend() == "nccl"
    assert len(steps.losses) == 2 and all(math.isfinite(v) for v in steps.losses)


def test_a_compiled_student_step_matches_eager(mlm_teacher_dir, tmp_path):
    data = batches(2)
    eager = fit(pretrain(mlm_teacher_dir), data, tmp_path, precision="32-true")
    compiled = fit(pretrain(mlm_teacher_dir, compile=True), data, tmp_path, precision="32-true")
    np.testing.assert_allclose(compiled.losses, eager.losses, rtol=1e-3)
