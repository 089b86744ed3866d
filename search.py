"""NAS-BERT search: `python search.py` trains the supernet with progressive shrinking and selects one
architecture per budget (stages 1 and 2); `python search.py +pipeline=cpu_demo` runs every stage.

All settings come from conf/search.yaml and its groups; see README.md for common overrides.
"""

import os
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))

import hydra
from omegaconf import DictConfig

from nas_bert import register_resolvers
from nas_bert.pipeline.run import run_pipeline
from nas_bert.stages.search import run_search
from nas_bert.utils.dependency_warnings import quiet_dependency_warnings

register_resolvers()  # ${package_dir:...} and ${sweep_name:...} in conf/
quiet_dependency_warnings()  # torchdata's and Lightning's deprecations of torch APIs (nas_bert/utils)


@hydra.main(version_base="1.3", config_path="conf", config_name="search")
def main(cfg: DictConfig) -> float | None:
    if cfg.get("pipeline"):  # `+pipeline=<name>`: every stage, one run folder each
        run_pipeline(cfg)
        return None
    metrics = run_search(cfg)
    return metrics.get(cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
