"""Progressive shrinking: binning, halving down to m, stopping, and exact save/resume of its state."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from nas_bert.data import CorpusDataModule
from nas_bert.lit import SupernetDistillation
from nas_bert.nas.shrinking import ProgressiveShrinking, assign_bins, halve
from nas_bert.teacher import FrozenTeacher

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw.gz"


def test_bins_follow_the_paper_rule():
    params = np.array([10, 25, 26, 50, 75, 100, 60])
    latency = np.array([1.0, 2.5, 2.6, 5.0, 7.5, 10.0, 9.0])
    # 4 bins of width 25%: (0,25] (25,50] (50,75] (75,100]; the last candidate is 60% params, 90% latency
    assert assign_bins(params, latency, 4).tolist() == [0, 0, 1, 1, 2, 3, -1]


def test_halve_drops_the_worse_half_but_keeps_m():
    alive = np.arange(10)
    chosen = np.array([1, 3, 5, 7])
    scores = np.array([0.4, 0.1, 0.9, 0.2])  # 5 and 1 are worst
    assert halve(alive, scores, chosen, min_alive=2).tolist() == [0, 2, 3, 4, 6, 7, 8, 9]
    assert halve(alive, scores, chosen, min_alive=9).tolist() == [0, 1, 2, 3, 4, 6, 7, 8, 9]  # only 1 may go
    assert halve(alive, scores, chosen, min_alive=10).tolist() == alive.tolist()


def expected_counts(count: int, per_bin: int, m: int) -> list[int]:
    """Alive count of one bin after each round: drop min(scored // 2, alive - m) per round."""
    out = []
    while count > m:
        count -= min(min(count, per_bin) // 2, count - m)
        out.append(count)
    return out


class RecordRounds(L.Callback):
    def __init__(self, shrinking: ProgressiveShrinking, out: Path | None = None) -> None:
        self.shrinking, self.out, self.counts, self.alive = shrinking, out, [], []

    def on_train_epoch_end(self, trainer, pl_module):  # runs after the shrinking callback's hook
        self.counts.append(self.shrinking.alive_per_bin().copy())
        self.alive.append([a.tolist() for a in self.shrinking.alive])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.out is not None:
            with open(self.out, "a") as f:
                f.write(json.dumps([trainer.global_step, pl_module.last_arch.to_dict()]) + "\n")


def setup_run(tiny_teacher_dir, tiny_space, tmp_path, **shrink_kwargs):
    L.seed_everything(0)
    data = CorpusDataModule(tokenizer=str(tiny_teacher_dir), train_files=str(SAMPLE), validation_files=str(SAMPLE),
                            max_seq_length=32, batch_size=4, cache_dir=str(tmp_path / "cache"), max_train_samples=12,
                            max_eval_samples=8)
    module = SupernetDistillation(tiny_space, FrozenTeacher(str(tiny_teacher_dir), 3),
                                  optimizer=partial(torch.optim.AdamW, lr=1e-3))
    shrinking = ProgressiveShrinking(num_bins=2, eval_batches=1, min_per_bin=2, warmup_epochs=1, **shrink_kwargs)
    return data, module, shrinking


def make_trainer(tmp_path, callbacks, max_epochs, **kwargs):
    return L.Trainer(accelerator="cpu", max_epochs=max_epochs, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
                     callbacks=callbacks, **kwargs)


@pytest.mark.parametrize("per_bin", [100, 2])
def test_each_round_halves_every_bin_and_training_stops_at_m(tiny_teacher_dir, tiny_space, tmp_path, per_bin):
    data, module, shrinking = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=per_bin)
    record = RecordRounds(shrinking)
    trainer = make_trainer(tmp_path, [shrinking, record], max_epochs=30, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    initial = np.stack([np.bincount(shrinking.bins[shrinking.bins >= 0], minlength=2)] * 3)  # (blocks, bins)
    rounds = [expected_counts(int(c), per_bin, 2) for c in initial.ravel()]
    n_rounds = max(len(r) for r in rounds)
    assert shrinking.done and shrinking.rounds == n_rounds and trainer.current_epoch == n_rounds  # 1 warm-up epoch
    for i, counts in enumerate(record.counts[:n_rounds]):
        want = [r[min(i, len(r) - 1)] if r else c for r, c in zip(rounds, initial.ravel())]
        assert counts.ravel().tolist() == want
    assert (shrinking.alive_per_bin() <= 2).all() and module.alive is shrinking.alive
    for alive in shrinking.alive:  # training sampled only alive candidates after the last round
        assert set(alive) <= set(np.flatnonzero(shrinking.bins >= 0))


def test_shrinking_state_survives_save_and_resume(tiny_teacher_dir, tiny_space, tmp_path):
    """Resume after round 1: the same alive sets and the same sampled paths as without the interruption."""
    data, module, shrinking = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=100)
    paths_a = tmp_path / "a.jsonl"
    record_a = RecordRounds(shrinking, paths_a)
    make_trainer(tmp_path, [shrinking, record_a], max_epochs=3, enable_checkpointing=False).fit(module, datamodule=data)

    data, module, shrinking_b = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=100)
    t = make_trainer(tmp_path, [shrinking_b], max_epochs=1, enable_checkpointing=False)
    t.fit(module, datamodule=data)
    alive_after_round1_b = [a.copy() for a in shrinking_b.alive]
    t.save_checkpoint(tmp_path / "round1.ckpt")

    data, module, shrinking_c = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=100)
    paths_c = tmp_path / "c.jsonl"
    resumed = make_trainer(tmp_path, [shrinking_c, RecordRounds(shrinking_c, paths_c)], max_epochs=2,
                           enable_checkpointing=False)
    resumed.fit(module, datamodule=data, ckpt_path=tmp_path / "round1.ckpt")
    assert shrinking_c.rounds == 2
    # restored exactly, and the paths of the epoch after the resume equal the uninterrupted run's
    a_lines = paths_a.read_text().splitlines()
    c_lines = paths_c.read_text().splitlines()
    steps_per_epoch = len(a_lines) // 3
    assert c_lines == a_lines[steps_per_epoch:2 * steps_per_epoch]
    ckpt = torch.load(tmp_path / "round1.ckpt", weights_only=False)
    saved = next(v for k, v in ckpt["callbacks"].items() if "ProgressiveShrinking" in k)
    assert saved["alive"] == [a.tolist() for a in alive_after_round1_b] == record_a.alive[0]
    assert saved["rounds"] == 1
    assert record_a.alive[1] != record_a.alive[0]  # round 2 changed the sets, so the comparison above is not vacuous


