"""`python train.py`: pre-train a searched architecture with KD and export it (stage 3, the default);
`experiment=finetune_glue` / `finetune_squad` fine-tune a model with task KD (stage 4); `stage=fit` fits
any configured LightningModule; `experiment=ptq_glue` scores a fine-tuned student's post-training quantized
forms. See README.md.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

from nas_bert import register_resolvers
from nas_bert.stages import STAGES
from nas_bert.utils.dependency_warnings import quiet_dependency_warnings

register_resolvers()  # ${package_dir:...} and ${sweep_name:...} in conf/
quiet_dependency_warnings()  # torchdata's and Lightning's deprecations of torch APIs (nas_bert/utils)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    if cfg.stage not in STAGES or cfg.stage == "search":
        raise ValueError(f"unknown stage {cfg.stage!r}; choose one of pretrain, finetune, fit, ptq")
    metrics = STAGES[cfg.stage](cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
