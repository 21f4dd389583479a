"""Live steering: a bad value is refused by the API and the CLI before anything reaches the
worker; a change that still fails in the worker is recorded and training goes on; the values a
user set survive stop + resume; a temperature change reaches TRL's log-probabilities."""
from __future__ import annotations

import math
import subprocess
import sys
from types import SimpleNamespace

import pytest

from backend import steering
from backend.api import ConfigError, Workbench, WorkbenchError
from backend.runner import start_pipeline
from backend.stages.grpo import GRPOStageConfig
from storage import StageSpec
from tests.conftest import ROOT, wait_for

GRPO_CONFIG = GRPOStageConfig().to_dict()  # rewards accuracy, format; weights 1, 0.5; beta 0


# --------------------------------------------------------------------------- parse_changes
@pytest.mark.parametrize("values, config, expected", [
    # strings from the CLI / form become numbers
    ({"temperature": "0.7"}, {}, {"temperature": 0.7}),
    ({"learning_rate": "1e-4"}, {}, {"learning_rate": 1e-4}),
    # the upper bound itself is allowed
    ({"temperature": "5"}, {}, {"temperature": 5.0}),
    # comma-separated weights, spaces and a trailing comma tolerated
    ({"reward_weights": "1, 0.25,"}, GRPO_CONFIG, {"reward_weights": [1.0, 0.25]}),
    # a list (from the form)
    ({"reward_weights": [2, "3"]}, GRPO_CONFIG, {"reward_weights": [2.0, 3.0]}),
    # a dict changes some weights and keeps the others
    ({"reward_weights": {"format": 0.2}}, GRPO_CONFIG, {"reward_weights": [1.0, 0.2]}),
    # negative weights are allowed (risks() warns about them)
    ({"reward_weights": "1,-1"}, GRPO_CONFIG, {"reward_weights": [1.0, -1.0]}),
    # beta adjusts freely when the stage started with a KL penalty...
    ({"beta": "0.2"}, {**GRPO_CONFIG, "beta": 0.04}, {"beta": 0.2}),
    ({"beta": "0"}, {**GRPO_CONFIG, "beta": 0.04}, {"beta": 0.0}),
    # ...and may stay 0 when it started without one
    ({"beta": "0"}, GRPO_CONFIG, {"beta": 0.0}),
    # several at once
    ({"temperature": 0.9, "learning_rate": 2e-5}, {}, {"temperature": 0.9, "learning_rate": 2e-5}),
])
def test_parse_changes_accepts(values, config, expected):
    assert steering.parse_changes(steering.GRPO_PARAMS, values, config, "grpo") == expected


@pytest.mark.parametrize("values, config, expected", [
    ({"temperature": "abc"}, {}, ["temperature='abc' is not a number"]),
    ({"temperature": "-1"}, {}, ["temperature=-1 is out of range", "> 0"]),
    # zero would divide the logits by zero
    ({"temperature": "0"}, {}, ["temperature=0 is out of range"]),
    ({"temperature": "5.5"}, {}, ["out of range", "<= 5"]),
    ({"temperature": "nan"}, {}, ["finite"]),
    ({"learning_rate": "inf"}, {}, ["finite"]),
    ({"learning_rate": "10"}, {}, ["learning_rate=10 is out of range", "<= 1"]),
    ({"learning_rate": "0"}, {}, ["learning_rate=0 is out of range"]),
    ({"beta": "-0.1"}, {**GRPO_CONFIG, "beta": 0.04}, ["beta=-0.1 is out of range"]),
    # no reference model was loaded: beta cannot be switched on live
    ({"beta": "0.1"}, GRPO_CONFIG, ["beta cannot become non-zero", "started with beta=0"]),
    ({"reward_weights": "1"}, GRPO_CONFIG, ["needs 2 values", "accuracy, format", "got 1"]),
    ({"reward_weights": "1,2,3"}, GRPO_CONFIG, ["needs 2 values", "got 3"]),
    ({"reward_weights": "1,x"}, GRPO_CONFIG, ["weight 2='x' is not a number"]),
    ({"reward_weights": "1,11"}, GRPO_CONFIG, ["weight 2=11 is out of range"]),
    ({"reward_weights": {"fromat": 1}}, GRPO_CONFIG, ["unknown reward(s) fromat",
                                                      "accuracy, format"]),
    ({"top_k": "5"}, {}, ["top_k is not adjustable live in a grpo stage",
                          "temperature, beta, reward_weights, learning_rate"]),
    ({}, {}, ["no change given"]),
    # every problem in one message, not just the first
    ({"temperature": "abc", "learning_rate": "10", "foo": "1"}, {},
     ["temperature='abc'", "learning_rate=10", "foo is not adjustable"]),
])
def test_parse_changes_refuses_with_a_message(values, config, expected):
    with pytest.raises(steering.SteeringError) as info:
        steering.parse_changes(steering.GRPO_PARAMS, values, config, "grpo")
    for part in expected:
        assert part in str(info.value), f"{part!r} missing from: {info.value}"


