"""Evaluation metrics that count each example once under DDP: GLUE, teacher loyalty, SQuAD."""

from nas_bert.metrics.dedup import DedupMetric, first_occurrence
from nas_bert.metrics.glue import GLUE_TASKS, GlueMetrics, canonical_task, glue_average, glue_scores
from nas_bert.metrics.loyalty import js_distance, label_loyalty, prob_loyalty, regression_loyalty
from nas_bert.metrics.squad import SquadMetric, squad_scores

__all__ = [
    "GLUE_TASKS",
    "DedupMetric",
    "GlueMetrics",
    "SquadMetric",
    "canonical_task",
    "first_occurrence",
    "glue_average",
    "glue_scores",
    "js_distance",
    "label_loyalty",
    "prob_loyalty",
    "regression_loyalty",
    "squad_scores",
]
