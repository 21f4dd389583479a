"""The Pipeline page, driven through Streamlit's AppTest against runs the tests build directly
in the store (the ``r1`` recipe's stages, statuses and summaries set by hand): nothing trains,
nothing is started in the background."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backend import recipes
from storage import Store
from storage.records import StageSpec
from tests.pages.imports import training_libs_imported

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def store(home, monkeypatch) -> Store:
    # A fresh data home (conftest's ``home``); nothing is ever started.
    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    return Store()


def r1_run(store: Store, name: str = "r1 demo"):
    specs = [StageSpec(kind=s.kind, name=s.name, config=s.config, key=s.key, inputs=s.inputs)
             for s in recipes.build_stages("r1", "smoke", {})]
    return store.create_run(name, "r1", "smoke", {}, specs)


def finish(store: Store, stage, summary: dict, outputs: dict | None = None) -> None:
    store.update_stage(stage.id, status="completed", summary=summary, outputs=outputs or {})


@pytest.fixture
def waiting_run(store):
    """An r1 run up to its SFT stage, which waits for the rejection stage's dataset review."""
    run = r1_run(store)
    by_key = {s.key: s for s in run.stages}
    dataset_id = store.create_dataset("rejection sampled", "rejection", [])
    finish(store, by_key["base"], {"accuracy": 0.25})
    finish(store, by_key["cold"], {"accuracy": 0.375})
    finish(store, by_key["rl"], {"accuracy": 0.5})
    finish(store, by_key["judge"], {"judge_accuracy": 0.875})
    finish(store, by_key["reject"], {"kept": 30, "candidates": 64, "dataset_id": dataset_id},
           {"dataset": {"type": "dataset", "dataset_id": dataset_id, "snapshot": ""}})
    store.update_stage(by_key["sft"].id, status="waiting",
                       summary={"waiting_for_dataset": dataset_id})
    return store.get_run(run.id), dataset_id


def page(**params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    for key, value in params.items():
        at.query_params[key] = value
    at.switch_page("pages/pipeline.py")
    return at.run()


def graph_source(at: AppTest) -> str:
    charts = at.get("graphviz_chart")
    assert len(charts) == 1
    return charts[0].proto.spec


def links(at: AppTest) -> list[tuple[str, str, str]]:
    """(label, page, query string) of every page link the page shows."""
    return [(e.proto.label, e.proto.page, e.proto.query_string) for e in at.get("page_link")]


def test_the_graph_has_every_stage_and_every_wire(store, waiting_run):
    run, _ = waiting_run
    at = page(run=str(run.id))
    assert not at.exception
    dot = graph_source(at)
    for stage in run.stages:
        assert f'"{stage.key}" [label="{stage.position + 1}. {stage.name}' in dot
        for name, ref in stage.inputs.items():
            source, _, artifact = ref.partition(".")
            label = artifact if artifact == name else f"{artifact} → {name}"
            assert f'"{source}" -> "{stage.key}" [label="{label}"]' in dot
    edges = sum(len(s.inputs) for s in run.stages)
    assert dot.count(" -> ") == edges and edges >= 10


@pytest.mark.parametrize("key, shown", [
    ("base", "held-out accuracy: 25.0%"),
    ("judge", "judge accuracy: 87.5%"),
    ("reject", "kept: 30/64 candidates"),
])
def test_each_stage_box_shows_its_key_metric(store, waiting_run, key, shown):
    run, _ = waiting_run
    dot = graph_source(page(run=str(run.id)))
    node = next(line for line in dot.splitlines() if line.startswith(f'  "{key}" ['))
    assert shown in node


def test_a_waiting_stage_says_so_and_links_to_curation(store, waiting_run):
    run, dataset_id = waiting_run
    at = page(run=str(run.id))
    dot = graph_source(at)
    sft = next(line for line in dot.splitlines() if line.startswith('  "sft" ['))
    assert "waiting for review" in sft
    # Only the waiting stage says it (the queued ones after it do not).
    assert dot.count("waiting for review") == 1
    curation = [link for link in links(at) if link[1].endswith("curation")]
    # One from the rejection stage that wrote the dataset, one from the SFT stage waiting on it.
    assert len(curation) == 2
    assert all(f"dataset={dataset_id}" in query for _, _, query in curation)
    assert "waits for a person" in "\n".join(i.value for i in at.info)


def test_rows_link_to_the_stage_views(store, waiting_run):
    run, _ = waiting_run
    at = page(run=str(run.id))
    found = links(at)
    stage_links = [q for label, page_, q in found if page_.endswith("stage")]
    assert sorted(stage_links) == sorted(f"run={run.id}&stage={s.id}" for s in run.stages)
    grpo_ids = {s.id for s in run.stages if s.kind == "grpo"}
    for view in ("training", "groups"):
        shown = {q for _, page_, q in found if page_.endswith(view)}
        assert shown == {f"run={run.id}&stage={i}" for i in grpo_ids}


def test_opens_on_the_newest_run_without_a_url(store, waiting_run):
    newer = r1_run(store, "newer")
    at = page()
    assert at.selectbox[0].value == newer.id
    assert at.query_params["run"] == [str(newer.id)] or at.query_params["run"] == str(newer.id)
    assert "queued" in graph_source(at)


def test_a_deleted_run_shows_the_deleted_message(store, waiting_run):
    run, _ = waiting_run
    store.delete_run(run.id)
    at = page(run=str(run.id))
    assert not at.exception
    assert f"Run {run.id} was deleted." in "\n".join(w.value for w in at.warning)
    assert not at.get("graphviz_chart")


@pytest.mark.parametrize("kind, summary, expected", [
    ("pretrain", {"accuracy": 0.25}, ("held-out accuracy", "25.0%")),
    ("grpo", {"accuracy": 0.5}, ("held-out accuracy", "50.0%")),
    ("judge", {"judge_accuracy": 0.9}, ("judge accuracy", "90.0%")),
    ("rejection", {"kept": 3, "candidates": 8}, ("kept", "3/8 candidates")),
    ("reward_model", {"heldout_accuracy": 0.935}, ("held-out pair accuracy", "93.5%")),
    ("evaluate", {"final": {"greedy_pass@1": 0.6}, "gain_points": 12.5},
     ("final greedy pass@1", "60.0% (+12.5 points)")),
    ("evaluate", {"final": {"greedy_pass@1": 0.6}}, ("final greedy pass@1", "60.0%")),
    ("sft", {"waiting_for_dataset": 4}, None),  # not trained yet: nothing to show
    ("evaluate", {}, None),
])
def test_key_metric_rule(kind, summary, expected):
    from types import SimpleNamespace

    from backend.api import Workbench

    assert Workbench.stage_key_metric(SimpleNamespace(kind=kind, summary=summary)) == expected


def test_the_page_renders_without_training_libraries(store, waiting_run):
    # The UI never trains: drawing the graph and its links imports no torch.
    run, _ = waiting_run
    done = training_libs_imported(run.id, ["pages/pipeline.py"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_run_deleted_while_the_page_is_open_says_so_on_the_next_refresh(store, waiting_run):
    run, _ = waiting_run
    at = page(run=str(run.id))
    assert graph_source(at)
    store.delete_run(run.id)  # from another tab or the CLI
    at.run()
    assert not at.exception
    assert f"Run {run.id} was deleted." in "\n".join(w.value for w in at.warning)