def test_a_trainer_stage_steers_only_its_learning_rate():
    assert steering.parse_changes(steering.TRAINER_PARAMS, {"learning_rate": "5e-4"}, {},
                                  "pretrain") == {"learning_rate": 5e-4}
    with pytest.raises(steering.SteeringError, match="temperature is not adjustable live in a "
                                                     "pretrain stage.*adjustable: learning_rate"):
        steering.parse_changes(steering.TRAINER_PARAMS, {"temperature": "0.5"}, {}, "pretrain")


# --------------------------------------------------------------------------- risks
@pytest.mark.parametrize("current, new, expected", [
    # exactly 10x up from TRL's default-sized rate: the classic way to collapse a policy
    ({"learning_rate": 3e-5}, {"learning_rate": 3e-4}, ["3e-05 -> 0.0003 is a 10x"]),
    ({"learning_rate": 1e-6}, {"learning_rate": 1e-5}, ["10x"]),
    ({"learning_rate": 3e-5}, {"learning_rate": 1e-3}, ["33x"]),
    # 10x down is flagged too (training silently stalls)
    ({"learning_rate": 3e-5}, {"learning_rate": 3e-6}, ["10x"]),
    # small changes are not
    ({"learning_rate": 3e-5}, {"learning_rate": 6e-5}, []),
    ({"learning_rate": 3e-5}, {"learning_rate": 2.9e-4}, []),
    # near-random sampling
    ({"temperature": 1.0}, {"temperature": 2.5}, ["temperature 2.5"]),
    ({"temperature": 1.0}, {"temperature": 1.9}, []),
    # a negative weight rewards failing that reward, named
    ({}, {"reward_weights": [1.0, -0.5]}, ["negative weight on format (-0.5)"]),
    ({}, {"reward_weights": [1.0, 0.0]}, []),
    # two risks in one change, both reported
    ({"learning_rate": 1e-5, "temperature": 1.0},
     {"learning_rate": 1e-3, "temperature": 3.0}, ["100x", "temperature 3"]),
])
def test_risks(current, new, expected):
    found = steering.risks(current, new, GRPO_CONFIG)
    assert len(found) == len(expected), found
    for risk, part in zip(found, expected):
        assert part in risk, f"{part!r} missing from: {risk}"


# --------------------------------------------------------------------------- API and CLI
@pytest.fixture
def running_grpo(db_url):
    """An r1-zero run whose GRPO stage the store says is running (no worker: commands stay
    pending, so what the API sent is exactly what the store holds)."""
    wb = Workbench(db_url)
    run = wb.create_run("r1-zero", "smoke", start=False)
    stage = next(s for s in run.stages if s.kind == "grpo")
    assert wb.store.transition(stage.id, ["queued"], "running")
    return wb, stage.id


@pytest.mark.parametrize("values, expected", [
    ({"temperature": "abc"}, "temperature='abc' is not a number"),
    ({"temperature": "-1"}, "temperature=-1 is out of range"),
    ({"learning_rate": "10"}, "learning_rate=10 is out of range"),
    ({"reward_weights": "1,0.5,2"}, "reward_weights needs 2 values"),
    ({"lerning_rate": "1e-4"}, "lerning_rate is not adjustable live"),
    ({"beta": "0.1"}, "beta cannot become non-zero"),
    # one bad value spoils the whole change: the good one is not sent either
    ({"temperature": "0.5", "learning_rate": "-1"}, "learning_rate=-1 is out of range"),
])
def test_api_refuses_a_bad_value_and_sends_nothing(running_grpo, values, expected):
    wb, stage_id = running_grpo
    with pytest.raises(ConfigError) as info:
        wb.set_params(stage_id, values)
    assert expected in str(info.value)
    assert wb.store.commands(stage_id) == []
    assert wb.get_stage(stage_id).status == "running"


def test_api_sends_a_good_value_parsed(running_grpo):
    wb, stage_id = running_grpo
    assert "next step" in wb.set_params(stage_id, {"temperature": "0.5",
                                                   "reward_weights": {"format": "0.25"}})
    [cmd] = wb.store.commands(stage_id)
    assert cmd.kind == "set"
    assert cmd.payload == {"temperature": 0.5, "reward_weights": [1.0, 0.25]}


