"""SupernetDistillation: it learns, checkpoints without the teacher, refuses foreign checkpoints, and under DDP
samples identical paths and shrinks identically on every rank."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch

from nas_bert.arch import ArchitectureError
from nas_bert.data import CorpusDataModule
from nas_bert.lit import SupernetDistillation
from nas_bert.nas.shrinking import ProgressiveShrinking, assign_bins
from nas_bert.space import SearchSpace
from nas_bert.teacher import FrozenTeacher

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "corpus" / "wikitext-2-raw"


def make_data(tokenizer_dir: Path, cache_dir: Path, n_train: int = 64, batch_size: int = 8) -> CorpusDataModule:
    return CorpusDataModule(
        tokenizer=str(tokenizer_dir),
        train_files=str(SAMPLE / "wiki.valid.raw.gz"),
        validation_files=str(SAMPLE / "wiki.valid.raw.gz"),
        max_seq_length=32,
        batch_size=batch_size,
        cache_dir=str(cache_dir),
        max_train_samples=n_train,
        max_eval_samples=16,
    )


def make_module(teacher_dir: Path, space: SearchSpace, lr: float = 3e-3, seed: int = 0) -> SupernetDistillation:
    return SupernetDistillation(
        space=space,
        teacher=FrozenTeacher(str(teacher_dir), space.num_blocks),
        optimizer=partial(torch.optim.AdamW, lr=lr),
        seed=seed,
    )


def trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu", devices=1, max_steps=4, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path, limit_val_batches=2,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


def test_training_lowers_every_block_loss(tiny_teacher_dir, tiny_space, cache_dir, tmp_path):
    L.seed_everything(0)
    data, module = make_data(tiny_teacher_dir, cache_dir), make_module(tiny_teacher_dir, tiny_space)
    t = trainer(tmp_path, max_steps=40, val_check_interval=40, check_val_every_n_epoch=None)
    before = t.validate(module, datamodule=data, verbose=False)[0]
    t.fit(module, datamodule=data)
    after = t.validate(module, datamodule=data, verbose=False)[0]
    for n in range(tiny_space.num_blocks):
        assert after[f"val/block{n}_mse"] < 0.8 * before[f"val/block{n}_mse"], (before, after)
    assert module.last_arch is not None and not module.teacher.model.training


def test_checkpoint_excludes_teacher_and_refuses_another_space(tiny_teacher_dir, tiny_space, cache_dir, tmp_path):
    data, module = make_data(tiny_teacher_dir, cache_dir), make_module(tiny_teacher_dir, tiny_space)
    t = trainer(tmp_path, max_steps=2)
    t.fit(module, datamodule=data)
    path = tmp_path / "supernet.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["state_dict"] and all(key.startswith("supernet.") for key in ckpt["state_dict"])
    assert ckpt["nas_bert"]["space"] == tiny_space.to_dict()

    other = SearchSpace(hidden_sizes=(16, 32), ops=("mha", "ffn"), num_blocks=3, slots_per_block=2, head_dim=8,
                        name="other")
    with pytest.raises(ArchitectureError, match=r"differs from the configured space 'other' in ops"):
        trainer(tmp_path, max_steps=3).fit(make_module(tiny_teacher_dir, other), datamodule=data, ckpt_path=path)
    # the same space resumes
    trainer(tmp_path, max_steps=3).fit(make_module(tiny_teacher_dir, tiny_space), datamodule=data, ckpt_path=path)


def test_block_count_mismatch_is_refused(tiny_teacher_dir, tiny_space):
    with pytest.raises(ArchitectureError, match="space has 3 blocks but the teacher was cut into 2"):
        SupernetDistillation(tiny_space, FrozenTeacher(str(tiny_teacher_dir), 2), optimizer=torch.optim.AdamW)


def test_bf16_mixed_precision_trains(tiny_teacher_dir, tiny_space, cache_dir, tmp_path):
    data, module = make_data(tiny_teacher_dir, cache_dir), make_module(tiny_teacher_dir, tiny_space)
    t = trainer(tmp_path, max_steps=3, precision="bf16-mixed", limit_val_batches=1, val_check_interval=3,
                check_val_every_n_epoch=None)
    t.fit(module, datamodule=data)
    losses = [t.callback_metrics[k] for k in ("train/loss", "val/loss")]
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses)  # MSE is taken in fp32


def test_accumulated_micro_batches_train_one_path(tiny_teacher_dir, tiny_space, cache_dir, tmp_path):
    data, module = make_data(tiny_teacher_dir, cache_dir), make_module(tiny_teacher_dir, tiny_space)
    t = trainer(tmp_path, max_steps=3, accumulate_grad_batches=2, callbacks=[RecordPaths(tmp_path)],
                limit_val_batches=0)
    t.fit(module, datamodule=data)
    paths = (tmp_path / "paths_rank0.jsonl").read_text().splitlines()
    assert len(paths) == 6
    assert all(paths[i] == paths[i + 1] for i in (0, 2, 4)) and len({paths[0], paths[2], paths[4]}) > 1


class RecordPaths(L.Callback):
    """Writes each rank's sampled paths and final weights to files for the test to compare."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        with open(self.out / f"paths_rank{trainer.global_rank}.jsonl", "a") as f:
            f.write(json.dumps(pl_module.last_arch.to_dict()) + "\n")

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.supernet.state_dict(), self.out / f"weights_rank{trainer.global_rank}.pt")


