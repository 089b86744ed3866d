"""The model card of an exported model (`<model folder>/README.md`), rendered by code from the runs' own records.

The facts live beside the card in `nas_bert_card.json`; each stage that learns something about the model (its
pre-training, a fine-tuning run that scores it) merges its facts there and renders the card again, so the card
never goes stale and is never edited by hand. The YAML header is Hugging Face model-card metadata (through
`huggingface_hub.ModelCardData`, with a `model-index` once there are scores).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

RECORD = "nas_bert_card.json"


def read_record(directory: str | Path) -> dict[str, Any]:
    """The facts recorded for the model in `directory` ({} when it has none, e.g. a Hub or teacher model)."""
    path = Path(directory) / RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def merge(record: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    """`facts` over `record`; results are merged by (task, metric, seed), a newer value replacing an older one."""
    merged = {**record, **{k: v for k, v in facts.items() if k != "results"}}
    results = {(r["task"], r["metric"], r.get("seed")): r for r in record.get("results", [])}
    results |= {(r["task"], r["metric"], r.get("seed")): r for r in facts.get("results", [])}
    merged["results"] = sorted(results.values(), key=lambda r: (r["task"], r["metric"], r.get("seed") or 0))
    return merged


def update_card(directory: str | Path, **facts: Any) -> Path:
    """Merge `facts` into the folder's record and write its card again; returns the card's path."""
    directory = Path(directory)
    record = merge(read_record(directory), facts)
    (directory / RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n")
    card = render(record)
    card.save(directory / "README.md")
    return directory / "README.md"


def teacher_license(name_or_path: str) -> str | None:
    """The license in a local teacher folder's own model card, if it has one (no network)."""
    readme = Path(name_or_path) / "README.md"
    if not readme.is_file():
        return None
    return ModelCard.load(readme).data.license


def render(record: dict[str, Any]) -> ModelCard:
    """The card: Hugging Face metadata, then what the model is, its size and speed, its recipe, its scores."""
    results = record.get("results", [])
    data = ModelCardData(
        model_name=record.get("model_name"), library_name="transformers", license=record.get("license"),
        base_model=record.get("base_model"), pipeline_tag=record.get("pipeline_tag"),
        tags=["nas-bert", "knowledge-distillation", "neural-architecture-search", "model-compression"],
        datasets=sorted({r["dataset"] for r in results} | set(record.get("datasets", []))) or None,
        eval_results=[EvalResult(task_type=record.get("pipeline_tag") or "text-classification",
                                 dataset_type=r["dataset"], dataset_name=r["dataset_name"],
                                 dataset_config=r.get("config"), dataset_split="validation",
                                 metric_type=r["metric"], metric_value=r["value"],
                                 metric_name=f"{r['metric']} (seed {r.get('seed')})") for r in results] or None)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body(record)}")


def body(record: dict[str, Any]) -> str:
    lines = [f"# {record.get('model_name', 'model')}", "", f"{record.get('origin', 'A model exported by nas-bert')}.",
             ""]
    if arch := record.get("architecture"):
        lines += ["## Architecture", "", f"Embedding size {arch.get('embed') or arch['blocks'][0]['hidden']}; "
                  "each block's ops at its width:", "", "| block | width | ops |", "|---|---|---|"]
        for i, block in enumerate(arch["blocks"]):
            ops = " ".join(op for op in block["ops"] if op != "identity") or "(none)"
            lines.append(f"| {i} | {block['hidden']} | {ops} |")
        lines.append("")
    if size := record.get("size"):
        lines += ["## Size and speed", "", f"- Parameters (encoder): {size['params']:,}",
                  f"- FLOPs per sequence of {size['seq_len']} tokens: {size['flops_per_sequence']:,}"]
        lat = record.get("latency") or {}
        setting = f"batch {lat.get('batch_size')}, sequence {lat.get('seq_len')}"
        if lat.get("predicted_ms") is not None:
            lines.append(f"- Predicted latency (the search's latency table: {lat.get('table_setting') or '?'}): "
                         f"{lat['predicted_ms']:.2f} ms")
        if lat.get("measured_ms") is not None:
            lines.append(f"- Measured latency ({setting}, {lat.get('device', '?')}): {lat['measured_ms']:.2f} ms")
        lines.append("")
    if recipe := record.get("recipe"):
        lines += ["## How it was made", ""] + [f"- {key}: {value}" for key, value in recipe.items()] + [""]
    if results := record.get("results"):
        lines += ["## Scores", "", "| task | metric | seed | value |", "|---|---|---|---|"]
        lines += [f"| {r['task']} | {r['metric']} | {r.get('seed')} | {r['value']:.4g} |" for r in results]
        lines.append("")
    lines += ["## Use", "", "```python", "from transformers import AutoModel, AutoTokenizer", "",
              'model = AutoModel.from_pretrained("<this folder or repo>", trust_remote_code=True)',
              'tokenizer = AutoTokenizer.from_pretrained("<this folder or repo>")', "```", "",
              "The folder carries its modeling code, so only torch and transformers are needed. With nas-bert "
              "installed, `import nas_bert` registers the classes and `trust_remote_code` is not needed.", ""]
    return "\n".join(lines)
