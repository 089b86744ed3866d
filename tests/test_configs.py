"""Every config composes, and every config that can run on a CPU-only machine instantiates."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from nas_bert.space import SearchSpace
from nas_bert.stages.common import instantiate_group

CONF = Path(__file__).resolve().parents[1] / "conf"


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def search_cfg(tmp_path: Path, *overrides: str, config: str = "search", return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=[f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache",
                                          *overrides], return_hydra_config=return_hydra_config)


def test_default_config_resolves(tmp_path):
    cfg = search_cfg(tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["teacher"]["num_blocks"] == resolved["space"]["num_blocks"] == 3
    assert resolved["data"]["tokenizer"] == resolved["teacher"]["name_or_path"]
    assert Path(resolved["data"]["train_files"]).is_file()


@pytest.mark.parametrize("space", names("space"))
def test_every_space_instantiates(tmp_path, space):
    built = instantiate(search_cfg(tmp_path, f"space={space}").space)
    assert isinstance(built, SearchSpace) and built.name == space
    if space == "nas_bert":
        assert built.num_candidates == 97_650


@pytest.mark.parametrize("trainer", names("trainer"))
def test_every_trainer_composes_and_cpu_ones_instantiate(tmp_path, trainer):
    cfg = search_cfg(tmp_path, f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    if cfg.trainer.accelerator == "cpu":
        built = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert isinstance(built, L.Trainer) and built.num_devices == cfg.trainer.devices


@pytest.mark.parametrize("experiment", names("experiment"))
def test_every_experiment_composes(tmp_path, experiment):
    finetune = experiment != "paper_bert_base"  # train.py's fine-tuning experiments; that one is search.py's
    cfg = search_cfg(tmp_path, f"experiment={experiment}", config="train" if finetune else "search")
    OmegaConf.to_container(cfg, resolve=True)
    if finetune:
        kind = "squad" if "squad" in experiment else "glue"
        assert cfg.stage == "finetune" and cfg.data._target_ == f"nas_bert.data.{kind}.{kind.capitalize()}DataModule"
        assert cfg.model._target_ == f"nas_bert.lit.{kind.capitalize()}FineTuning" and "train_files" not in cfg.data
        assert cfg.trainer.limit_val_batches == 1.0  # metrics need the whole eval set
    else:
        assert cfg.teacher.name_or_path == "bert-base-uncased" and cfg.space.num_blocks == 4


@pytest.mark.parametrize("config", ["glue=default", "glue=local", "squad=v1", "squad=v2", "squad=local_dev_split"])
def test_every_finetune_data_config_composes(tmp_path, config):
    kind = config.split("=")[0]
    cfg = search_cfg(tmp_path, f"experiment=finetune_{kind}", f"data/{config}", config="train")
    assert OmegaConf.to_container(cfg.data, resolve=True)["tokenizer"] == cfg.teacher.name_or_path


def test_callbacks_and_loggers_instantiate(tmp_path):
    cfg = search_cfg(tmp_path)
    callbacks, loggers = instantiate_group(cfg.callbacks), instantiate_group(cfg.logger)
    assert {type(c).__name__ for c in callbacks} >= {"ModelCheckpoint", "LearningRateMonitor", "ThroughputMonitor"}
    assert {type(lg).__name__ for lg in loggers} == {"CSVLogger", "WandbLogger"}


@pytest.mark.parametrize("corpus", names("data/corpus"))
def test_every_corpus_config_composes(tmp_path, corpus):
    cfg = search_cfg(tmp_path, f"data/corpus={corpus}")
    assert cfg.data._target_ == "nas_bert.data.CorpusDataModule"
    if corpus == "wikitext2_sample":
        assert instantiate(cfg.data).seq_len == 128


def test_supernet_model_instantiates_with_a_local_teacher(tmp_path, tiny_teacher_dir):
    cfg = search_cfg(tmp_path, "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}")
    model = instantiate(cfg.model)
    assert model.supernet.teacher_hidden == 48 and model.space.name == "tiny"


def test_slurm_launcher_runs_one_task_per_gpu(tmp_path):
    cfg = search_cfg(tmp_path, "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2",
                     "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", return_hydra_config=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["tasks_per_node"] == 4
    assert launcher["nodes"] == cfg.trainer.num_nodes == 2 and launcher["max_num_timeout"] > 0


def test_optuna_sweep_config_composes(tmp_path):
    cfg = search_cfg(tmp_path, "experiment=finetune_glue", "hparams_search=finetune_optuna", config="train",
                     return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"model.optimizer.lr", "model.kd_weight", "data.batch_size"}
    assert cfg.optimized_metric == "val/score"


@pytest.mark.parametrize(("world", "expected"), [(1, 8), (2, 4), (8, 1)])
def test_global_batch_size_sets_accumulation(world, expected):
    from nas_bert.stages.common import accumulation_for

    assert accumulation_for(256, 32, world) == expected


def test_global_batch_size_that_does_not_divide_is_refused():
    from nas_bert.stages.common import accumulation_for

    with pytest.raises(ValueError, match=r"not a multiple of data.batch_size x devices x nodes = 32 x 3 = 96"):
        accumulation_for(256, 32, 3)