def test_api_refuses_changes_to_a_stage_that_is_not_running(db_url):
    wb = Workbench(db_url)
    run = wb.create_run("r1-zero", "smoke", start=False)
    stage_id = run.stages[1].id
    with pytest.raises(WorkbenchError, match="queued"):
        wb.set_params(stage_id, {"temperature": "0.5"})
    assert wb.store.commands(stage_id) == []


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args, "--db", db_url],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_cli_set_refuses_a_bad_value_and_asks_before_a_risky_one(running_grpo, db_url):
    wb, stage_id = running_grpo
    done = _cli(db_url, "set", str(stage_id), "temperature=abc")
    assert done.returncode != 0
    assert "temperature='abc' is not a number" in done.stderr
    assert wb.store.commands(stage_id) == []

    lr = GRPO_CONFIG["learning_rate"]
    done = _cli(db_url, "set", str(stage_id), f"learning_rate={10 * lr:g}")
    assert done.returncode != 0
    assert "risky" in done.stderr and "10x" in done.stderr and "--yes" in done.stderr
    assert wb.store.commands(stage_id) == []

    done = _cli(db_url, "set", str(stage_id), f"learning_rate={10 * lr:g}", "--yes")
    assert done.returncode == 0, done.stderr
    [cmd] = wb.store.commands(stage_id)
    assert cmd.payload == {"learning_rate": pytest.approx(10 * lr)}


# --------------------------------------------------------------------------- temperature
def _tiny():
    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=1, num_heads=1,
                                           num_kv_heads=1, intermediate_size=64), tok)
    return model.eval(), tok


def _token_logprobs(model, input_ids, temperature: float):
    """log p(next token) at ``temperature``, from the full logits (the unfused path)."""
    import torch

    logits = model(input_ids).logits[:, :-1]  # (B, T-1, V)
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)


def test_temperature_setter_reaches_the_logprob_head():
    """TRL divides the logits by the temperature inside the fused LM head it patched on when
    the trainer was built; the live setter must change that too, so the loss's log-probs are
    computed at the temperature the completions were sampled at."""
    import torch
    from transformers import GenerationConfig
    from trl.trainer.utils import add_fused_lm_head

    from backend.stages.grpo import grpo_setters

    torch.manual_seed(0)
    policy, tok = _tiny()
    ref, _ = _tiny()
    for model in (policy, ref):  # what GRPOTrainer does when it is built
        add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))
    trainer = SimpleNamespace(
        accelerator=SimpleNamespace(unwrap_model=lambda m: m), model=policy, ref_model=ref,
        args=SimpleNamespace(cast_lm_head_to_fp32=False), temperature=1.0,
        generation_config=GenerationConfig(temperature=1.0, do_sample=True),
        generation_kwargs={"temperature": 1.0}, vllm_generation=None,
        reward_func_names=["accuracy", "format"])
    setters = grpo_setters(trainer)
    input_ids = tok(["12+345=357", "9+9=18"], return_tensors="pt", padding=True)["input_ids"]

    def fused(model):
        return model(input_ids, labels=input_ids, fused_lm_head=True).log_probs

    def greedy():
        return policy.generate(input_ids, max_new_tokens=6, do_sample=False,
                               pad_token_id=tok.pad_token_id)

    with torch.no_grad():
        before = greedy()
        at_one = _token_logprobs(policy, input_ids, 1.0)
        torch.testing.assert_close(fused(policy), at_one)
        for t in (0.5, 2.0):  # a second change wraps the first: the newest value wins
            assert f"temperature = {t:g}" in setters["temperature"](t)
            for model in (policy, ref):
                expected = _token_logprobs(model, input_ids, t)
                torch.testing.assert_close(fused(model), expected)
                assert not torch.allclose(expected, _token_logprobs(model, input_ids, 1.0))
    assert trainer.temperature == 2.0
    assert trainer.generation_config.temperature == 2.0
    assert trainer.generation_kwargs["temperature"] == 2.0
    # Generation still runs through the original forward: the same tokens as before.
    with torch.no_grad():
        after = greedy()
    assert after.shape[1] > input_ids.shape[1]
    assert torch.equal(after, before)


def test_grpo_setters_refuse_what_the_trainer_cannot_do():
    from backend.stages.grpo import grpo_setters

    trainer = SimpleNamespace(ref_model=None, beta=0.0, reward_func_names=["accuracy", "format"],
                              reward_weights=None)
    setters = grpo_setters(trainer)
    with pytest.raises(ValueError, match="no reference model"):
        setters["beta"](0.1)
    assert "beta = 0" in setters["beta"](0.0)
    with pytest.raises(ValueError, match="need 2 weights"):
        setters["reward_weights"]([1.0])
    assert "format 0.25" in setters["reward_weights"]([1.0, 0.25])
    assert trainer.reward_weights.tolist() == [1.0, 0.25]


