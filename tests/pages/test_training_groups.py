"""The Live training and Group inspector pages, driven through Streamlit's AppTest against a
store the tests fill directly (metrics, steering commands, hand-made GRPO groups): no
training, no background processes."""
from __future__ import annotations

import html
import json
import os
import re
import socket
from datetime import timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend.api import Workbench
from tests.pages.imports import training_libs_imported
from storage import Store
from storage.records import Group, Rollout, StageSpec
from storage.store import now

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def store(home, monkeypatch) -> Store:
    # A fresh data home (conftest's ``home``); nothing is ever started.
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return Store()


def grpo_run(store: Store, name: str = "r1-zero", **stage_fields) -> tuple[int, int]:
    """A one-stage GRPO run (smoke config: accuracy + format, weights 1.0,0.5)."""
    config = next(s for s in Workbench.default_stages("r1-zero", "smoke") if s.kind == "grpo")
    run = store.create_run(name, "r1-zero", "smoke", {"sets": {}},
                           [StageSpec("grpo", "R1-Zero GRPO", dict(config.config))])
    stage_id = run.stages[0].id
    if stage_fields:
        store.update_stage(stage_id, **stage_fields)
    return run.id, stage_id


def running(**extra) -> dict:
    # This test process stands in for the worker, so the runner's reaper sees it alive.
    return dict(status="running", step=6, total_steps=60, pid=os.getpid(),
                host=socket.gethostname(), started_at=now() - timedelta(seconds=30),
                heartbeat_at=now(), attempt_started_step=0, **extra)


def log_steps(store: Store, stage_id: int, accuracy: dict[int, float], fmt: float,
              steps: int = 6) -> None:
    """Per-step TRL metrics, steering values and held-out evals at the given steps."""
    for step in range(1, steps + 1):
        store.add_metrics(stage_id, step, {
            "reward": 0.5 * fmt + 0.1 * step, "reward_std": 0.2,
            "rewards/accuracy/mean": 0.1 * step, "rewards/accuracy/std": 0.3,
            "rewards/format/mean": fmt, "rewards/format/std": 0.0,
            "entropy": 1.0 - 0.05 * step, "clip_ratio/region_mean": 0.0,
            "clip_ratio/low_mean": 0.0, "clip_ratio/high_mean": 0.0,
            "completions/mean_length": 10.0 + step, "completions/clipped_ratio": 0.1,
            "frac_reward_zero_std": 0.25, "learning_rate": 3e-5, "loss": 0.01,
            "grad_norm": 0.5, "step_time": 0.4,
            "steer/temperature": 1.0 if step <= 3 else 0.7, "steer/beta": 0.0,
            "steer/weight/accuracy": 1.0, "steer/weight/format": 0.5,
        })
    for step, acc in accuracy.items():
        store.add_metrics(stage_id, step, {"eval/accuracy": acc, "eval/think_rate": 0.8,
                                           "eval/accuracy_lenient": acc,
                                           "eval/answer_tag_rate": 1.0})


