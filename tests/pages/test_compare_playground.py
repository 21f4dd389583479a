"""The Compare and Playground pages through Streamlit's AppTest, on runs the tests write into
the store by hand (nothing trains in the background: ``start_pipeline`` is replaced). The
Playground test starts a real model process on a tiny taught model."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from backend import playground, recipes
from backend.api import Workbench
from storage import Store
from storage.records import StageSpec
from tests.backend.test_playground import TAUGHT, teach_constant_answer
from tests.pages.imports import training_libs_imported

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def store(home, monkeypatch) -> Store:
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    yield Store()
    playground.close_all()


def evaluated_run(store: Store, name: str, base: float, final: float, k: int,
                  step_time: float) -> tuple:
    """An r1-zero smoke run whose GRPO stage logged 4 steps and whose evaluate stage scored
    the base and the final model (the summary the evaluate stage writes)."""
    specs = [StageSpec(kind=s.kind, name=s.name, config=s.config, key=s.key, inputs=s.inputs)
             for s in recipes.build_stages("r1-zero", "smoke", {})]
    run = store.create_run(name, "r1-zero", "smoke", {}, specs)
    by_kind = {s.kind: s for s in run.stages}
    for step in range(1, 5):
        store.add_metrics(by_kind["grpo"].id, step, {
            "reward": 0.2 * step, "eval/accuracy": final * step / 4,
            "completions/mean_length": 10.0 + step, "step_time": step_time})
    store.update_stage(by_kind["grpo"].id, status="completed", step=4)

    def figures(greedy: float) -> dict:
        return {"model_path": "/m", "template": "0-shot", "greedy_pass@1": greedy,
                "pass@1": greedy - 0.05, "cons@k": greedy, f"cons@{k}": greedy,
                "pass@k": min(1.0, greedy + 0.1), "format": 0.9, "reasoning_chars": 20.0,
                "examples": []}

    store.update_stage(by_kind["evaluate"].id, status="completed", summary={
        "dataset": "synthetic addition", "split": "heldout", "problems": 64, "k": k,
        "temperature": 0.6, "top_p": 0.95, "base": figures(base), "final": figures(final),
        "models": {"base": {"0-shot": figures(base)}, "final": {"0-shot": figures(final)}},
        "accuracy": final})
    return store.get_run(run.id), by_kind


def open_page(page: str, timeout: int = 60, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page(page)
    return at.run()


# -------------------------------------------------------------------- Compare
def test_compare_shows_the_papers_table_marks_the_best_and_exports_it(store):
    old, _ = evaluated_run(store, "zero A", base=0.25, final=0.75, k=4, step_time=0.5)
    new, _ = evaluated_run(store, "zero B", base=0.25, final=0.875, k=8, step_time=2.0)
    at = open_page("pages/compare.py", runs=f"{old.id},{new.id}")
    assert not at.exception

    table = at.dataframe[0].value
    # Newest run first, each run's models in the order its evaluation scored them.
    assert list(table["Model"]) == [f"#{new.id} zero B · base", f"#{new.id} zero B · final",
                                    f"#{old.id} zero A · base", f"#{old.id} zero A · final"]
    # Known figures first, in the paper's order; shares in percent.
    assert list(table.columns[1:6]) == ["greedy pass@1", "pass@1", "cons@k", "pass@k", "format"]
    assert list(table["greedy pass@1"]) == ["25.0%", "87.5%", "25.0%", "75.0%"]
    assert list(table["k"]) == ["8", "8", "4", "4"]
    # Bold on gold: run B's final model, best in every ranked column but format (all 90%).
    styles = at.dataframe[0].proto.arrow_data.styler.styles
    assert "font-weight: 700" in styles
    marked = {tuple(map(int, cell)) for cell in re.findall(r"_row(\d+)_col(\d+)", styles)}
    assert marked == {(1, 1), (1, 2), (1, 3), (1, 4)}

    assert [b.proto.label for b in at.get("download_button")] == ["Download the table (CSV)"]
    csv = pd.read_csv(io.StringIO(Workbench().compare_table(
        Workbench().eval_entries([old.id, new.id])).csv()))  # what the button serves
    assert list(csv.columns[:5]) == ["model", "run_id", "stage_id", "dataset", "greedy_pass@1"]
    assert sorted(csv["greedy_pass@1"]) == [0.25, 0.25, 0.75, 0.875]

    # One line per run's GRPO stage on each of the three charts; the time axis in minutes.
    charts = at.get("plotly_chart")
    assert len(charts) == 3
    reward = json.loads(charts[0].proto.spec)
    assert len(reward["data"]) == 2 and reward["data"][0]["x"] == [1, 2, 3, 4]
    at.segmented_control(key="compare_x").set_value("time").run()
    assert not at.exception
    reward = json.loads(at.get("plotly_chart")[0].proto.spec)
    xs = {trace["name"].split(" · ")[0]: trace["x"] for trace in reward["data"]}
    assert xs[f"#{new.id} zero B"][-1] == pytest.approx(4 * 2.0 / 60)  # 4 steps x 2 s
    assert xs[f"#{old.id} zero A"][-1] == pytest.approx(4 * 0.5 / 60)


def test_compare_rows_link_to_the_stage_that_scored_them(store):
    run, by_kind = evaluated_run(store, "zero", base=0.25, final=0.75, k=4, step_time=1.0)
    at = open_page("pages/compare.py", runs=str(run.id))
    assert not at.exception
    table = at.dataframe[0].value
    query = f"?run={run.id}&stage={by_kind['evaluate'].id}"
    assert list(table["Stage"]) == [f"stage{query}"] * 2
    if "Problems" in table:  # the Evaluation page, where this install has it
        assert list(table["Problems"]) == [f"evaluation{query}"] * 2


def test_compare_without_evaluations_says_so(store):
    specs = Workbench.default_stages("pretrain-base", "smoke")
    run = store.create_run("base only", "pretrain-base", "smoke", {}, specs)
    at = open_page("pages/compare.py", runs=str(run.id))
    assert not at.exception
    assert any("has evaluation results yet" in info.value for info in at.info)


# -------------------------------------------------------------------- Playground
@pytest.fixture(scope="module")
def taught_dir(tmp_path_factory) -> str:
    return teach_constant_answer(tmp_path_factory.mktemp("taught"))


def model_run(store: Store, path: str) -> tuple:
    run = store.create_run("base", "pretrain-base", "smoke", {}, Workbench.default_stages("pretrain-base", "smoke"))
    stage = run.stages[0]
    store.update_stage(stage.id, status="completed", step=100, outputs={"model": {
        "type": "model", "path": path, "prompt_format": {"style": "plain", "template": "{prompt}"}}})
    return run, stage


# Starts a model process: ~10 s on an idle 2-core machine, a minute under a shared one's load.
@pytest.mark.slow
def test_playground_streams_an_answer_with_its_think_part_and_votes_on_k(store, taught_dir):
    run, stage = model_run(store, taught_dir)
    at = open_page("pages/playground.py", timeout=240, run=str(run.id))
    assert not at.exception
    assert at.selectbox[0].value == 0
    assert f"#{run.id} base" in at.selectbox[0].format_func(0)

    at.text_area(key="pg_prompt").set_value("12+34=")
    at.number_input(key="pg_temperature").set_value(0.0)
    at.button(key="pg_generate").click().run()
    assert not at.exception, at.exception
    answer = next(m.value for m in at.markdown if 'class="pg-text"' in m.value)
    # The reasoning in a collapsible block (closed once the answer is complete), the answer
    # highlighted.
    assert '<details class="pg-think"><summary>&lt;think&gt; reasoning · 5 chars' in answer
    assert "<div>1+1=2</div></details>" in answer
    assert '<span class="pg-answer">2</span>' in answer
    assert at.session_state["pg_answer"]["text"] == TAUGHT

    at.text_input(key="pg_reference").set_value("2")
    at.number_input(key="pg_temperature").set_value(0.6)
    at.number_input(key="pg_k").set_value(4)
    at.button(key="pg_sample").click().run()
    assert not at.exception, at.exception
    tiles = {metric.label: metric.value for metric in at.metric}
    assert tiles["Majority answer"] == "2"
    assert tiles["Agreement"].startswith(("4/4", "3/4"))
    assert len([e for e in at.expander if e.label.startswith("Answer ")]) == 4


@pytest.mark.slow
def test_playground_bad_checkpoint_is_an_error_not_a_traceback(store, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    run, _ = model_run(store, str(broken))
    at = open_page("pages/playground.py", timeout=240, run=str(run.id))
    at.text_area(key="pg_prompt").set_value("1+1=")
    at.button(key="pg_generate").click().run()
    assert not at.exception
    assert any("Cannot load the checkpoint" in error.value for error in at.error)


def test_playground_vllm_backend_that_cannot_run_says_so(store, tmp_path, monkeypatch):
    """The backend choice reaches the model process's start: without vLLM the page says why
    next to the choice, and Generate shows the reason (with the hf hint), not a traceback."""
    import backend.generation as generation

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    run, _ = model_run(store, str(folder))
    monkeypatch.setattr(generation, "vllm_installed", lambda: None)
    at = open_page("pages/playground.py", run=str(run.id))
    assert at.button_group(key="pg_backend").value == "hf"
    at.button_group(key="pg_backend").set_value("vllm").run()
    assert not at.exception, at.exception
    assert any("vLLM is not installed" in c.value and "choose hf" in c.value
               for c in at.caption)
    at.text_area(key="pg_prompt").set_value("1+1=")
    at.button(key="pg_generate").click().run()
    assert not at.exception, at.exception
    assert any("vLLM is not installed" in e.value and "choose the hf backend" in e.value
               for e in at.error)
    assert playground.live_models() == []


def test_playground_without_models_points_to_runs(store):
    at = open_page("pages/playground.py")
    assert not at.exception
    assert any("No model yet" in info.value for info in at.info)


def test_pages_import_no_training_library(store, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"]}')
    run, _ = model_run(store, str(folder))
    evaluated_run(store, "zero", base=0.25, final=0.75, k=4, step_time=1.0)
    done = training_libs_imported(run.id, ["pages/compare.py", "pages/playground.py"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
