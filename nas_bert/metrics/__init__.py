"""Evaluation metrics that count each example once under DDP: GLUE, teacher loyalty, SQuAD (scores and the
post-processing of logits into answers)."""

from nas_bert.metrics.dedup import DedupMetric, first_occurrence
from nas_bert.metrics.glue import GlueMetrics, canonical_task, glue_average, glue_scores, task_of
from nas_bert.metrics.loyalty import js_distance, label_loyalty, prob_loyalty, regression_loyalty
from nas_bert.metrics.squad import squad_scores
from nas_bert.metrics.squad_postprocess import complete_examples, postprocess_predictions, unique_features

__all__ = [
    "DedupMetric",
    "GlueMetrics",
    "canonical_task",
    "complete_examples",
    "first_occurrence",
    "glue_average",
    "glue_scores",
    "js_distance",
    "label_loyalty",
    "postprocess_predictions",
    "prob_loyalty",
    "regression_loyalty",
    "squad_scores",
    "task_of",
    "unique_features",
]
