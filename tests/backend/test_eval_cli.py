"""`python -m backend eval CHECKPOINT --json`: a run with one evaluate stage on any model
folder, its figures as JSON, its per-problem rows stored; bad inputs refused with exit 2."""
from __future__ import annotations

import json

import pytest

from backend.__main__ import main
from backend.api import Workbench

JSON_KEYS = {"pass@1", "greedy_pass@1", "cons@k", "pass@k", "k", "n_problems", "format",
             "dataset", "language", "reasoning_chars", "reasoning_tokens"}


@pytest.fixture(scope="module")
def smoke_checkpoint(tmp_path_factory) -> str:
    """The base model of the pretrain smoke preset (seconds of training), as a model folder."""
    home = tmp_path_factory.mktemp("ckpt_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("R1WB_HOME", str(home))
        mp.delenv("R1WB_DB_URL", raising=False)
        assert main(["run", "--recipe", "pretrain-base", "--preset", "smoke", "--wait"]) == 0
        wb = Workbench()
        stage = wb.list_runs()[0].stages[0]
        return stage.outputs["model"]["path"]


def test_bad_checkpoint_path_is_refused_with_exit_2(home, tmp_path, capsys):
    assert main(["eval", str(tmp_path / "no_such_model"), "--json"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model does not exist" in err
    assert Workbench().list_runs() == []  # nothing was created


def test_a_folder_that_is_not_a_model_is_refused(home, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2
    assert "not a model folder" in capsys.readouterr().err


def test_bad_dataset_and_bad_task_are_refused(home, tiny_model_dir, tmp_path, capsys):
    assert main(["eval", tiny_model_dir, "--dataset", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "no question or answer column"}\n')
    assert main(["eval", tiny_model_dir, "--dataset", str(broken)]) == 2
    assert "dataset" in capsys.readouterr().err
    assert main(["eval", tiny_model_dir, "--task", "multiplication"]) == 2
    assert "addition:MIN-MAX" in capsys.readouterr().err
    assert main(["eval", tiny_model_dir, "--top-p", "0"]) == 2
    assert "top_p" in capsys.readouterr().err
    assert Workbench().list_runs() == []


@pytest.mark.slow
def test_eval_json_on_a_smoke_checkpoint(home, smoke_checkpoint, capsys):
    code = main(["eval", smoke_checkpoint, "--task", "addition", "--k", "3", "--problems",
                 "6", "--few-shot", "0,2", "--max-new-tokens", "24", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    report = json.loads(out.out)
    assert JSON_KEYS <= set(report)
    assert (report["k"], report["n_problems"]) == (3, 6)
    assert report["dataset"] == "synthetic addition (1-3 digits)"
    assert (report["temperature"], report["top_p"]) == (0.6, 0.95)
    for key in ("pass@1", "greedy_pass@1", "cons@k", "pass@k", "format", "language"):
        assert 0.0 <= report[key] <= 1.0, key
    assert report["pass@k"] >= report["pass@1"]  # any of 3 right is at least the mean
    assert list(report["templates"]) == ["0-shot", "2-shot"]
    # The run is visible like any other, and every scored completion was stored:
    # 6 problems x (greedy + 3 samples) x 2 templates.
    wb = Workbench()
    run = wb.get_run(report["run_id"])
    assert run.recipe == "evaluate" and run.status == "completed"
    samples = wb.eval_samples(report["stage_id"])
    assert len(samples) == 6 * 4 * 2
    assert {s.template for s in samples} == {"0-shot", "2-shot"}
    problems = wb.eval_problems(report["stage_id"], "final", "0-shot")
    assert len(problems) == 6 and all(p["k"] == 3 for p in problems)
    cons = sum(not p["failed"] for p in problems) / 6
    assert cons == pytest.approx(report["cons@k"])


def test_backend_flag_reaches_the_stage_and_a_head_size_vllm_cannot_run_is_refused(
        home, tmp_path, capsys):
    """`eval --backend vllm` is the stage's generation_backend: a model whose head size vLLM's
    CPU attention rejects (16) is refused before anything is created, naming the way out."""
    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    folder = tmp_path / "head16"
    tok = build_tokenizer()
    build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                   intermediate_size=64), tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    assert main(["eval", str(folder), "--backend", "vllm"]) == 2
    assert "generation_backend=hf" in capsys.readouterr().err
    assert Workbench().list_runs() == []
    with pytest.raises(SystemExit):  # argparse: only the known backends
        main(["eval", str(folder), "--backend", "tpu"])
