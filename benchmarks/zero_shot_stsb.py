"""Zero-shot STS-B: how well a pre-trained encoder's sentence embeddings already order the dev pairs, before any
fine-tuning. Each sentence is mean-pooled over its real tokens; the score is 100 x Spearman between the cosine of
a pair's embeddings and its gold similarity. It tells what a student brings from pre-training apart from what
fine-tuning then makes of it (docs/RESULTS.md, the init study).

    GLUE_DIR=../shared/data/glue python benchmarks/zero_shot_stsb.py <model folder> [<model folder> ...]
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import torch
from torchmetrics.functional import spearman_corrcoef
from transformers import AutoModel, AutoTokenizer

import nas_bert.modeling  # noqa: F401  (registers the NAS-BERT Auto classes)
from nas_bert.teacher import resolve_model_path


@torch.no_grad()
def sentence_embeddings(model, tokenizer, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """(N, D) mean of each text's last hidden states over its real tokens."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
        states = model(**enc).last_hidden_state  # (B, T, D)
        mask = enc["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
        out.append((states * mask).sum(1) / mask.sum(1))
    return torch.cat(out)


def zero_shot_spearman(path: str, first: list[str], second: list[str], gold: list[float]) -> float:
    folder = resolve_model_path(path)
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    cosine = torch.nn.functional.cosine_similarity(sentence_embeddings(model, tokenizer, first),
                                                   sentence_embeddings(model, tokenizer, second))
    return 100 * float(spearman_corrcoef(cosine.double(), torch.tensor(gold, dtype=torch.float64)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="model folders (or hub ids) that AutoModel loads")
    parser.add_argument("--dev", type=Path, default=Path(os.environ.get("GLUE_DIR", "../shared/data/glue"))
                        / "STS-B" / "dev.tsv")
    args = parser.parse_args()
    rows = list(csv.DictReader(args.dev.open(), delimiter="\t", quoting=csv.QUOTE_NONE))
    first, second = [r["sentence1"] for r in rows], [r["sentence2"] for r in rows]
    gold = [float(r["score"]) for r in rows]
    for path in args.models:
        print(f"{path}\t{zero_shot_spearman(path, first, second, gold):.1f}", flush=True)


if __name__ == "__main__":
    main()
