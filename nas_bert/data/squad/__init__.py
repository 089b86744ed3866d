"""SQuAD v1.1 / v2.0 span-extraction data: reading the sources (``source``), article splits and subsets
(``splits``), features (``features``) and the DataModule (``datamodule``). Post-processing of the
predictions lives next to the metric, in :mod:`nas_bert.metrics.squad_postprocess`.

The names below are the public API; ``nas_bert.data.squad.SquadDataModule`` is the Hydra target.
"""

from nas_bert.data.squad.datamodule import SquadDataModule
from nas_bert.data.squad.features import prepare_eval_features, prepare_train_features
from nas_bert.data.squad.source import EXAMPLE_FEATURES, load_squad_hub, load_squad_json, normalize_version
from nas_bert.data.squad.splits import seeded_subset, split_by_article

__all__ = [
    "EXAMPLE_FEATURES",
    "SquadDataModule",
    "load_squad_hub",
    "load_squad_json",
    "normalize_version",
    "prepare_eval_features",
    "prepare_train_features",
    "seeded_subset",
    "split_by_article",
]
