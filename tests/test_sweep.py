"""Hydra's Optuna sweeper over fine-tuning: trials are jobs of `python train.py -m`, each returning its score and
closing its W&B run in the sweep's group. The multirun launcher is the point, so the entry script runs as it is."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers.runs import GLUE, run_script


@pytest.mark.slow
def test_optuna_sweep_runs_trials_as_grouped_wandb_runs(tiny_teacher_dir, tmp_path):
    sweep = run_script("train.py", tmp_path, "-m", "experiment=finetune_glue", "hparams_search=finetune_optuna",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}", f"paths.log_dir={tmp_path}",
                       f"paths.cache_dir={tmp_path / 'cache'}", f"teacher.name_or_path={tiny_teacher_dir}",
                       f"data.data_dir={GLUE}", "data.task=rte", "data.batch_size=4", "trainer.max_epochs=1",
                       "data.num_workers=0", "hydra.sweeper.n_trials=2")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"model.optimizer.lr", "model.kd_weight"}  # batch size: fixed above
    scores = [json.loads(line)["final"]["val/score"] for line in open(tmp_path / "finetune" / "results.jsonl")]
    assert len(scores) == 2 and best["best_value"] == pytest.approx(max(scores))  # each trial returned its score
    assert len(sorted((tmp_path / "sweep").glob("*/wandb/offline-run-*"))) == 2  # one W&B run per trial, closed
    groups = {yaml.safe_load((tmp_path / "sweep" / job / "config.yaml").read_text())["logger"]["wandb"]["group"]
              for job in ("0", "1")}
    assert groups == {"sweep-sweep"}