def test_resuming_a_finished_run_keeps_its_state_file(tiny_teacher_dir, tiny_space, tmp_path):
    """The state file (what selection reads) must hold the restored sets, not the unshrunk ones."""
    state = tmp_path / "shrinking.json"
    data, module, shrinking = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=100,
                                        state_file=str(state))
    t = make_trainer(tmp_path, [shrinking], max_epochs=30, enable_checkpointing=False)
    t.fit(module, datamodule=data)
    assert shrinking.done
    t.save_checkpoint(tmp_path / "done.ckpt")
    finished = json.loads(state.read_text())["alive"]

    data, module, again = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=100,
                                    state_file=str(state))
    make_trainer(tmp_path, [again], max_epochs=30, enable_checkpointing=False).fit(
        module, datamodule=data, ckpt_path=tmp_path / "done.ckpt")
    assert json.loads(state.read_text())["alive"] == finished == [a.tolist() for a in again.alive]


@pytest.mark.parametrize("tau, first_round_epoch", [(-1.0, 1), (1.0, 2)])
def test_shrinking_waits_for_the_ranking_to_settle(tiny_teacher_dir, tiny_space, tmp_path, tau, first_round_epoch):
    """One warm-up epoch. tau -1: settled as soon as two epochs of probe losses can be compared (after epoch 1);
    tau 1 (a ranking that does not move at all): not reached, so the rounds start once max_settle_epochs=2 have
    passed (after epoch 2); the state a resume needs is kept."""
    data, module, shrinking = setup_run(tiny_teacher_dir, tiny_space, tmp_path, candidates_per_bin=100,
                                        settle_tau=tau, settle_probes=12, max_settle_epochs=2)
    record = RecordRounds(shrinking)
    make_trainer(tmp_path, [shrinking, record], max_epochs=4, enable_checkpointing=False).fit(module, datamodule=data)
    full = np.bincount(shrinking.bins[shrinking.bins >= 0], minlength=2)
    unshrunk = [int(i) for i, c in enumerate(record.counts) if (c == full).all()]
    assert unshrunk == list(range(first_round_epoch))
    assert shrinking.settled and len(shrinking.probe_losses) == 3 and len(shrinking.probe_losses[0]) >= 6
    assert shrinking.state_dict()["settle_epochs"] == first_round_epoch + 1