class RecordAlivePerRank(L.Callback):
    def __init__(self, shrinking: ProgressiveShrinking, out: Path) -> None:
        self.shrinking, self.out = shrinking, out

    def on_train_end(self, trainer, pl_module):
        data = {"alive": [a.tolist() for a in self.shrinking.alive], "rounds": self.shrinking.rounds,
                "module_alive": [a.tolist() for a in pl_module.alive]}
        (self.out / f"alive_rank{trainer.global_rank}.json").write_text(json.dumps(data))


@pytest.mark.slow
def test_ddp_ranks_train_the_same_paths_shrink_alike_and_end_identical(tiny_teacher_dir, tiny_space, cache_dir,
                                                                        tmp_path):
    """2 processes: the same path every step, the candidate scoring split over the ranks yet every round's survivors
    agreed, identical final weights (the ranks saw different shards)."""
    data = make_data(tiny_teacher_dir, cache_dir, n_train=16, batch_size=4)  # 2 steps per epoch per rank
    module = make_module(tiny_teacher_dir, tiny_space)
    shrinking = ProgressiveShrinking(num_bins=2, eval_batches=1, min_per_bin=2, warmup_epochs=1,
                                     candidates_per_bin=100)
    t = trainer(tmp_path, devices=2, strategy="ddp_fork_find_unused_parameters_true", max_steps=-1, max_epochs=3,
                callbacks=[shrinking, RecordPaths(tmp_path), RecordAlivePerRank(shrinking, tmp_path)],
                limit_val_batches=0)
    t.fit(module, datamodule=data)
    paths = [(tmp_path / f"paths_rank{r}.jsonl").read_text().splitlines() for r in (0, 1)]
    assert len(paths[0]) == 6 and paths[0] == paths[1]
    assert len(set(paths[0])) > 1  # the path changes between steps
    w0, w1 = (torch.load(tmp_path / f"weights_rank{r}.pt") for r in (0, 1))
    initial = make_module(tiny_teacher_dir, tiny_space).supernet.state_dict()
    changed = 0
    for key in w0:
        torch.testing.assert_close(w0[key], w1[key], rtol=0, atol=0, msg=key)
        changed += not torch.equal(w0[key], initial[key]) if initial[key].shape == w0[key].shape else 0
    assert changed > 0  # training happened (and ranks, fed different shards, stayed in sync)
    ranks = [json.loads((tmp_path / f"alive_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1] and ranks[0]["rounds"] == 3  # one round after each of the 3 epochs
    assert ranks[0]["alive"] == ranks[0]["module_alive"]  # training samples from the shrunk sets
    bins = assign_bins(tiny_space.candidate_params, tiny_space.candidate_flops(128).astype(float), 2)
    assert sum(len(a) for a in ranks[0]["alive"]) < 3 * int((bins >= 0).sum())  # rounds really pruned


def test_the_teacher_state_cache_serves_later_epochs_the_states_the_teacher_gives(tiny_teacher_dir, tiny_space,
                                                                                 cache_dir, tmp_path):
    """16 sequences in 2 steps per epoch, 4 steps: the second epoch reads every state from the cache, and those
    are the teacher's block states to float16 precision."""
    data = make_data(tiny_teacher_dir, cache_dir, n_train=16)
    module = SupernetDistillation(tiny_space, FrozenTeacher(str(tiny_teacher_dir), tiny_space.num_blocks),
                                  partial(torch.optim.AdamW, lr=1e-3),
                                  teacher_cache={"dir": str(tmp_path / "states"), "capacity": 16})
    trainer(tmp_path, max_steps=4, limit_val_batches=0).fit(module, datamodule=data)
    assert module.teacher_cache.hits == 16 and module.teacher_cache.misses == 16
    batch = next(iter(data.train_dataloader()))
    cached, direct = module.teacher_states(batch, train=True), module.teacher_states(batch)
    assert len(cached) == tiny_space.num_blocks + 1
    for a, b in zip(cached, direct):
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3)
