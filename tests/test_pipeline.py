"""`python search.py +pipeline=cpu_demo debug=fast`: every stage chained on a tiny teacher from the command line (the
process boundary is the point; the steps run in that process, two student seeds side by side on 2 workers), the
report, skipping on re-run, the steps it plans, and the settings refused before any step runs."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from helpers.runs import GLUE, TINY_BUDGETS, compose_config, run_script

from nas_bert.arch import Arch
from nas_bert.modeling.students import uniform_arch
from nas_bert.pipeline import checks, steps, students
from nas_bert.pipeline.run import PipelineError, run_pipeline
from nas_bert.pipeline.step_times import time_by_part
from nas_bert.stages.common import AcceleratorError, start_run


def overrides(*items: str) -> str:
    """A Hydra list of override strings, quoted (they contain '=' and '/')."""
    return "[" + ",".join(f"'{item}'" for item in items) + "]"


def pipeline_args(tmp_path: Path, teacher: Path, *common: str) -> list[str]:
    """On the tiny teacher, one budget, one GLUE task, no SQuAD, no baseline (`pretrain_steps` is tested below)."""
    return [f"teacher.name_or_path={teacher}",
            "pipeline.common=" + overrides(f"teacher.name_or_path={teacher}", f"paths.cache_dir={tmp_path / 'cache'}",
                                           "space=tiny", "logger=csv", *common),
            "pipeline.search=" + overrides(TINY_BUDGETS), "pipeline.budgets=[debug_40pct]", "pipeline.baselines=null",
            "pipeline.glue_tasks=[rte]", "pipeline.glue=" + overrides("data/glue=local", f"data.data_dir={GLUE}"),
            "pipeline.squad=[]", "pipeline.latency.min_run_time=0.01"]


@pytest.mark.slow
def test_pipeline_chains_every_stage_and_skips_finished_steps(tmp_path, tiny_teacher_dir, caplog):
    pipe = tmp_path / "pipe"
    first = run_script("search.py", tmp_path, "+pipeline=cpu_demo", "debug=fast", f"hydra.run.dir={pipe}",
                       "pipeline.in_process=true", "pipeline.seeds=[0,1,2]", "pipeline.workers=2",
                       *pipeline_args(tmp_path, tiny_teacher_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    seeds = {(r["model"], r["seed"]) for r in csv.DictReader(open(pipe / "summary.csv"))}  # per model, task, seed
    assert seeds == {("teacher", "0"), *(("nas-bert-debug_40pct", s) for s in "012")}
    rows = {r["model"]: r for r in csv.DictReader(open(pipe / "summary.csv"))}
    for row in rows.values():
        assert float(row["latency_ms"]) > 0 and int(row["flops"]) > 0 and row["task"] == "rte"
        assert 0 <= float(row["score"]) <= 100
    assert int(rows["nas-bert-debug_40pct"]["params"]) < int(rows["teacher"]["params"])
    student = rows["nas-bert-debug_40pct"]
    assert student["role"] == "searched" and student["budget"] == "debug_40pct"
    assert (pipe / "score_vs_latency.png").is_file() and (pipe / "task_scores.png").is_file()
    assert list(pipe.glob("wandb/offline-run-*"))  # the summary table's W&B run
    search = yaml.safe_load((pipe / "search" / "config.yaml").read_text())
    assert search["search"]["shrinking"]["candidates_per_bin"] == 4  # every step ran under debug=fast
    assert (pipe / "logs" / "finetune" / "teacher_rte_s0.log").read_text()  # each step's log in its own file
    times = list(csv.DictReader(open(pipe / "logs" / "step_times.csv")))
    assert [t["step"] for t in times[:4]] == ["search", "pretrain/nas-bert-debug_40pct", "finetune/teacher_rte_s0",
                                              "finetune/nas-bert-debug_40pct_rte_s0"]  # saves the teacher's logits
    assert {t["step"] for t in times[4:]} == {f"finetune/nas-bert-debug_40pct_rte_s{s}" for s in (1, 2)}  # 2 workers
    assert all(float(t["seconds"]) > 0 for t in times)
    parts = time_by_part(pipe / "logs")
    assert list(parts) == ["search", "pretrain", "finetune (teacher)", "finetune (students)", "total"]
    assert "| total | 6 |" in (pipe / "summary.md").read_text()

    # the same pipeline again runs nothing but the report
    again = compose_config("search", pipe, "+pipeline=cpu_demo", "logger=csv", "pipeline.seeds=[0,1,2]",
                           *pipeline_args(tmp_path, tiny_teacher_dir, "debug=fast"))
    with caplog.at_level(logging.INFO):
        report = run_pipeline(again)
    assert set(report) == {"pipeline/teacher/avg", "pipeline/nas-bert-debug_40pct/avg"}  # a one-task study's average
    assert report["pipeline/teacher/avg"] == pytest.approx(float(rows["teacher"]["score"]))
    assert "average over rte;" in (pipe / "summary.md").read_text()
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 6  # search, pre-training, 4 fine-tunings
    assert len(list(csv.DictReader(open(pipe / "logs" / "step_times.csv")))) == 6  # skipped steps add no time
    assert any("latencies read from" in r.getMessage() for r in caplog.records)  # measured once per run folder
    assert {r["model"]: r["latency_ms"] for r in csv.DictReader(open(pipe / "summary.csv"))} == {
        name: row["latency_ms"] for name, row in rows.items()}

    again.pipeline.budgets = ["no_such_budget"]
    with pytest.raises(PipelineError, match=r"no_such_budget.*debug_90pct"):
        run_pipeline(again)
    assert (pipe / "search" / "candidates.csv").is_file() and (pipe / "summary.md").is_file()  # nothing lost


def test_equal_latency_baseline_is_priced_side_by_side_with_the_searched_student(tmp_path, monkeypatch):
    """Candidates are timed against the searched student in one round-robin and priced at that ratio."""
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study", "pipeline.baselines.layers=[2,3]",
                         "pipeline.latency.min_run_time=0.001")
    pairs = []

    def relative(candidate, reference, *args):
        pairs.append(reference)
        return len(candidate.layers) / len(reference.layers)  # a latency that counts ops

    monkeypatch.setattr("nas_bert.nas.baselines.relative_latency", relative)
    searched = uniform_arch(3, 64, 3)  # 6 ops: a 3-layer uniform BERT at any width is priced 1.0
    chosen = students.choose_baseline(cfg, searched, "equal_latency")
    assert chosen["layers"] == 3 and chosen["latency_ms"] == pytest.approx(chosen["target_latency_ms"])
    assert pairs and all(r is searched for r in pairs)


def test_each_budget_gets_its_baselines_once_pretrained_for_the_same_tokens(tmp_path, monkeypatch):
    """Two budgets that chose one architecture and whose baselines coincide: one searched model and one uniform
    BERT, each pre-trained once, standing for both; the choice is kept in the run folder; every student gets the
    study's token budget."""
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study")
    arch_dir = tmp_path / "search" / "architectures"
    arch_dir.mkdir(parents=True)
    for budget in ("quarter", "tenth"):
        uniform_arch(3, 64, 3).save(arch_dir / f"{budget}.yaml")
    chosen = []
    monkeypatch.setattr(students, "choose_baseline", lambda cfg, arch, kind: chosen.append(kind) or {
        "layers": 4, "hidden": 96, "blocks": 3})
    models = students.students(cfg, tmp_path, ["quarter", "tenth"])
    assert [m.name for m in models] == ["nas-bert-quarter", "bert-L4-H96"]
    assert models[0].roles == [("searched", "quarter"), ("searched", "tenth")]
    assert models[1].roles == [("equal_params", "quarter"), ("equal_latency", "quarter"), ("equal_params", "tenth"),
                               ("equal_latency", "tenth")]
    assert len(chosen) == 4 and set(json.loads((tmp_path / "baselines.json").read_text())) == {
        "quarter/equal_params", "quarter/equal_latency", "tenth/equal_params", "tenth/equal_latency"}
    assert students.students(cfg, tmp_path, ["quarter", "tenth"])[1].roles == models[1].roles and len(chosen) == 4
    assert time_by_part(tmp_path / "logs")["baselines"].steps == 4  # the choice is timed with the steps
    baseline = steps.pretrain_step(cfg, tmp_path, models[1])
    assert "student.baseline={layers: 4, hidden: 96, blocks: 3}" in baseline.overrides
    assert "tokens=1000000" in baseline.overrides and "data/corpus=gutenberg" in baseline.overrides
    assert baseline.output == tmp_path / "pretrain" / "bert-L4-H96" / "model" / "config.json"
    searched = steps.pretrain_step(cfg, tmp_path, models[0])
    assert {f"student.search_run={tmp_path / 'search'}", "student.budget=quarter"} <= set(searched.overrides)

    fp32 = steps.finetune_step(cfg, tmp_path, models[0], "rte", 1, tmp_path / "teacher")
    ptq, qat = steps.quantization_steps(cfg, tmp_path, models[0], "rte", 1, fp32)
    tuned = tmp_path / "finetune" / "nas-bert-quarter_rte_s1" / "model"
    assert {"experiment=ptq_glue", f"finetune.model_path={tuned}", "seed=1", "data.task=rte"} <= set(ptq.overrides)
    assert ptq.output == tmp_path / "ptq" / "nas-bert-quarter_rte_s1" / "ptq.json"
    composed = compose_config("train", tmp_path / "qat", *[o for o in qat.overrides if not o.startswith("hydra.")])
    assert composed.finetune.init_from == str(tuned) and composed.finetune.qat.weight_bits == 4
    assert composed.trainer.max_epochs == 1 and composed.finetune.model_name == "nas-bert-quarter-w4a8"