# --------------------------------------------------------------------------- in a real worker
def _grpo_spec(model_dir: str, **overrides) -> StageSpec:
    values = {"model_path": model_dir, "steps": 30, "batch_size": 8, "num_generations": 4,
              "max_completion_length": 12, "eval_every": 0, "save_steps": 100, "seed": 3,
              **overrides}
    return StageSpec("grpo", "grpo", GRPOStageConfig.from_dict(values).to_dict())


def _steer_series(wb: Workbench, stage_id: int, name: str) -> dict[int, float]:
    return dict(zip(*wb.metric_series(stage_id, f"steer/{name}")))


def _applied(wb: Workbench, stage_id: int, command_id: int):
    cmd = next(c for c in wb.commands(stage_id) if c.id == command_id)
    return cmd if cmd.applied_at is not None else None


def test_a_change_that_fails_in_the_worker_leaves_the_stage_running(tiny_model_dir, db_url):
    wb = Workbench(db_url)
    run = wb.store.create_run("bad set", "r1-zero", "custom", {},
                              [_grpo_spec(tiny_model_dir, beta=0.0)])
    stage_id = run.stages[0].id
    # Bypass the API's validation, as an older client or a race with the config could.
    bad_id = wb.store.add_command(stage_id, "set", {"beta": 0.5})
    start_pipeline(wb.store, run.id)
    bad = wait_for(lambda: _applied(wb, stage_id, bad_id), 240, what="the bad command")
    assert bad.failed and "beta" in bad.error and "beta=0" in bad.error
    assert wb.get_stage(stage_id).status == "running"

    good_step = wb.get_stage(stage_id).step
    wb.set_params(stage_id, {"temperature": "0.7"})
    good_id = wb.commands(stage_id)[-1].id
    good = wait_for(lambda: _applied(wb, stage_id, good_id), 120, what="the good command")
    wait_for(lambda: wb.get_run(run.id).status in ("completed", "failed"), 400,
             what="the stage to end")

    stage = wb.get_stage(stage_id)
    assert stage.status == "completed", stage.error
    assert stage.step == 30
    assert good.error is None and good.applied_step >= good_step
    assert "temperature = 0.7" in good.result
    assert stage.params["beta"] == 0.0 and stage.params["temperature"] == 0.7
    assert set(_steer_series(wb, stage_id, "beta").values()) == {0.0}
    temps = _steer_series(wb, stage_id, "temperature")
    assert all(t == (0.7 if s > good.applied_step else 1.0) for s, t in temps.items())
    warnings = [e.message for e in wb.events(run.id) if e.level == "warning"]
    assert any("failed at step" in m and "beta" in m for m in warnings)


def test_steering_survives_stop_and_resume(tiny_model_dir, db_url):
    wb = Workbench(db_url)
    steps = 200
    run = wb.store.create_run("resume", "r1-zero", "custom", {},
                              [_grpo_spec(tiny_model_dir, steps=steps, save_steps=50)])
    stage_id = run.stages[0].id
    start_pipeline(wb.store, run.id)
    wait_for(lambda: wb.get_stage(stage_id).step >= 3, 240, what="3 GRPO steps")
    # Held by a pause while the change applies and the stop lands: on a quiet machine the
    # tiny model's steps take ~0.05 s, and an unpaused stage could finish first.
    wb.pause(stage_id)
    wait_for(lambda: wb.get_stage(stage_id).status == "paused", 120, what="paused")
    wb.set_params(stage_id, {"temperature": "0.5"})
    set_cmd = wait_for(lambda: (c := next(c for c in wb.commands(stage_id)
                                          if c.kind == "set")).applied_at and c, 60,
                       what="the change to apply")
    assert set_cmd.error is None
    wb.stop(stage_id)
    stopped = wait_for(lambda: (s := wb.get_stage(stage_id)).status == "stopped" and s, 120,
                       what="stop")
    assert stopped.step < steps, "the stage must stop before it finishes for this test to count"
    assert wb.run_status(run.id)["stages"][0]["params"]["temperature"] == 0.5

    wb.resume(stage_id)
    wait_for(lambda: wb.get_run(run.id).status in ("completed", "failed"), 400,
             what="the resumed stage to end")
    status = wb.run_status(run.id)["stages"][0]
    assert status["status"] == "completed", status["error"]
    assert status["params"]["temperature"] == 0.5

    temps = _steer_series(wb, stage_id, "temperature")
    after = {s: t for s, t in temps.items() if s > stopped.step}
    assert sorted(after) == list(range(stopped.step + 1, steps + 1))  # every resumed step
    assert set(after.values()) == {0.5}, after
    assert all(t == 1.0 for s, t in temps.items() if s <= set_cmd.applied_step)
    events = [e.message for e in wb.events(run.id)]
    assert any("re-applied" in m and "temperature = 0.5" in m for m in events)
