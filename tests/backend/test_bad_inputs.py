"""Bad input ends as a failed stage (or a refused request) whose message says what to fix,
and nothing else in the store changes."""
from __future__ import annotations

import sqlite3

import pytest

from backend.api import ConfigError, StoreError, Workbench
from backend.runner import start_pipeline
from backend.stages.grpo import GRPOStageConfig
from storage import Group, Rollout, StageSpec
from tests.conftest import wait_for


@pytest.fixture
def wb_with_other_run(db_url):
    """A store that already holds another run with metrics and groups, to prove it is left
    untouched by whatever goes wrong next."""
    wb = Workbench(db_url)
    other = wb.store.create_run("keep me", "pretrain-base", "smoke", {},
                                [StageSpec("pretrain", "p", {})])
    sid = other.stages[0].id
    wb.store.add_metrics(sid, 1, {"loss": 2.5})
    wb.store.add_groups(sid, 1, [Group(1, 0, "1+1=", "2", 0.5, 0.7, [
        Rollout(0, "<answer>2</answer>", {"accuracy": 1.0}, 1.0, 0.7, 5, False),
        Rollout(1, "3", {"accuracy": 0.0}, 0.0, -0.7, 1, False)])])
    return wb, other.id


def _snapshot(wb: Workbench, run_id: int):
    run = wb.store.get_run(run_id)
    sid = run.stages[0].id
    return (run.name, [s.status for s in run.stages], wb.metric_series(sid, "loss"),
            [(ro.completion, ro.advantage) for g in wb.step_groups(sid, 1) for ro in g.rollouts])


def _run_grpo(wb: Workbench, model_dir: str, **overrides) -> str:
    values = {"model_path": model_dir, "steps": 2, "batch_size": 8, "num_generations": 4,
              "max_completion_length": 8, "eval_every": 0, **overrides}
    spec = StageSpec("grpo", "grpo", GRPOStageConfig.from_dict(values).to_dict())
    run = wb.store.create_run("bad", "r1-zero", "smoke", {}, [spec])
    start_pipeline(wb.store, run.id)
    stage = wait_for(lambda: (s := wb.get_run(run.id).stages[0]).status in
                     ("failed", "completed") and s, 180, what="the stage to end")
    assert stage.status == "failed"
    return stage.error


def test_malformed_dataset_file(wb_with_other_run, tiny_model_dir, tmp_path):
    wb, other = wb_with_other_run
    before = _snapshot(wb, other)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1=", "answer": "2"}\n{"question": "2+2=", "answer": \n')
    error = _run_grpo(wb, tiny_model_dir, dataset=str(bad))
    assert "line 2 is not valid JSON" in error.splitlines()[0]
    assert _snapshot(wb, other) == before


def test_missing_column(wb_with_other_run, tiny_model_dir, tmp_path):
    wb, other = wb_with_other_run
    before = _snapshot(wb, other)
    data = tmp_path / "data.jsonl"
    data.write_text('{"problem": "1+1=", "answer": "2"}\n')
    error = _run_grpo(wb, tiny_model_dir, dataset=str(data)).splitlines()[0]
    assert "question" in error and "problem" in error and "prompt_column" in error
    assert _snapshot(wb, other) == before


def test_model_path_that_does_not_exist_is_refused_at_creation(wb_with_other_run, tmp_path):
    wb, other = wb_with_other_run
    before = _snapshot(wb, other)
    with pytest.raises(ConfigError, match="no_such_model does not exist"):
        wb.create_run("r1-zero", "smoke", {"grpo.model_path": str(tmp_path / "no_such_model")})
    assert [r.name for r in wb.list_runs()] == ["keep me"]
    assert _snapshot(wb, other) == before


@pytest.mark.parametrize("sets, expected", [
    # the group size must divide the completions per step
    ({"grpo.batch_size": "60", "grpo.num_generations": "8"}, "batch_size (60) must be divisible"),
    # one weight per reward function
    ({"grpo.reward_weights": "1.0"}, "reward_weights has 1 values"),
    # a typo in a setting name is refused, not ignored
    ({"grpo.lerning_rate": "1e-4"}, "lerning_rate"),
    # vLLM-incompatible head size
    ({"pretrain.hidden_size": "64", "pretrain.num_heads": "4"}, "use 32 or 64"),
    # not a number
    ({"grpo.steps": "many"}, "not a valid int"),
    # a dataset path that does not exist
    ({"grpo.dataset": "/no/such/data.jsonl"}, "/no/such/data.jsonl does not exist"),
    # numbers out of range
    ({"grpo.learning_rate": "-1e-4"}, "learning_rate=-0.0001 is out of range"),
    ({"grpo.temperature": "0"}, "temperature=0 is out of range"),
    ({"evaluate.k": "0"}, "k must be > 0"),
    # reward options checked now, not in a training step
    ({"grpo.language": "xx"}, "language_consistency supports en, zh"),
])
def test_config_that_cannot_work_is_refused(wb_with_other_run, sets, expected):
    wb, other = wb_with_other_run
    before = _snapshot(wb, other)
    runs_before = len(wb.list_runs())
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        wb.create_run("r1-zero", "smoke", sets)
    assert len(wb.list_runs()) == runs_before  # nothing was created
    assert _snapshot(wb, other) == before


def test_read_only_database_refuses_new_runs(wb_with_other_run, tmp_path):
    wb, other = wb_with_other_run
    before = _snapshot(wb, other)
    # As root, file permissions do not stop writes: open the file read-only instead.
    copy = tmp_path / "copy.db"
    src = sqlite3.connect(wb.store.url.removeprefix("sqlite:///"))
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close(), dst.close()
    ro = Workbench(f"sqlite:///file:{copy}?mode=ro&uri=true")
    assert [r.name for r in ro.list_runs()] == ["keep me"]  # reading still works
    with pytest.raises(StoreError, match="read-only"):
        ro.create_run("pretrain-base", "smoke")
    assert [r.name for r in Workbench(f"sqlite:///{copy}").list_runs()] == ["keep me"]
    assert _snapshot(wb, other) == before