def test_a_searched_student_without_attention_is_pretrained_without_the_attention_terms(tmp_path):
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study")  # its recipe has the MiniLM term
    blocks = [{"hidden": 96, "ops": ["sepconv7", "identity"]}, {"hidden": 64, "ops": ["ffn", "identity"]}]
    convolutional = steps.Model("nas-bert-seventh", "searched", "seventh", "", Arch.from_dict({"blocks": blocks}))
    step = steps.pretrain_step(cfg, tmp_path, convolutional)
    composed = compose_config("train", tmp_path / "pre", *[o for o in step.overrides if not o.startswith("hydra.")])
    assert composed.model.intermediate.minilm_weight == 0 and composed.model.intermediate.attention_weight == 0
    assert composed.model.intermediate.hidden_weight > 0  # the rest of the shared recipe stays
    with_attention = steps.pretrain_step(cfg, tmp_path, steps.Model("b", "equal_params", "seventh", "",
                                                                          uniform_arch(2, 64, 2)))
    assert "model.intermediate.minilm_weight=0" not in with_attention.overrides


def test_bad_study_settings_fail_before_any_step(tmp_path, monkeypatch):
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study", "pipeline.seeds=[]")
    with pytest.raises(PipelineError, match="pipeline.seeds is empty"):
        run_pipeline(cfg)
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study", "pipeline.quantization.seeds=[1,5]")
    with pytest.raises(PipelineError, match=r"quantization.seeds has \[5\]"):
        run_pipeline(cfg)
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study",
                         "pipeline.corpus=" + overrides("data/corpus=local_text", "data.train_files=/no/such/*.txt"))
    with pytest.raises(PipelineError, match=r"/no/such/\*\.txt.*pipeline.corpus"):
        run_pipeline(cfg)
    for setting, key in [("pipeline.student=" + overrides("model.optimizer.lr=1e-4", "trainer.max_epochz=3"),
                          "pipeline.student"),
                         ("pipeline.task_overrides={sst2: " + overrides("data/glue=lcal") + "}",
                          "pipeline.task_overrides.sst2"),
                         ("pipeline.glue_tasks=[rte,stsbb]", "pipeline.glue_tasks")]:
        cfg = compose_config("search", tmp_path, "+pipeline=cpu_study", setting)  # the last steps' settings
        with pytest.raises(PipelineError, match=key.replace(".", r"\.") + ":") as error:
            run_pipeline(cfg)
        assert "max_epochz" in str(error.value) or "lcal" in str(error.value) or "stsbb" in str(error.value)
    for name in ("cpu_demo", "cpu_study"):  # the shipped pipelines compose, quantization steps included
        cfg = compose_config("search", tmp_path, f"+pipeline={name}", "pipeline.quantization.roles=[searched]")
        checks.check_step_overrides(cfg, Path(cfg.paths.root_dir), tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = compose_config("search", tmp_path, "+pipeline=cpu_study", "pipeline.corpus=[]",
                         "pipeline.common=" + overrides("trainer=gpu"))
    with pytest.raises(AcceleratorError, match="trainer=cpu"):
        run_pipeline(cfg)
    assert not (tmp_path / "search").exists()


def test_a_gpu_trainer_without_cuda_fails_before_the_run_folder_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for trainer in ("gpu", "ddp"):
        cfg = compose_config("train", tmp_path / trainer, f"trainer={trainer}")
        with pytest.raises(AcceleratorError, match=r"accelerator=gpu needs a CUDA device.*trainer=cpu"):
            start_run(cfg)
        assert not (tmp_path / trainer / "config.yaml").exists()
