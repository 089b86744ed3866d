"""`python train.py`: fit the LightningModule and data configured in conf/train.yaml.

Generic stage runner; see README.md for the stages and their configs.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

import nas_bert  # noqa: F401  (registers config resolvers)
from nas_bert.stages.fit import run_fit


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = run_fit(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
