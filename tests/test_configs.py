"""Every option of every config group composes with debug=fast, and instantiates where this CPU-only, offline
machine can build it (the others fail with the error that names the fix)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf

from nas_bert.data import CorpusDataModule
from nas_bert.data.glue import GlueDataModule
from nas_bert.data.squad import SquadDataModule
from nas_bert.space import SearchSpace
from nas_bert.stages.common import accumulation_for, build, instantiate_group
from nas_bert.stages.upgrade import upgrade_config
from nas_bert.teacher import FrozenTeacher, TeacherError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TEXT = ROOT / "data" / "corpus" / "wikitext-2-raw" / "wiki.valid.raw.gz"
GLUE = ROOT / "tests" / "fixtures" / "glue"
SQUAD = ROOT / "tests" / "fixtures" / "squad" / "dev-v1.1-sample.json"
# the groups each test below covers; a new group must be added to one of them
COVERED = {"callbacks", "data/corpus", "data/glue", "data/squad", "debug", "experiment", "finetune", "hparams_search",
           "hydra", "hydra/launcher", "logger", "model", "model/optimization", "paths", "pipeline", "search", "space",
           "teacher", "trainer"}


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def config(tmp_path: Path, *overrides: str, name: str = "search", hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache",
                                        "debug=fast", *overrides], return_hydra_config=hydra)


def test_every_group_is_covered():
    groups = {str(p.parent.relative_to(CONF)) for p in CONF.rglob("*.yaml") if p.parent != CONF}
    assert groups == COVERED


def test_default_configs_resolve(tmp_path):
    for name in ("search", "train"):
        resolved = OmegaConf.to_container(config(tmp_path, name=name), resolve=True)
        assert resolved["teacher"]["num_blocks"] == resolved["space"]["num_blocks"] == 3
        assert resolved["data"]["tokenizer"] == resolved["teacher"]["name_or_path"]
        assert Path(resolved["data"]["train_files"]).is_file() and resolved["data"]["max_train_samples"] == 64


@pytest.mark.parametrize("teacher", names("teacher"))
def test_every_teacher_instantiates_or_names_the_fix_offline(tmp_path, teacher):
    cfg = config(tmp_path, f"teacher={teacher}")
    if teacher == "bert_base":  # a hub id: offline, the error says what to do
        with pytest.raises(TeacherError, match="HF_HUB_OFFLINE=1"):
            build(cfg.teacher)
        return
    assert isinstance(build(cfg.teacher), FrozenTeacher)


@pytest.mark.parametrize("space", names("space"))
def test_every_space_instantiates(tmp_path, space):
    built = build(config(tmp_path, f"space={space}").space)
    assert isinstance(built, SearchSpace) and built.name == space
    if space == "nas_bert":
        assert built.num_candidates == 97_650


@pytest.mark.parametrize("corpus", names("data/corpus"))
def test_every_corpus_instantiates(tmp_path, corpus):
    files = [f"data.train_files={TEXT}"] if corpus in ("base", "local_text", "gutenberg") else []
    if corpus in ("base", "local_text"):
        files.append(f"data.validation_files={TEXT}")
    data = build(config(tmp_path, f"data/corpus={corpus}", *files).data)
    assert isinstance(data, CorpusDataModule) and data.max_seq_length == 128


@pytest.mark.parametrize(("group", "option"), [("glue", o) for o in names("data/glue")]
                         + [("squad", o) for o in names("data/squad")])
def test_every_finetuning_data_config_instantiates(tmp_path, group, option):
    local = {"local": f"data.data_dir={GLUE}", "local_dev_split": f"data.validation_file={SQUAD}"}
    overrides = [f"experiment=finetune_{group}", f"data/{group}={option}",
                 *([local[option]] if option in local else [])]
    data = build(config(tmp_path, *overrides, name="train").data)
    assert isinstance(data, GlueDataModule if group == "glue" else SquadDataModule)
    assert data.batch_size == 4


@pytest.mark.parametrize("model", names("model"))
def test_every_model_instantiates(tmp_path, model, tiny_teacher_dir):
    task = {"finetune_glue": ["experiment=finetune_glue"], "finetune_squad": ["experiment=finetune_squad"]}
    cfg = config(tmp_path, f"model={model}", "space=tiny", f"teacher.name_or_path={tiny_teacher_dir}",
                 *task.get(model, []), name="train")
    if model == "supernet":
        assert build(cfg.model).supernet.teacher_hidden == 48
    else:  # the stage passes the student / model and teacher it builds
        assert build(cfg.model, _partial_=True).func.__name__ == cfg.model._target_.rsplit(".", 1)[1]
    assert cfg.model.optimizer._target_ == "torch.optim.AdamW" and cfg.model.scheduler.name == "linear"


@pytest.mark.parametrize("callbacks", names("callbacks"))
def test_every_callbacks_group_instantiates(tmp_path, callbacks):
    built = instantiate_group(config(tmp_path, f"callbacks={callbacks}").callbacks)
    kinds = {type(c).__name__ for c in built}
    assert {"ModelCheckpoint", "RngStates", "RestoreLoaderState", "LearningRateMonitor"} <= kinds
    assert ("ThroughputMonitor" in kinds) == (callbacks in ("supernet", "pretrain"))


@pytest.mark.parametrize("logger", names("logger"))
def test_every_logger_instantiates(tmp_path, logger):
    kinds = {type(lg).__name__ for lg in instantiate_group(config(tmp_path, f"logger={logger}").logger)}
    assert kinds == {"csv": {"CSVLogger"}, "wandb": {"WandbLogger"}, "default": {"CSVLogger", "WandbLogger"}}[logger]


@pytest.mark.parametrize("trainer", names("trainer"))
def test_every_trainer_composes_and_cpu_ones_instantiate(tmp_path, trainer):
    cfg = config(tmp_path, f"trainer={trainer}")
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer" and cfg.trainer.max_steps == 6
    if cfg.trainer.accelerator == "cpu":
        built = build(cfg.trainer, logger=False, enable_progress_bar=False)
        assert isinstance(built, L.Trainer) and built.num_devices == cfg.trainer.devices


@pytest.mark.parametrize("search", names("search"))
def test_every_search_setting_instantiates_its_shrinking(tmp_path, search):
    cfg = config(tmp_path, f"search={search}")
    shrinking = build(cfg.search.shrinking, _partial_=True)
    assert shrinking.func.__name__ == "ProgressiveShrinking" and cfg.search.shrinking.num_bins == 2  # debug=fast
    assert cfg.search.selection.budgets[0].name == ("minilm_20pct" if search == "quick" else "nas_bert_5M")


@pytest.mark.parametrize("experiment", names("experiment"))
def test_every_experiment_composes_and_its_data_instantiates(tmp_path, experiment):
    finetune = experiment != "paper_bert_base"  # train.py's fine-tuning experiments; that one is search.py's
    local = ["data/glue=local", f"data.data_dir={GLUE}"] if "glue" in experiment else []
    cfg = config(tmp_path, f"experiment={experiment}", *local, name="train" if finetune else "search")
    OmegaConf.to_container(cfg, resolve=True)
    if finetune:
        assert cfg.stage == ("ptq" if experiment == "ptq_glue" else "finetune")
        assert cfg.trainer.limit_val_batches == 2  # debug=fast wins
        assert isinstance(build(cfg.data), GlueDataModule if "glue" in experiment else SquadDataModule)
        assert cfg.finetune.results_file.endswith("finetune/results.jsonl")
    else:
        assert cfg.teacher.name_or_path == "bert-base-uncased" and cfg.space.num_blocks == 4
        assert cfg.trainer.limit_train_batches == 3 and cfg.data.max_seq_length == 512


def test_the_pipeline_composes(tmp_path):
    cfg = config(tmp_path, "+pipeline=cpu_demo")
    assert cfg.pipeline.glue_tasks == ["rte", "mrpc", "stsb", "cola", "sst2"] and cfg.pipeline.budgets
    gpu = config(tmp_path, "+pipeline=gpu_study")  # the CPU study's recipe, on the GPU's latency setting
    assert gpu.pipeline.student == config(tmp_path, "+pipeline=cpu_study").pipeline.student
    assert "search.latency.batch_size=128" in gpu.pipeline.search and gpu.pipeline.latency.batch_size == 128


def test_slurm_launcher_runs_one_task_per_gpu(tmp_path):
    cfg = config(tmp_path, "hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2",
                 "hydra.launcher.nodes=2", "hydra.launcher.gpus_per_node=4", hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["tasks_per_node"] == 4
    assert launcher["nodes"] == cfg.trainer.num_nodes == 2 and launcher["max_num_timeout"] > 0
    assert cfg.hydra.job.chdir is False and cfg.paths.root_dir == str(ROOT)


def test_optuna_sweep_config_composes(tmp_path):
    cfg = config(tmp_path, "experiment=finetune_glue", "hparams_search=finetune_optuna", name="train", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"model.optimizer.lr", "model.kd_weight", "data.batch_size"}
    assert cfg.optimized_metric == "val/score"


def test_an_unknown_option_is_refused_with_the_options(tmp_path):
    with pytest.raises(MissingConfigException, match="minilm_l6"):
        config(tmp_path, "teacher=minilm")


def test_a_recipe_saved_by_nas_bert_0_1_is_upgraded():
    old = OmegaConf.create({"teacher": {"_target_": "nas_bert.teacher.Teacher"},
                            "model": {"teacher": {"_target_": "nas_bert.teacher.Teacher"}},
                            "data": {"seq_len": 64, "max_train_sequences": 8, "max_val_sequences": 4}})
    new = upgrade_config(old)
    assert new.teacher._target_ == new.model.teacher._target_ == "nas_bert.teacher.FrozenTeacher"
    assert dict(new.data) == {"max_seq_length": 64, "max_train_samples": 8, "max_eval_samples": 4}
    with pytest.raises(ValueError, match="keep data.max_seq_length"):
        upgrade_config(OmegaConf.create({"data": {"seq_len": 64, "max_seq_length": 32}}))


@pytest.mark.parametrize(("world", "expected"), [(1, 8), (2, 4), (8, 1)])
def test_global_batch_size_sets_accumulation(world, expected):
    assert accumulation_for(256, 32, world) == expected


def test_global_batch_size_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match=r"32 x 3 = 96"):
        accumulation_for(256, 32, 3)
