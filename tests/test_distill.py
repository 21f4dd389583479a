"""Distillation: the ``distill`` stage (on-policy logit distillation on TRL's
``DistillationTrainer``), SFT distillation (the teacher's rejection-sampled traces -> the sft
stage training a different, smaller student), the matched-compute ``time_budget_s`` and the
``distill`` recipe that puts them side by side.

Models are untrained tiny ones (seconds to build); stage tests run real worker processes.
"""
from __future__ import annotations

import json
import shutil

import pytest

from backend import runner
from backend.api import Workbench
from backend.contract import ModelArtifact, ProblemSource
from backend.recipes import PRESETS, build_stages, check_specs
from backend.stages.common import ConfigError
from backend.stages.distill import DistillConfig, vocabulary_mismatch
from storage import ACCEPTED, StageSpec
from tests.conftest import wait_for

STUDENTS = ("sft_student", "logit_student", "rl_student")
DONE = ("completed", "failed", "stopped", "interrupted")


def _tiny(path, seed: int, vocab_extra: int = 0, hidden: int = 32) -> str:
    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_model(TinyModelSpec(hidden_size=hidden, num_layers=1, num_heads=1,
                                           num_kv_heads=1, intermediate_size=64), tok, seed=seed)
    if vocab_extra:
        model.resize_token_embeddings(len(tok) + vocab_extra)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A student, a wider teacher with the same tokenizer, and two teachers that do not share
    the student's vocabulary: one with more token ids, one numbering two tokens the other way."""
    root = tmp_path_factory.mktemp("distill_models")
    out = {"student": _tiny(root / "student", seed=1),
           "teacher": _tiny(root / "teacher", seed=2, hidden=64),
           "bigger_vocab": _tiny(root / "bigger_vocab", seed=3, vocab_extra=5)}
    swapped = root / "swapped"
    shutil.copytree(out["teacher"], swapped)
    data = json.loads((swapped / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    vocab["1"], vocab["2"] = vocab["2"], vocab["1"]
    (swapped / "tokenizer.json").write_text(json.dumps(data))
    out["swapped"] = str(swapped)
    return out


def _stage(wb, run_id, key):
    return next(s for s in wb.get_run(run_id).stages if s.key == key)


def _finished(wb, run_id, key):
    stage = _stage(wb, run_id, key)
    return stage if stage.status in DONE else None


# ------------------------------------------------------------------------------ vocabulary
@pytest.mark.parametrize("teacher,message", [
    # more token ids than the student: TRL would refuse too, later and less clearly
    ("bigger_vocab", "the teacher has {n_extra} token ids, the student {n}"),
    # same size, two tokens numbered the other way: only the map comparison sees it
    ("swapped", "2 tokens differ ('1', '2')"),
])
def test_a_vocabulary_mismatch_is_refused_when_the_run_is_created(models, teacher, message):
    from backend.models import build_tokenizer

    n = len(build_tokenizer())
    message = message.format(n=n, n_extra=n + 5)
    with pytest.raises(ConfigError, match="teacher and student vocabularies differ") as info:
        DistillConfig.from_dict({"model_path": models["student"],
                                 "teacher_path": models[teacher]})
    assert message in str(info.value)
    assert "SFT on the teacher's traces" in str(info.value)  # what to do instead
    # the same tokenizer in a wider model is fine
    DistillConfig.from_dict({"model_path": models["student"], "teacher_path": models["teacher"]})


def test_vocabularies_compared_by_size_and_by_token_ids():
    same = {"size": 3, "tokens": {"a": 0, "b": 1, "c": 2}}
    assert vocabulary_mismatch(same, dict(same)) is None
    assert vocabulary_mismatch(same, None) is None  # a hub id: nothing local to compare yet
    assert "4 token ids" in vocabulary_mismatch({"size": 4, "tokens": None}, same)
    assert "1 tokens differ ('c')" in vocabulary_mismatch(
        same, {"size": 3, "tokens": {"a": 0, "b": 1, "c": 3}})


@pytest.mark.parametrize("values,message", [
    ({"beta": 1.5}, "beta must be between 0"),
    ({"temperature": 0}, "temperature"),
    ({"learning_rate": 0}, "learning_rate"),
    ({"steps": 0}, "steps"),
    ({"time_budget_s": -1}, "time_budget_s"),
    ({"teacher_path": "/no/such/teacher"}, "teacher_path: /no/such/teacher does not exist"),
])
def test_bad_config_is_refused_with_the_setting_named(values, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig.from_dict(values)


@pytest.mark.slow
def test_a_wired_teacher_with_another_vocabulary_fails_the_stage_when_it_starts(db_url, models):
    wb = Workbench(db_url)
    run = wb.store.create_run("mismatch", "custom", "smoke", {}, [
        StageSpec("pretrain", "teacher (stand-in)", {}, key="teacher"),
        StageSpec("distill", "logit distillation",
                  DistillConfig.from_dict({"model_path": models["student"], "steps": 2}).to_dict(),
                  key="distill", inputs={"teacher": "teacher.model"}),
    ])
    teacher = run.stages[0]
    wb.store.update_stage(teacher.id, outputs={
        "model": ModelArtifact(path=models["bigger_vocab"]).to_dict()})
    assert wb.store.transition(teacher.id, ["queued"], "completed")
    runner.start_pipeline(wb.store, run.id)
    failed = wait_for(lambda: _finished(wb, run.id, "distill"), 120, what="the stage to end")
    assert failed.status == "failed"
    assert "teacher and student vocabularies differ" in failed.error
    assert "token ids" in failed.error
    assert not wb.metrics(failed.id, ["loss"])  # refused before any training step


# ------------------------------------------------------------------------------ training
def _divergence(student, teacher, tok) -> float:
    """Mean KL(teacher || student) of the next-token distributions over fixed texts."""
    import torch

    texts = ["12+34=<think>2+4+0=6,1+3+0=4</think><answer>46</answer>", "905+7=", "3+3=<answer>"]
    ids = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        t = torch.log_softmax(teacher(**ids).logits, -1)
        s = torch.log_softmax(student(**ids).logits, -1)
    mask = ids["attention_mask"].bool()
    return float((t.exp() * (t - s)).sum(-1)[mask].mean())


def test_logit_distillation_moves_the_student_toward_the_teacher(models, tmp_path):
    from datasets import Dataset
    from trl import DistillationTrainer

    from backend.models import load_model
    from backend.stages.distill import distill_args, distill_setters
    from backend.tasks.addition import AdditionTask

    student, tok = load_model(models["student"])
    teacher, _ = load_model(models["teacher"])
    before = _divergence(student, teacher, tok)
    cfg = DistillConfig(steps=6, batch_size=4, max_completion_length=16, learning_rate=1e-2)
    prompts = [p.prompt for p in AdditionTask().train_problems(32, seed=0, distinct=True)]
    trainer = DistillationTrainer(model=student, teacher_model=teacher,
                                  args=distill_args(cfg, tmp_path), processing_class=tok,
                                  train_dataset=Dataset.from_dict({"prompt": prompts}))
    # the live temperature reaches sampling and the divergence alike
    assert distill_setters(trainer)["temperature"](0.9).startswith("temperature = 0.9")
    assert trainer.temperature == trainer.generation_config.temperature == 0.9
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6
    after = _divergence(trainer.model, teacher, tok)
    # the student's distributions moved toward the teacher's, on texts it never sampled
    assert after < 0.5 * before, (before, after)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # and its divergence loss fell


@pytest.mark.slow
def test_distill_stage_trains_the_student_in_a_worker(db_url, models):
    from backend.models import load_model

    wb = Workbench(db_url)
    config = DistillConfig.from_dict({
        "model_path": models["student"], "teacher_path": models["teacher"], "steps": 4,
        "batch_size": 4, "max_completion_length": 12, "eval_every": 2, "eval_problems": 8,
        "save_steps": 2, "min_digits": 1, "max_digits": 2}).to_dict()
    run = wb.store.create_run("logit", "custom", "smoke", {},
                              [StageSpec("distill", "logit distillation", config, key="distill")])
    runner.start_pipeline(wb.store, run.id)
    stage = wait_for(lambda: _finished(wb, run.id, "distill"), 300, what="distillation")
    assert stage.status == "completed", stage.error
    assert stage.step == 4
    assert [m.step for m in wb.metrics(stage.id, ["loss"])] == [1, 2, 3, 4]
    assert {m.step for m in wb.metrics(stage.id, ["eval/accuracy"])} >= {0, 2, 4}
    assert stage.summary["teacher_parameters"] > stage.summary["student_parameters"]
    assert stage.summary["cpu_s"] > 0 and stage.summary["trained_steps"] == 4
    # the whole process, loading and the final evaluation included, is counted too
    assert stage.summary["process_cpu_s"] >= stage.summary["cpu_s"]
    # the student's weights moved; the output is a loadable model in the student's format
    out = stage.outputs["model"]
    assert out["prompt_format"]["style"] == "plain"
    trained, _ = load_model(out["path"])
    original, _ = load_model(models["student"])
    import torch
    assert not torch.equal(trained.lm_head.weight, original.lm_head.weight)


@pytest.mark.slow
def test_sft_distillation_trains_another_student_on_the_teachers_curated_traces(
        db_url, models):
    """The teacher samples traces (rejection stage), a reviewer accepts some by hand, and the
    sft stage trains a different model, the student, on exactly those."""
    wb = Workbench(db_url)
    problems = ProblemSource(kind="synthetic", min_digits=1, max_digits=2, heldout_size=20)
    specs = [
        StageSpec("pretrain", "problems (stand-in)", {}, key="src"),
        StageSpec("rejection", "teacher traces", {
            **_by_key(build_stages("distill", "smoke", {}))["traces"].config,
            "model_path": models["teacher"],
            "prompts": 6, "chunk_prompts": 3, "n_candidates": 2, "max_new_tokens": 12},
            key="traces", inputs={"problems": "src.problems"}),
        StageSpec("sft", "student SFT", {
            "model_path": models["student"], "steps": 3, "batch_size": 4, "save_steps": 3,
            "eval_problems": 4, "max_new_tokens": 8}, key="sft",
            inputs={"dataset": "traces.dataset", "problems": "src.problems"}),
    ]
    run = wb.store.create_run("sft distillation", "custom", "smoke", {}, specs)
    src = run.stages[0]
    wb.store.update_stage(src.id, outputs={"problems": problems.to_dict()})
    assert wb.store.transition(src.id, ["queued"], "completed")
    runner.start_pipeline(wb.store, run.id)
    waiting = wait_for(lambda: (s := _stage(wb, run.id, "sft")).status in ("waiting", *DONE)
                       and s, 300, what="SFT to wait for review")
    assert waiting.status == "waiting", waiting.error
    ds = waiting.summary["waiting_for_dataset"]
    rows = wb.curation_rows(ds)
    assert len(rows) == 12  # 6 prompts x 2 teacher samples
    # every row is the teacher's sample, with the teacher named as its source
    assert {r.meta["checkpoint"] for r in rows} == {models["teacher"]}
    # the reviewer accepts the first sample of each prompt (an untrained teacher is wrong,
    # which the rule recorded; a person may still keep a row)
    wb.bulk_review(ds, wb.make_filter(where=["rollout=0"]), ACCEPTED, author="reviewer")
    wb.mark_ready(ds, author="reviewer")
    done = wait_for(lambda: _finished(wb, run.id, "sft"), 300, what="SFT to finish")
    assert done.status == "completed", done.error
    (snap,) = wb.snapshots(stage_id=done.id)
    assert [r.completion for r in wb.snapshot_rows(snap.id)] == [
        r.completion for r in wb.curation_rows(ds, wb.make_filter(status=ACCEPTED))]
    assert snap.size == 6
    assert done.step == 3 and done.summary["cpu_s"] > 0


@pytest.mark.slow
def test_a_time_budget_ends_training_early_and_keeps_the_model(db_url, tiny_model_dir):
    """1 CPU second is spent before the first step ends (loading torch alone takes more), so
    the stage trains one step of its 200, saves its final model, and says why."""
    wb = Workbench(db_url)
    config = {"model_path": tiny_model_dir, "steps": 200, "batch_size": 4, "examples": 24,
              "eval_problems": 4, "max_new_tokens": 8, "save_steps": 100, "time_budget_s": 1}
    run = wb.store.create_run(
        "budget", "custom", "smoke", {}, [StageSpec("sft", "cold start", config, key="sft")])
    runner.start_pipeline(wb.store, run.id)
    done = wait_for(lambda: _finished(wb, run.id, "sft"), 240, what="the budgeted stage")
    assert done.status == "completed", done.error
    assert done.step == 1
    assert done.summary["stopped_by_time_budget"] is True
    assert done.summary["time_budget_s"] == 1 and done.summary["cpu_s"] >= 1
    assert done.summary["trained_steps"] == 1
    assert done.outputs["model"]["path"].endswith("final")
    assert any("time budget spent" in e.message for e in wb.events(run.id, done.id))
    cpu = [m.value for m in wb.metrics(done.id, ["cpu_s"])]
    assert cpu and cpu[-1] >= 1


# ------------------------------------------------------------------------------ recipe
def _by_key(specs):
    return {s.key: s for s in specs}


def test_distill_recipe_wires_teacher_student_and_matched_budgets():
    specs = build_stages("distill", "tiny", {})
    check_specs(specs)
    stages = _by_key(specs)
    assert list(stages) == ["teacher_base", "student_base", "teacher", "traces", "sft_student",
                            "logit_student", "rl_student", "eval_teacher", "eval_sft",
                            "eval_logit", "eval_rl"]
    teacher, student = stages["teacher_base"].config, stages["student_base"].config
    # a smaller student (fewer layers, less width) on the same corpus, head_dim 32 or 64
    assert student["hidden_size"] < teacher["hidden_size"]
    assert student["num_layers"] < teacher["num_layers"]
    assert student["hidden_size"] / student["num_heads"] in (32, 64)
    for key in ("min_digits", "max_digits", "think_share", "answer_share", "steps", "seed"):
        assert student[key] == teacher[key], key
    assert (teacher["min_digits"], teacher["max_digits"]) == (1, 5)
    # the three students start from the student base and get the same CPU seconds
    budgets = {stages[k].config["time_budget_s"] for k in STUDENTS}
    assert len(budgets) == 1 and budgets.pop() > 0
    assert stages["teacher"].config["time_budget_s"] == 0
    for key in STUDENTS:
        assert stages[key].inputs["model"] == "student_base.model"
    assert stages["traces"].inputs["model"] == "teacher.model"
    assert stages["sft_student"].inputs["dataset"] == "traces.dataset"
    assert stages["logit_student"].inputs["teacher"] == "teacher.model"
    # the teacher and every student are evaluated, alike
    evaluated = {stages[k].inputs["model"] for k in stages if k.startswith("eval_")}
    assert evaluated == {"teacher.model", "sft_student.model", "logit_student.model",
                         "rl_student.model"}
    assert len({json.dumps({k: v for k, v in stages[k].config.items()}, sort_keys=True)
                for k in stages if k.startswith("eval_")}) == 1


def test_distill_recipe_with_a_teacher_path_trains_no_teacher(tiny_model_dir):
    stages = _by_key(build_stages("distill", "tiny", {"teacher_path": tiny_model_dir}))
    assert "teacher" not in stages and "teacher_base" not in stages
    assert stages["traces"].config["model_path"] == tiny_model_dir
    assert stages["logit_student"].config["teacher_path"] == tiny_model_dir
    assert stages["eval_teacher"].config["model_path"] == tiny_model_dir
    assert "base_model" not in stages["eval_teacher"].inputs
    assert "model" not in stages["traces"].inputs
    with pytest.raises(ConfigError, match="teacher_path: /no/such does not exist"):
        build_stages("distill", "tiny", {"teacher_path": "/no/such"})


def test_distill_recipe_smoke_preset_and_a_stored_run(db_url):
    assert "distill" in PRESETS["smoke"]
    wb = Workbench(db_url)
    run = wb.create_run("distill", "smoke", {"rl_student.time_budget_s": "30"}, start=False)
    stages = {s.key: s for s in run.stages}
    assert stages["logit_student"].config["steps"] == PRESETS["smoke"]["distill"]["steps"]
    assert stages["rl_student"].config["time_budget_s"] == 30
    # a smoke teacher writes no correct trace: the run waits for review rather than fail
    assert stages["sft_student"].config["auto_accept"] is False
    tiny = _by_key(build_stages("distill", "tiny", {}))
    assert tiny["sft_student"].config["auto_accept"] is True  # headless by default


@pytest.mark.slow
def test_distill_recipe_runs_end_to_end_on_the_smoke_preset(db_url):
    """Every stage of the recipe through the real runner: the run waits for review of the
    teacher's traces, a reviewer accepts them all, and the three students train and are
    evaluated with the teacher."""
    wb = Workbench(db_url)
    run = wb.create_run("distill", "smoke")
    sft = _stage(wb, run.id, "sft_student")
    waiting = wait_for(lambda: (s := wb.get_stage(sft.id)).status in ("waiting", *DONE) and s,
                       1500, interval=2, what="the SFT student to wait for review")
    assert waiting.status == "waiting", [(s.key, s.status, s.error)
                                         for s in wb.get_run(run.id).stages]
    ds = waiting.summary["waiting_for_dataset"]
    wb.bulk_review(ds, None, ACCEPTED, author="reviewer")
    wb.mark_ready(ds, author="reviewer")
    wait_for(lambda: wb.get_run(run.id).status in DONE, 1500, interval=2, what="the run")
    stages = {s.key: s for s in wb.get_run(run.id).stages}
    assert {k: s.status for k, s in stages.items()} == {k: "completed" for k in stages}, [
        (s.key, s.error) for s in stages.values() if s.error]
    for key in STUDENTS:
        summary = stages[key].summary
        assert summary["cpu_s"] > 0 and summary["time_budget_s"] > 0, key
        assert stages[key].outputs["model"]["path"] != stages["student_base"].outputs[
            "model"]["path"]
    for key in ("eval_teacher", "eval_sft", "eval_logit", "eval_rl"):
        assert stages[key].summary["final"]["model_path"] == stages[
            stages[key].inputs["model"].partition(".")[0]].outputs["model"]["path"]
        assert 0 <= stages[key].summary["final"]["greedy_pass@1"] <= 1
        assert stages[key].summary["process_cpu_s"] > 0
