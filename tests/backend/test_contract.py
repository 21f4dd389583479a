"""The stage contract: a recipe whose inputs cannot be resolved is refused when the run is
created (naming the stage and the input, storing nothing); held-out problems never reach
training; the evaluate stage scores the problems its input names and says which; an old
database gains the contract's columns."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from backend import recipes
from backend.api import ConfigError, Workbench
from backend.contract import ProblemSource
from backend.runner import start_pipeline
from backend.stages import STAGE_CONFIGS
from backend.tasks.problem import prompt_key
from storage import Store, StageSpec
from storage.migrate import alembic_config
from tests.conftest import ROOT, wait_for


def _spec(key: str, kind: str, inputs: dict | None = None, **config) -> StageSpec:
    # The wiring check reads configs as data; paths in them need not exist here.
    return StageSpec(kind, key, {**STAGE_CONFIGS[kind]().to_dict(), **config}, key,
                     inputs or {})


BASE = _spec("base", "pretrain")
GRPO = _spec("grpo", "grpo", {"model": "base.model", "problems": "base.problems"})


# --------------------------------------------------------------------------- wiring refused
@pytest.mark.parametrize("specs, expected", [
    # evaluate without a model to evaluate
    ([BASE, _spec("eval", "evaluate", {"problems": "base.problems"})],
     ["'eval'", "'model'", "no earlier stage provides it"]),
    # evaluate without problems and no dataset setting: the message offers the setting
    ([BASE, _spec("eval", "evaluate", {"model": "base.model"})],
     ["'eval'", "'problems'", "evaluate.dataset"]),
    # a source stage that does not exist (a typo in the key)
    ([BASE, _spec("grpo", "grpo", {"model": "bsae.model"})],
     ["'grpo'", "'model'", "'bsae'", "earlier: base"]),
    # a source that comes later in the pipeline is not "earlier"
    ([_spec("eval", "evaluate", {"model": "base.model", "problems": "base.problems"}), BASE],
     ["'eval'", "'model'", "no earlier stage is named 'base'"]),
    # an output the source stage does not produce
    ([BASE, _spec("grpo", "grpo", {"model": "base.checkpoint"})],
     ["'grpo'", "'model'", "no output 'checkpoint'", "model, problems"]),
    # a type mismatch: a problem source wired where a model is needed
    ([BASE, GRPO, _spec("eval", "evaluate", {"model": "base.problems",
                                             "problems": "grpo.problems"})],
     ["'eval'", "'model'", "needs a model", "'base.problems' is a problems"]),
    # and the other way round
    ([BASE, GRPO, _spec("eval", "evaluate", {"model": "grpo.model", "problems": "grpo.model"})],
     ["'eval'", "'problems'", "needs a problems", "is a model"]),
    # an input the stage kind does not have
    ([BASE, _spec("grpo", "grpo", {"model": "base.model", "teacher": "base.model"})],
     ["'grpo'", "no input(s) teacher", "its inputs: model, problems"]),
    # two stages with one key: "grpo.model" would be ambiguous
    ([BASE, GRPO, GRPO], ["two stages are named 'grpo'"]),
    # a reference that is not STAGE.OUTPUT
    ([BASE, _spec("grpo", "grpo", {"model": "base"})], ["'base'", "STAGE_KEY.OUTPUT"]),
])
def test_unresolvable_inputs_are_refused_naming_stage_and_input(specs, expected):
    with pytest.raises(ConfigError) as info:
        recipes.check_specs(specs)
    for part in expected:
        assert part in str(info.value), f"{part!r} missing from: {info.value}"


@pytest.mark.parametrize("specs", [
    # the r1-zero wiring
    recipes.default_config("r1-zero", "smoke"),
    # a model given by a setting needs no wiring; problems are optional for GRPO
    [_spec("grpo", "grpo", model_path="/models/x"),
     _spec("eval", "evaluate", {"model": "grpo.model", "problems": "grpo.problems"})],
    # evaluate on a dataset setting instead of wired problems, base model optional
    [BASE, _spec("eval", "evaluate", {"model": "base.model"}, dataset="/data/gsm8k")],
    # stages without a key are keyed by their kind
    [StageSpec("pretrain", "p", STAGE_CONFIGS["pretrain"]().to_dict()),
     StageSpec("grpo", "g", STAGE_CONFIGS["grpo"]().to_dict(), "", {"model": "pretrain.model"})],
])
def test_resolvable_wiring_is_accepted(specs):
    recipes.check_specs(specs)  # raises on a false refusal


def test_create_run_refuses_a_recipe_with_broken_wiring_and_stores_nothing(db_url, monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "broken", recipes.Recipe("broken", "eval reads a typo", (
        recipes.RecipeStage("base", "pretrain", "base"),
        recipes.RecipeStage("eval", "evaluate", "eval",
                            (("model", "base.model"), ("problems", "base.problem"))),
    )))
    wb = Workbench(db_url)
    with pytest.raises(ConfigError, match=r"stage 'eval' \(evaluate\) input 'problems'.*"
                                          r"no output 'problem'"):
        wb.create_run("broken", "smoke", start=False)
    assert wb.list_runs() == []
    # The same run with the wiring fixed is created: it was the wiring that was refused.
    monkeypatch.setitem(recipes.RECIPES, "broken", recipes.Recipe("broken", "fixed", (
        recipes.RecipeStage("base", "pretrain", "base"),
        recipes.RecipeStage("eval", "evaluate", "eval",
                            (("model", "base.model"), ("problems", "base.problems"))),
    )))
    run = wb.create_run("broken", "smoke", start=False)
    assert [(s.key, s.inputs) for s in run.stages] == [
        ("base", {}), ("eval", {"model": "base.model", "problems": "base.problems"})]


def test_status_json_shows_each_stages_wiring(db_url):
    wb = Workbench(db_url)
    run = wb.create_run("r1-zero", "smoke", start=False)
    stages = {s["key"]: s for s in wb.run_status(run.id)["stages"]}
    assert stages["eval"]["inputs"] == {
        "model": {"from": "grpo.model", "value": None},
        "base_model": {"from": "base.model", "value": None},
        "problems": {"from": "grpo.problems", "value": None}}
    assert stages["base"]["inputs"] == {}


def test_cli_run_with_a_bad_setting_exits_nonzero_and_creates_nothing(db_url):
    done = subprocess.run([sys.executable, "-m", "backend", "run", "--recipe", "r1-zero",
                           "--set", "grpo.reward_weights=1", "--db", db_url],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0
    assert "reward_weights" in done.stderr
    assert done.stdout.strip() == ""  # no run id printed
    assert Workbench(db_url).list_runs() == []


# --------------------------------------------------------------------------- held-out splits
def _keys(problems) -> set[str]:
    return {prompt_key(p.prompt) for p in problems}


@pytest.mark.parametrize("distinct", [False, True])
def test_synthetic_heldout_never_in_training(distinct):
    source = ProblemSource(kind="synthetic")
    held = _keys(source.heldout())
    train = source.train(2000, seed=5, distinct=distinct)
    assert len(held) == source.heldout_size and len(train) == 2000
    assert held.isdisjoint(_keys(train))


def test_file_heldout_never_in_training(gsm8k_dir):
    source = ProblemSource(kind="file", path=str(gsm8k_dir)).with_heldout(5)
    assert source.heldout_from_train == 0  # GSM8K has a test split: that is the held-out one
    held, train = source.heldout(), source.train(0)
    assert held and train
    assert _keys(held).isdisjoint(_keys(train))


def test_test_question_copied_into_train_is_dropped(tmp_path):
    """A folder whose train split repeats a test question (re-spaced): never trained on."""
    rows = [{"question": f"What is {i} plus {i}?", "answer": f"#### {2 * i}"} for i in range(8)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    copied = {"question": "What  is 1 plus\n1? ", "answer": "#### 2"}
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[3:] + [copied]))
    source = ProblemSource(kind="file", path=str(tmp_path)).with_heldout(3)
    assert [p.prompt for p in source.heldout()] == [r["question"] for r in rows[:3]]
    assert [p.prompt for p in source.train(0)] == [r["question"] for r in rows[3:]]


def test_single_file_holds_out_its_first_rows_and_never_trains_on_them(tmp_path):
    rows = [{"question": f"How many apples are {i} apples and {i + 1} apples?",
             "answer": f"#### {2 * i + 1}"} for i in range(12)]
    rows.append(dict(rows[2]))  # a held-out question repeated later in the file
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    source = ProblemSource(kind="file", path=str(path)).with_heldout(5)
    held = source.heldout()
    assert [p.prompt for p in held] == [r["question"] for r in rows[:5]]
    train = source.train(0)
    assert [p.prompt for p in train] == [r["question"] for r in rows[5:12]]
    assert _keys(held).isdisjoint(_keys(train))
    assert source.describe()["split"] == "train[:5]"


# --------------------------------------------------------------------------- evaluation data
@pytest.mark.slow
def test_evaluation_after_grpo_on_gsm8k_reports_the_file_it_scored(tiny_model_dir, gsm8k_dir,
                                                                   db_url):
    grpo = _spec("grpo", "grpo", model_path=tiny_model_dir, dataset=str(gsm8k_dir), steps=1,
                 batch_size=8, num_generations=4, max_completion_length=8, eval_every=0,
                 eval_problems=5, save_steps=100)
    evaluate = _spec("eval", "evaluate", {"model": "grpo.model", "problems": "grpo.problems"},
                     eval_problems=5, k=1, max_new_tokens=8)
    recipes.check_specs([grpo, evaluate])
    wb = Workbench(db_url)
    run = wb.store.create_run("gsm8k", "r1-zero", "custom", {}, [grpo, evaluate])
    start_pipeline(wb.store, run.id)
    status = wait_for(lambda: (s := wb.run_status(run.id))["status"] in
                      ("completed", "failed") and s, 600, what="the run to end")
    assert status["status"] == "completed", [s["error"] for s in status["stages"]]

    grpo_stage, eval_stage = status["stages"]
    problems = grpo_stage["outputs"]["problems"]
    assert problems["type"] == "problems" and problems["path"] == str(gsm8k_dir)
    assert eval_stage["inputs"]["problems"] == {"from": "grpo.problems", "value": problems}
    summary = eval_stage["summary"]
    assert summary["dataset"] == str(gsm8k_dir)
    assert summary["split"] == "test"
    assert summary["problems"] == 5
    assert summary["answer_format"] in ("auto", "gsm8k")
    # The problems scored are GSM8K test's first questions (the tiny model gets them bare).
    first = json.loads((Path(gsm8k_dir) / "test.jsonl").read_text().splitlines()[0])
    assert prompt_key(summary["final"]["examples"][0]["prompt"]) == prompt_key(first["question"])
    assert grpo_stage["summary"]["dataset"] == str(gsm8k_dir)


# --------------------------------------------------------------------------- migration
def test_stage_made_before_the_contract_gets_key_and_empty_params(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")  # the schema before the stage contract
        conn.execute(text("INSERT INTO runs (id, name, recipe, preset, config_json, created_at, "
                          "deleted) VALUES (1, 'old run', 'r1-zero', 'tiny', '{}', "
                          "'2026-11-20 10:00:00', 0)"))
        for position, kind in enumerate(("pretrain", "grpo")):
            conn.execute(text(
                "INSERT INTO stages (run_id, position, kind, name, status, config_json, step, "
                "attempt_started_step, outputs_json, summary_json) VALUES "
                f"(1, {position}, '{kind}', 'old {kind}', 'completed', "
                "'{\"temperature\": 1.0}', 10, 0, '{}', '{}')"))
        conn.execute(text("INSERT INTO commands (stage_id, kind, payload_json, created_at, "
                          "applied_at, applied_step, result) VALUES (2, 'set', "
                          "'{\"temperature\": 0.5}', '2026-11-20 10:01:00', "
                          "'2026-11-20 10:01:01', 4, 'temperature = 0.5')"))
    engine.dispose()

    store = Store(url)  # migrates to head
    run = store.get_run(1)
    assert [(s.key, s.kind, s.inputs, s.params) for s in run.stages] == [
        ("pretrain", "pretrain", {}, {}), ("grpo", "grpo", {}, {})]
    [cmd] = store.commands(run.stages[1].id)
    assert cmd.result == "temperature = 0.5" and cmd.error is None and not cmd.failed
    with store.engine.connect() as conn:  # stored, not only defaulted on read
        assert conn.execute(text("SELECT key FROM stages ORDER BY position")).scalars().all() \
            == ["pretrain", "grpo"]
    status = Workbench(url).run_status(1)
    assert [(s["key"], s["params"], s["inputs"]) for s in status["stages"]] == [
        ("pretrain", {}, {}), ("grpo", {}, {})]