def page(name: str, run_id: int | None = None, stage_id: int | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    if run_id is not None:
        at.query_params["run"] = str(run_id)
    if stage_id is not None:
        at.query_params["stage"] = str(stage_id)
    at.switch_page(f"pages/{name}.py")
    return at.run()


def progress_text(at: AppTest) -> str:
    """The text above the stage's progress bar."""
    bar = next(m.value for m in at.markdown if 'class="wb-progress"' in m.value)
    return html.unescape(re.search(r'margin-bottom:.3rem">(.*?)</div>', bar).group(1))


def tiles(at: AppTest) -> dict[str, str]:
    """Number tiles drawn as HTML (label -> shown value)."""
    return {html.unescape(label): html.unescape(value) for m in at.markdown
            for label, value in re.findall(r'data-label="([^"]*)" data-value="([^"]*)"', m.value)}


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def number_input(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


# -- Live training ---------------------------------------------------------------------------
def test_live_training_charts_show_curves_and_the_steering_marker(store):
    run_id, stage_id = grpo_run(store, **running())
    log_steps(store, stage_id, {0: 0.3, 3: 0.5, 6: 0.6}, fmt=0.9)
    cmd = store.add_command(stage_id, "set", {"temperature": 0.7})
    store.mark_command_applied(cmd, 3, "temperature = 0.7")
    store.add_command(stage_id, "pause")  # not applied yet: no marker, "waiting" in the log
    at = page("training", run_id)
    assert not at.exception
    assert at.selectbox[1].value == stage_id
    assert progress_text(at).startswith("step 6/60")
    figs = figures(at)
    assert len(figs) >= 8
    titles = [f["layout"]["title"]["text"] for f in figs]
    for wanted in ("Reward", "Held-out accuracy", "completion length", "KL", "Entropy",
                   "Clip ratio", "zero reward variance", "Learning rate"):
        assert any(wanted in t for t in titles), (wanted, titles)
    reward = figs[titles.index("Reward (group means)")]
    assert {t["name"] for t in reward["data"]} == {"total (weighted)", "accuracy", "format"}
    # Every chart marks step 3 with a dashed line and the change that took effect there.
    for fig in figs:
        assert any(s.get("x0") == 3 and s["line"]["dash"] == "dash"
                   for s in fig["layout"]["shapes"])
        assert "temperature=0.7" in [a["text"] for a in fig["layout"]["annotations"]]
    kl = figs[titles.index("KL to the reference model")]
    assert any("beta = 0" in a["text"] for a in kl["layout"]["annotations"])
    log = at.dataframe[0].value
    assert list(log["command"]) == ["pause", "temperature=0.7"]  # newest first
    assert log["applied at step"].iloc[1] == 3
    assert "waiting" in log["result"].iloc[0]
    assert not at.warning  # healthy curves: no collapse callout


def test_collapse_warning_when_accuracy_falls_while_format_stays_high(store):
    run_id, stage_id = grpo_run(store, **running())
    log_steps(store, stage_id, {0: 0.4, 3: 0.97, 6: 0.30}, fmt=1.0)
    at = page("training", run_id)
    warning = texts(at.warning)
    assert "Accuracy fell from 97% (step 3) to 30% (step 6) while format stayed at 100%" \
        in warning
    assert "Lower the learning rate live" in warning


def test_no_collapse_warning_when_format_fell_too(store):
    run_id, stage_id = grpo_run(store, **running())
    log_steps(store, stage_id, {0: 0.4, 3: 0.97, 6: 0.30}, fmt=0.2)
    at = page("training", run_id)
    assert "policy collapse" not in texts(at.warning)


EFFECTIVE = {"temperature": 0.7, "beta": 0.0, "reward_weights": [1.0, 0.5],
             "learning_rate": 3e-5}


def apply_as_worker(store: Store, stage_id: int, step: int) -> None:
    """What the worker does at a step boundary: apply the pending changes, store the
    effective values, mark the commands applied."""
    params = dict(store.get_stage(stage_id).params)
    for cmd in store.pending_commands(stage_id):
        params.update(cmd.payload)
        store.mark_command_applied(cmd.id, step, "applied")
    store.update_stage(stage_id, params=params, step=step)


def steer(at: AppTest, **values: float) -> AppTest:
    for label, value in values.items():
        number_input(at, label.replace("_", " ")).set_value(value)
    next(b for b in at.button if b.label == "Apply at next step").click()
    return at.run()


def test_collapse_warning_when_every_reward_falls(store):
    # A learning rate of 10 set live: accuracy and format fall together (the rule above stays
    # silent, format is not high), and the warning names the change before the fall.
    run_id, stage_id = grpo_run(store, **running())
    store.update_stage(stage_id, step=14)
    for step in range(1, 15):
        good = step <= 7
        store.add_metrics(stage_id, step, {"reward": 1.4 if good else 0.1,
                                           "rewards/accuracy/mean": 0.9 if good else 0.05,
                                           "rewards/format/mean": 1.0 if good else 0.1})
    cmd = store.add_command(stage_id, "set", {"learning_rate": 10.0})
    store.mark_command_applied(cmd, 8, "learning_rate = 10")
    at = page("training", run_id)
    warning = texts(at.warning)
    assert "Every reward fell (accuracy 0.90 → 0.05" in warning
    assert "It began after the live change learning_rate=10 (step 8)" in warning


def test_steering_form_is_prefilled_and_sends_only_the_changed_values(store):
    run_id, stage_id = grpo_run(store, **running(params=EFFECTIVE))
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    at = page("training", run_id)
    # The effective values the worker stored, not the config's (temperature 1.0 there).
    assert number_input(at, "Temperature").value == pytest.approx(0.7)
    assert number_input(at, "Weight: accuracy").value == pytest.approx(1.0)
    assert number_input(at, "Weight: format").value == pytest.approx(0.5)
    assert number_input(at, "Learning rate").value == pytest.approx(3e-5)
    assert number_input(at, "KL beta").disabled  # started with beta 0: no reference model
    number_input(at, "Temperature").set_value(0.9)
    number_input(at, "Weight: format").set_value(0.0)
    next(b for b in at.button if b.label == "Apply at next step").click()
    at.run()
    assert not at.exception
    (cmd,) = store.commands(stage_id)
    assert cmd.kind == "set"
    # Weights go as the whole list, so an earlier change of another weight is kept.
    assert cmd.payload == {"temperature": pytest.approx(0.9), "reward_weights": [1.0, 0.0]}
    assert "applied at the next step boundary" in texts(at.success)


def test_two_steering_changes_in_a_row_are_both_sent(store):
    run_id, stage_id = grpo_run(store, **running(params=EFFECTIVE))
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    at = steer(page("training", run_id), Temperature=0.8)
    apply_as_worker(store, stage_id, 7)
    at.run()  # the page polls, sees the command applied and redraws the form
    assert number_input(at, "Temperature").value == pytest.approx(0.8)
    steer(at, Temperature=0.6)
    assert [c.payload["temperature"] for c in store.commands(stage_id)] == [
        pytest.approx(0.8), pytest.approx(0.6)]


def test_a_change_made_from_the_cli_shows_in_the_form(store):
    run_id, stage_id = grpo_run(store, **running(params=EFFECTIVE))
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    at = page("training", run_id)
    Workbench().set_params(stage_id, {"learning_rate": "1e-5"})
    apply_as_worker(store, stage_id, 7)
    at.run()
    assert number_input(at, "Learning rate").value == pytest.approx(1e-5)
    assert "learning_rate=1e-05" in list(at.dataframe[0].value["command"])


def test_a_bad_steering_value_is_refused_with_a_message(store):
    run_id, stage_id = grpo_run(store, **running(params=EFFECTIVE))
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    at = steer(page("training", run_id), Temperature=-1.0)
    assert "Not sent: temperature=-1 is out of range" in texts(at.error)
    assert store.commands(stage_id) == []


def test_a_risky_change_asks_for_a_confirmation(store):
    run_id, stage_id = grpo_run(store, **running(params=EFFECTIVE))
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    at = steer(page("training", run_id), Learning_rate=3e-4)
    assert "a much higher rate can collapse the policy" in texts(at.warning)
    assert store.commands(stage_id) == []
    at.button(key=f"steer_confirm_{stage_id}").click().run()
    (cmd,) = store.commands(stage_id)
    assert cmd.payload == {"learning_rate": pytest.approx(3e-4)}


def test_steering_is_disabled_for_a_finished_stage(store):
    run_id, stage_id = grpo_run(store, status="completed", step=6, total_steps=6,
                                started_at=now() - timedelta(seconds=20), ended_at=now())
    log_steps(store, stage_id, {0: 0.3, 6: 0.5}, fmt=0.9)
    at = page("training", run_id)
    assert next(b for b in at.button if b.label == "Apply at next step").disabled
    assert number_input(at, "Temperature").disabled
    assert "Steering needs a running or paused stage" in texts(at.caption)


def test_live_training_opens_on_the_run_with_a_running_grpo_stage(store):
    active_run, active_stage = grpo_run(store, "active", **running())
    grpo_run(store, "newer, not started")
    at = page("training")
    assert at.selectbox[0].value == active_run and at.selectbox[1].value == active_stage
    assert "No metrics yet" in texts(at.info)


def test_chart_redraw_period_is_a_choice_while_the_stage_runs(store):
    run_id, stage_id = grpo_run(store, **running())
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    at = page("training", run_id)
    redraw = next(b for b in at.button_group if b.label == "Redraw the charts every")
    assert redraw.value == "10 s"
    redraw.set_value("never").run()
    assert not at.exception and len(figures(at)) >= 8  # still drawn, just not refreshed
    store.update_stage(stage_id, status="completed", pid=None)
    at = page("training", run_id)
    assert not [b for b in at.button_group if b.label == "Redraw the charts every"]
    assert len(figures(at)) >= 8


# -- Group inspector -------------------------------------------------------------------------
def rollout(i: int, text: str, acc: float, fmt: float, adv: float, length: int = 12,
            truncated: bool = False) -> Rollout:
    return Rollout(sample_index=i, completion=text, rewards={"accuracy": acc, "format": fmt},
                   reward=acc + 0.5 * fmt, advantage=adv, length=length, truncated=truncated)


GOOD = "<think>3+4=7</think><answer>7</answer>"
WRONG = "<think>3+4=8</think><answer>8</answer>"


def groups(step: int) -> list[Group]:
    return [
        # mixed: one right answer among four
        Group(step, 0, "3+4=", "7", 0.875, 0.5, [
            rollout(0, WRONG, 0, 1, -0.5), rollout(1, GOOD, 1, 1, 1.5),
            rollout(2, WRONG, 0, 1, -0.5), rollout(3, WRONG, 0, 1, -0.5)]),
        # zero variance: all wrong in the same way
        Group(step, 1, "12+7=", "19", 0.5, 0.0, [
            rollout(i, "<think>1+2=3</think><answer>39</answer>", 0, 1, 0.0) for i in range(4)]),
        # truncated and unparseable completions
        Group(step, 2, "55+5=", "60", 0.25, 0.29, [
            rollout(0, "<think>5+5=10,5+0+1=6</think><answer>60</answer>", 1, 1, 1.4),
            rollout(1, "<think>5+5=10,5+5=10,5+5=10,5+5", 0, 0, -0.6, length=24,
                    truncated=True),
            rollout(2, "60", 0, 0, -0.4),
            rollout(3, "<think>5+5=10</think><answer>61</answer>", 0, 1, -0.4)]),
        # all correct
        Group(step, 3, "1+1=", "2", 1.5, 0.0, [
            rollout(i, "<think>1+1=2</think><answer>2</answer>", 1, 1, 0.0) for i in range(4)]),
    ]


@pytest.fixture
def inspected(store) -> tuple[int, int]:
    run_id, stage_id = grpo_run(store, status="completed", step=2, total_steps=2)
    store.add_groups(stage_id, 1, groups(1))
    store.add_groups(stage_id, 2, groups(2))
    return run_id, stage_id


def group_blocks(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if 'class="wb-group"' in m.value]


def test_inspector_shows_summary_histogram_and_groups_sorted_by_advantage(inspected):
    at = page("groups", inspected[0])
    assert not at.exception
    assert at.select_slider[0].value == 2  # the newest step
    metrics = tiles(at)
    assert metrics["Groups"] == "4"
    assert metrics["Zero-variance groups"] == "50%"   # groups 1 and 3
    assert metrics["Truncated"] == "6%"                # 1 of 16
    assert metrics["No answer"] == "12%"               # 2 of 16
    (hist,) = [f for f in figures(at) if "Advantages" in f["layout"].get("title", {}).get("text", "")]
    assert sum(len(t["x"]) for t in hist["data"]) == 16
    blocks = group_blocks(at)
    assert len(blocks) == 4
    advantages = [float(a) for a in re.findall(r'class="wb-adv">([+-][\d.]+)<', blocks[0])]
    assert advantages == [1.5, -0.5, -0.5, -0.5]  # best first
    assert "rgba(46,160,67" in blocks[0] and "rgba(218,54,51" in blocks[0]  # green, red
    assert '<span class="wb-think">3+4=7</span>' in blocks[0]
    assert '<span class="wb-answer">7</span>' in blocks[0]


def test_inspector_flags_zero_variance_truncated_and_unparseable(inspected):
    at = page("groups", inspected[0])
    labels = [e.label for e in at.expander]
    assert any("#1" in label and "zero variance" in label for label in labels)
    blocks = group_blocks(at)
    assert "all rewards equal: no learning signal" in blocks[1]
    assert "hit max_completion_length" in blocks[2]
    assert "no &lt;answer&gt; tag / nothing to compare" in blocks[2]
    assert "no learning signal" not in blocks[0]


def test_inspector_flags_a_wrong_answer_with_a_positive_advantage(store):
    # Format outweighs accuracy: a wrong answer in form beats the right one without tags.
    run_id, stage_id = grpo_run(store, status="completed", step=1, total_steps=1)
    store.add_groups(stage_id, 1, [Group(1, 0, "3+4=", "7", 0.75, 0.25, [
        Rollout(0, WRONG, {"accuracy": 0.0, "format": 1.0}, 0.5, 0.7, 12, False),
        Rollout(1, "7", {"accuracy": 1.0, "format": 0.0}, 1.0 * 0 + 0.4, -0.7, 2, False)]),
        groups(1)[3]])
    at = page("groups", run_id)
    assert tiles(at)["Wrong, rewarded"] == "1"
    (first, _) = group_blocks(at)
    assert "1 wrong answer(s) with a positive advantage" in first
    assert "⚠ wrong, rewarded" in first
    at.session_state["gi_flags"] = ["wrong answer rewarded"]
    at.run()
    assert len(group_blocks(at)) == 1 and "3+4=" in group_blocks(at)[0]


def test_inspector_judges_correct_by_the_accuracy_reward_when_the_stage_lacks_it(store):
    # A stage trained on format only: the inspector still says which answers are right.
    run_id, stage_id = grpo_run(store, status="completed", step=1, total_steps=1)
    store.add_groups(stage_id, 1, [Group(1, 0, "3+4=", "7", 1.0, 0.0, [
        Rollout(0, GOOD, {"format": 1.0}, 1.0, 0.0, 12, False),
        Rollout(1, WRONG, {"format": 1.0}, 1.0, 0.0, 12, False)])])
    at = page("groups", run_id)
    assert tiles(at)["Correct"] == "50%"
    assert "1/2 correct" in group_blocks(at)[0]


def test_inspector_escapes_model_text(store):
    run_id, stage_id = grpo_run(store, status="completed", step=1, total_steps=1)
    store.add_groups(stage_id, 1, [Group(1, 0, "1+1=", "2", 0.0, 0.0, [
        rollout(0, "<script>alert(1)</script>", 0, 0, 0.0),
        rollout(1, "<b>bold</b>", 0, 0, 0.0)])])
    at = page("groups", run_id)
    (block,) = group_blocks(at)
    assert "<script>" not in block and "&lt;script&gt;" in block
    assert "<b>bold" not in block


def test_inspector_filters_and_search_reduce_the_groups(inspected):
    at = page("groups", inspected[0])
    at.session_state["gi_outcome"] = "All wrong"
    at.run()
    assert [e.label.split("**")[1] for e in at.expander if e.label.startswith("**#")] == ["#1"]
    at.session_state["gi_outcome"] = "All"
    at.session_state["gi_flags"] = ["truncated"]
    at.run()
    assert len(group_blocks(at)) == 1 and "55+5=" in group_blocks(at)[0]
    at.session_state["gi_flags"] = []
    at.text_input(key="gi_search").input("3+4").run()
    blocks = group_blocks(at)
    assert len(blocks) == 1 and "3+4=" in blocks[0]
    at.text_input(key="gi_search").input("no such text").run()
    assert not group_blocks(at)
    assert "No group of the 4 matches" in texts(at.caption)


def test_inspector_sorts_by_reward_spread(inspected):
    at = page("groups", inspected[0])
    at.selectbox(key="gi_sort").select("Highest reward spread").run()
    labels = [e.label for e in at.expander if e.label.startswith("**#")]
    assert labels[0].startswith("**#0**") or labels[0].startswith("**#2**")
    assert labels[-1].startswith("**#1**") or labels[-1].startswith("**#3**")


def test_inspector_pages_through_many_groups(store):
    run_id, stage_id = grpo_run(store, status="completed", step=1, total_steps=1)
    many = [Group(1, i, f"{i}+1=", str(i + 1), 0.0, 0.0,
                  [rollout(j, "5", 0, 0, 0.0) for j in range(16)]) for i in range(25)]
    store.add_groups(stage_id, 1, many)
    at = page("groups", run_id)
    assert len(group_blocks(at)) == 10
    at.number_input(key=f"gi_page_{stage_id}").set_value(3).run()
    assert len(group_blocks(at)) == 5
    assert "Groups 21–25 of 25" in texts(at.caption)


def test_follow_a_prompt_across_steps(inspected):
    run_id, stage_id = inspected
    at = page("groups", run_id)
    at.button(key="follow_2").click().run()
    assert at.selectbox(key=f"history_prompt_{stage_id}").value == "55+5="
    history = at.dataframe[-1].value
    assert list(history["step"]) == [1, 2]
    assert history["mean reward"].tolist() == pytest.approx([0.25, 0.25])
    assert any(e.label.startswith("Step 2 · ") for e in at.expander)


def test_choosing_an_earlier_step_shows_its_groups(inspected, store):
    run_id, stage_id = inspected
    store.add_groups(stage_id, 3, groups(3)[:1])
    at = page("groups", run_id)
    assert at.select_slider[0].value == 3 and len(group_blocks(at)) == 1
    at.select_slider[0].set_value(1).run()
    assert len(group_blocks(at)) == 4


def test_inspector_follows_a_running_stage_unless_the_url_names_a_step(inspected, store):
    store.update_stage(inspected[1], **running())
    at = page("groups", inspected[0])
    assert at.toggle[0].value
    assert "Following live: step 2, the newest recorded" in texts(at.caption)
    assert len(group_blocks(at)) == 4
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params.update({"run": str(inspected[0]), "stage": str(inspected[1]), "step": "1"})
    at.switch_page("pages/groups.py").run()
    assert at.select_slider[0].value == 1
    assert not at.toggle[0].value


def test_both_pages_render_without_training_libraries(inspected, store):
    # The UI never trains: these pages must not pull in torch / transformers / trl.
    run_id, stage_id = inspected
    log_steps(store, stage_id, {0: 0.3}, fmt=0.9)
    out = training_libs_imported(run_id, ['pages/training.py', 'pages/groups.py'])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
