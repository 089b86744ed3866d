"""What every stage does around its Trainer: start the run (checks, recipe), instantiate callbacks and loggers."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from nas_bert.hub import check_push_settings, push_model
from nas_bert.stages.recipe import check_local_inputs, save_recipe
from nas_bert.stages.upgrade import upgrade_config
from nas_bert.utils.cuda import use_tensor_cores

log = logging.getLogger(__name__)

WANDB_RUN_ID = "wandb_run_id"  # in the run folder: the W&B run a resumed job continues


def build(node: DictConfig, *args: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` with plain dicts and lists as arguments (so that hyperparameters saved in
    checkpoints load with `weights_only=True`), raising the constructor's own error (its type and message name
    the problem and the fix) rather than Hydra's wrapper around it."""
    kwargs.setdefault("_convert_", "all")
    try:
        return instantiate(node, *args, **kwargs)
    except InstantiationException as err:
        cause = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is err:
            raise
        raise cause from None


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a config group (callbacks, loggers); None entries are skipped."""
    if not group:
        return []
    return [build(node) for node in group.values() if node is not None and "_target_" in node]


class AcceleratorError(RuntimeError):
    """The trainer config asks for a device this machine does not have."""


def check_accelerator(trainer: DictConfig | None) -> None:
    """A GPU trainer (`trainer=gpu`, `trainer=ddp`) on a machine without CUDA fails here, before anything is built."""
    import torch

    accelerator = str((trainer or {}).get("accelerator", "cpu"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        raise AcceleratorError(
            f"trainer.accelerator={accelerator} needs a CUDA device, and this machine has none (torch "
            f"{torch.__version__}, {built}). Use trainer=cpu (trainer=ddp_sim runs DDP as processes on the CPU), "
            f"or run on a GPU machine with a CUDA build of torch")


def start_run(cfg: DictConfig) -> Path:
    """Check the device, upgrade a recipe of an older nas-bert, check its local inputs, seed everything and write
    the recipe; returns the run's folder."""
    check_accelerator(cfg.get("trainer"))
    check_push_settings(cfg.get("export"))
    upgrade_config(cfg)
    check_local_inputs(cfg)
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    save_recipe(cfg, output_dir, output_dir / "checkpoints")
    return output_dir


def push_export(cfg: DictConfig, folder: Path) -> None:
    """Push an exported model folder to the Hub when `export.push_to_hub` is on (nas_bert.hub)."""
    export = cfg.get("export")
    if export and export.get("push_to_hub"):
        url = push_model(folder, export.hub_model_id, bool(export.get("private", True)))
        log.info("pushed %s to the Hub: %s", folder, url)


def log_model_artifact(loggers: list[Logger], folder: Path) -> None:
    """The exported model folder as a W&B artifact of type `model` (its card's facts as metadata), when W&B is on."""
    wandb_loggers = [logger for logger in loggers if isinstance(logger, WandbLogger)]
    if not wandb_loggers:
        return
    import wandb

    from nas_bert.reports.model_card import read_record

    run = folder.parent.name if folder.name == "model" else folder.name
    artifact = wandb.Artifact(re.sub(r"[^\w.-]+", "-", f"model-{run}"), type="model", metadata=read_record(folder))
    artifact.add_dir(str(folder))
    for logger in wandb_loggers:
        logger.experiment.log_artifact(artifact)


def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Send the resolved config to every logger (W&B shows it as the run config)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:
        logger.log_hyperparams(container)


def resumed_run_dir(cfg: DictConfig) -> Path | None:
    """The run folder `ckpt_path` resumes (None when not resuming): a checkpoint file's own run folder
    (checkpoints live in <run>/checkpoints/), else (`last`, or any other value Lightning resolves) this run's."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return None
    return Path(ckpt).resolve().parent.parent if Path(ckpt).is_file() else Path(cfg.paths.output_dir)


def instantiate_loggers(cfg: DictConfig) -> list[Logger]:
    """The configured loggers; a resumed run continues its W&B run (the id saved in its run folder)."""
    run_dir = resumed_run_dir(cfg)
    id_file = run_dir / WANDB_RUN_ID if run_dir is not None else None
    resume_id = id_file.read_text().strip() if id_file is not None and id_file.is_file() else None
    loggers = []
    for node in (cfg.get("logger") or {}).values():
        if node is None or "_target_" not in node:
            continue
        if resume_id and issubclass(get_class(node._target_), WandbLogger):
            loggers.append(build(node, id=resume_id, resume="allow"))
            log.info("resuming W&B run %s", resume_id)
        else:
            loggers.append(build(node))
    return loggers


def remember_wandb_run(loggers: list[Logger], output_dir: Path) -> None:
    """Write the W&B run id into the run folder (global rank 0), for a later resume to continue the run."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and rank_zero_only.rank == 0:
            (output_dir / WANDB_RUN_ID).write_text(str(logger.version))


def accumulation_for(global_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """Micro-batches per optimizer step that keep `global_batch_size` = per-device batch x devices x nodes x
    accumulation, whatever the number of devices (so the learning rate needs no change)."""
    per_step = per_device_batch_size * world_size
    if global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size={global_batch_size} is not a multiple of data.batch_size x devices x nodes = "
            f"{per_device_batch_size} x {world_size} = {per_step}; change data.batch_size or global_batch_size")
    return global_batch_size // per_step


def build_trainer(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> L.Trainer:
    callbacks = instantiate_group(cfg.get("callbacks")) + list(extra_callbacks or [])
    loggers = instantiate_loggers(cfg)
    trainer = build(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    use_tensor_cores(trainer.strategy.root_device, cfg.get("float32_matmul_precision", "high"))
    if cfg.get("global_batch_size"):
        trainer.accumulate_grad_batches = accumulation_for(cfg.global_batch_size, cfg.data.batch_size,
                                                           trainer.world_size)
        log.info("global batch %d = %d per device x %d devices x %d accumulated", cfg.global_batch_size,
                 cfg.data.batch_size, trainer.world_size, trainer.accumulate_grad_batches)
    log_config(loggers, cfg)
    remember_wandb_run(loggers, Path(cfg.paths.output_dir))
    return trainer


def finish_loggers(trainer: L.Trainer) -> None:
    """Close W&B runs so that multirun jobs do not write into each other."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish()
