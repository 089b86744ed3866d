"""SQuAD exact match and F1, as the official v1.1 and v2.0 evaluation scripts compute them (the answers
come from `nas_bert.metrics.squad_postprocess`).

Not torchmetrics' `SQuAD`: it follows the v2.0 F1 rule for empty answers also for v1.1 (v1.1 scores F1 0 when
prediction and gold both normalise to nothing, v2.0 scores 1), accumulates in float32, sums per-update
states (so DDP padding would count questions twice) and has no v2.0 gold filtering or HasAns/NoAns split.

The two versions differ only in:
- F1 when prediction or gold has no tokens: v1.1 gives 0, v2.0 gives 1 if both have none, else 0;
- v2.0 drops gold answers that normalise to nothing, and scores against [""] when none is left (so an
  unanswerable question scores 1 only for a prediction that normalises to nothing, such as "");
- v2.0 also reports the HasAns_ / NoAns_ subsets (a question has an answer if any gold text is non-empty).
A question without a prediction scores 0 (v1.1 behaviour; the v2.0 script would drop it from the total).
Scores are percentages, as the official scripts print them. Keys are the same for both versions:
`exact_match` (v2.0 calls it `exact`), `f1`, `total`, and for v2.0 `HasAns_exact_match`, `HasAns_f1`,
`HasAns_total`, `NoAns_...` for the subsets that have questions.
"""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Token-overlap F1 of the normalised answers."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: dict[str, str], answers: dict[str, list[str]],
                 version_2: bool = False) -> dict[str, float]:
    """EM and F1 (percent) over the questions in `answers` {id: gold texts}, given `predictions` {id: text}."""
    em_by_id: dict[str, float] = {}
    f1_by_id: dict[str, float] = {}
    has_answer: dict[str, bool] = {}
    for qid, golds in answers.items():
        has_answer[qid] = any(golds)
        if version_2:
            golds = [g for g in golds if normalize_answer(g)] or [""]
        if qid not in predictions:
            em_by_id[qid] = f1_by_id[qid] = 0.0
            continue
        pred = predictions[qid]
        em_by_id[qid] = max(exact_match(pred, g) for g in golds)
        f1_by_id[qid] = max(f1(pred, g, version_2) for g in golds)

    def summary(ids: list[str], prefix: str = "") -> dict[str, float]:
        n = len(ids)
        return {f"{prefix}exact_match": 100.0 * sum(em_by_id[i] for i in ids) / n if n else 0.0,
                f"{prefix}f1": 100.0 * sum(f1_by_id[i] for i in ids) / n if n else 0.0,
                f"{prefix}total": float(n)}

    out = summary(list(answers))
    if version_2:
        for prefix, flag in (("HasAns_", True), ("NoAns_", False)):
            ids = [i for i in answers if has_answer[i] == flag]
            if ids:
                out.update(summary(ids, prefix))
    return out
