"""Playground: talk to any checkpoint a stage wrote. Type a prompt (put through the model's
prompt format, or raw), watch the answer arrive token by token with its ``<think>`` part in a
collapsible block, or sample k answers and see their extracted answers, majority vote and
agreement (the vote cons@k counts).

The model runs in its own process (``python -m backend.playground``), started on the first
question and kept while the same checkpoint is asked with the same backend (hf: transformers;
vllm: a vLLM engine); this page never loads torch.
Opens on ``?run=&stage=`` (that stage's model), else the newest model."""
from __future__ import annotations

import html
import itertools
import re
import time
from typing import Any

import pandas as pd
import streamlit as st

from backend.api import PlaygroundError
from pages.common import query_int, show_flashes, workbench

wb = workbench()

st.title("Playground")
show_flashes()

DEFAULT_TEMPERATURE, DEFAULT_TOP_P, DEFAULT_MAX_TOKENS, DEFAULT_K = 0.6, 0.95, 256, 8
REDRAW_SECONDS = 0.05  # while streaming: at most ~20 redraws a second, whatever the token rate
CSS = """<style>
.pg-text{white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;
  font-size:.88rem;background:#f7f8fa;border:1px solid #e5e7eb;border-radius:6px;padding:.6rem;
  color:#1f2328}
.pg-think{border-left:4px solid #5b8def;background:#eef4fe;border-radius:6px;margin:.2rem 0}
.pg-think>summary{cursor:pointer;padding:.3rem .5rem;color:#1d3f73;font-weight:600;
  font-size:.8rem}
.pg-think>div{white-space:pre-wrap;word-break:break-word;padding:0 .6rem .5rem .6rem;
  color:#1d3f73}
.pg-answer{background:#fff1b8;color:#5c4400;font-weight:600;border-radius:3px}
.pg-tag{color:#8a8a8a;font-size:.75rem}
.pg-cursor{color:#ff4b4b}
</style>"""
_ANSWER = re.compile(r"(<answer>)(.*?)(</answer>)", re.S)


# -- showing an answer -------------------------------------------------------------------------
def answer_html(rest: str) -> str:
    """Text after the reasoning, escaped, the ``<answer>`` content highlighted."""
    out, last = [], 0
    for match in _ANSWER.finditer(rest):
        out.append(html.escape(rest[last:match.start()]))
        out.append(f'<span class="pg-tag">{html.escape(match.group(1))}</span>'
                   f'<span class="pg-answer">{html.escape(match.group(2))}</span>'
                   f'<span class="pg-tag">{html.escape(match.group(3))}</span>')
        last = match.end()
    out.append(html.escape(rest[last:]))
    return "".join(out)


def completion_html(text: str, streaming: bool = False) -> str:
    """A completion: the ``<think>`` part in a collapsible block (open while the model is
    still thinking), the answer highlighted; every piece of model text escaped."""
    parts = wb.split_think(text)
    body = html.escape(parts.before)
    if parts.think is not None:
        thinking = streaming and not parts.closed
        state = "thinking…" if thinking else ("" if parts.closed else "no &lt;/think&gt;: cut off?")
        summary = f"&lt;think&gt; reasoning · {len(parts.think)} chars" + (
            f" · {state}" if state else "")
        body += (f'<details class="pg-think"{" open" if thinking else ""}>'
                 f'<summary>{summary}</summary><div>{html.escape(parts.think)}</div></details>')
    body += answer_html(parts.rest)
    if streaming:
        body += '<span class="pg-cursor">▌</span>'
    if not text:
        body = "<i>(nothing yet)</i>" if streaming else "<i>(empty answer)</i>"
    return f'<div class="pg-text">{body}</div>'


# -- picking a checkpoint ----------------------------------------------------------------------
checkpoints = wb.model_checkpoints()
if not checkpoints:
    st.info("No model yet: every stage that trains writes one (start a run, e.g. recipe "
            "`pretrain-base` or `r1-zero`, on the Runs page).")
    st.page_link("pages/runs.py", label="Runs", icon=":material/add:")
    st.stop()

wanted_stage, wanted_run = query_int("stage"), query_int("run")
start = next((i for i, c in enumerate(checkpoints) if c.stage_id == wanted_stage),
             next((i for i, c in enumerate(checkpoints) if c.run_id == wanted_run), 0))
index = st.selectbox("Checkpoint", range(len(checkpoints)), index=start,
                     format_func=lambda i: checkpoints[i].label,
                     help="Every stage's final model and the checkpoints saved during training "
                          "(while their folders exist).")
ckpt = checkpoints[index]
st.query_params.update({"run": str(ckpt.run_id), "stage": str(ckpt.stage_id)})
st.caption(f"`{ckpt.path}` · {ckpt.stage_kind} stage {ckpt.stage_id} · step {ckpt.step}")
st.markdown(CSS, unsafe_allow_html=True)

fmt_col, b_col, t_col, p_col, n_col = st.columns([2, 1.4, 1, 1, 1])
prompt_mode = fmt_col.segmented_control(
    "Prompt", ["model", "raw"], default="model", key="pg_mode",
    format_func={"model": "Model's prompt format", "raw": "Raw"}.get,
    help="The model's format: the problem put into the template it was trained with (a chat "
         "template, the R1-Zero template, or the bare problem for the tiny model). Raw: the "
         "text as typed.") or "model"
# Only the model process imports vLLM: this reads package metadata and config.json.
vllm_problem = wb.generation_backend_problem("vllm", ckpt.path)
backend = b_col.segmented_control(
    "Backend", ["hf", "vllm"], default="hf", key="pg_backend",
    format_func={"hf": "hf", "vllm": "vLLM"}.get,
    help="What generates: hf (transformers, loads in seconds) or vLLM (an engine built from "
         "the checkpoint: 10-60 s to start on a CPU; faster when it samples many answers at "
         "once, as Sample k does). Both stream token by token.") or "hf"
if backend == "vllm" and vllm_problem:
    b_col.caption(f":red[{vllm_problem.replace('set generation_backend=hf', 'choose hf')}]")
temperature = t_col.number_input("Temperature", min_value=0.0, max_value=2.0,
                                 value=DEFAULT_TEMPERATURE, step=0.1, key="pg_temperature",
                                 help="0: greedy. The R1 paper evaluates at 0.6.")
top_p = p_col.number_input("Top-p", min_value=0.01, max_value=1.0, value=DEFAULT_TOP_P,
                           step=0.05, key="pg_top_p", help="Nucleus sampling; the paper: 0.95.")
max_tokens = n_col.number_input("Max tokens", min_value=1, max_value=8192,
                                value=DEFAULT_MAX_TOKENS, step=32, key="pg_max_tokens")
prompt = st.text_area("Your prompt", key="pg_prompt", height=110,
                      placeholder="A problem, e.g. 37+48= for the tiny addition model")
reference = st.text_input("Reference answer (optional)", key="pg_reference",
                          help="Marks each sampled answer right or wrong, by the accuracy "
                               "reward's own check.")
options: dict[str, Any] = {"raw": prompt_mode == "raw", "prompt_format": ckpt.prompt_format,
                           "temperature": float(temperature), "top_p": float(top_p),
                           "max_new_tokens": int(max_tokens), "backend": backend}
go_col, k_col, sample_col, _ = st.columns([1, 1, 1, 3])
generate = go_col.button("Generate", type="primary", icon=":material/play_arrow:",
                         width="stretch", key="pg_generate")
k = k_col.number_input("k", min_value=2, max_value=64, value=DEFAULT_K, key="pg_k",
                       label_visibility="collapsed", help="How many answers to sample")
sample_k = sample_col.button(f"Sample {int(k)}", icon=":material/how_to_vote:",
                             width="stretch", key="pg_sample")


# -- streaming one answer ----------------------------------------------------------------------
def stream_answer() -> None:
    """Stream the answer into one element, redrawn as chunks arrive; keep the finished answer
    in the session so a rerun (a widget touched) still shows it."""
    st.session_state.pop("pg_answer", None)
    shown = st.empty()
    text, prompt_text, drawn = "", "", 0.0
    # The first event comes once the model process has loaded the checkpoint (the first
    # question to a checkpoint; later ones answer at once).
    waiting = ("Waiting for the model…" if backend == "hf" else
               "Waiting for the model (a new vLLM engine takes 10-60 s to start)…")
    with st.spinner(waiting, show_time=True):
        events = iter(wb.playground_stream(ckpt.path, prompt, **options))
        first = next(events, None)
    for event in itertools.chain([first] if first else [], events):
        if event.kind == "start":
            prompt_text = event.prompt_text
        elif event.kind == "chunk":
            text += event.text
            if time.monotonic() - drawn >= REDRAW_SECONDS:
                with shown.container():
                    st.subheader("Answer")
                    st.markdown(completion_html(text, streaming=True), unsafe_allow_html=True)
                drawn = time.monotonic()
        elif event.kind == "done":
            st.session_state["pg_answer"] = {
                "path": ckpt.path, "backend": backend, "prompt_text": prompt_text,
                "text": event.text,
                "streamed": text, "tokens": event.tokens, "finish_reason": event.finish_reason,
                "seconds": event.seconds}
    shown.empty()  # the finished answer is drawn in its place (show_answer)


def show_answer(answer: dict[str, Any]) -> None:
    st.subheader("Answer")
    st.markdown(completion_html(answer["text"]), unsafe_allow_html=True)
    ended = ("ended by the model" if answer["finish_reason"] == "stop"
             else f"cut off at {answer['tokens']} tokens (max tokens)")
    rate = answer["tokens"] / answer["seconds"] if answer["seconds"] else 0.0
    st.caption(f"{answer['tokens']} tokens in {answer['seconds']:.1f} s ({rate:.0f} tokens/s, "
               f"{answer.get('backend', 'hf')}), {ended}.")
    with st.expander("The exact prompt the model saw"):
        st.code(answer["prompt_text"] or " ", language=None, wrap_lines=True)


# -- sampling k answers ------------------------------------------------------------------------
def show_samples(result: Any, backend: str) -> None:
    k_total = len(result.samples)
    top = result.votes[0]["count"] if result.votes else 0
    tiles = st.columns(4)
    tiles[0].metric("Majority answer", result.majority if result.majority is not None else "–")
    tiles[1].metric("Agreement", f"{top}/{k_total} ({result.agreement:.0%})",
                    help="Share of the k answers that agree with the majority (equivalent "
                         "answers count as one vote; an answer the model never tagged does "
                         "not vote).")
    no_answer = sum(s.extracted is None for s in result.samples)
    tiles[2].metric("No answer", f"{no_answer}/{k_total}",
                    help="Answers without an extractable <answer> (or \\boxed{})")
    correct = [s.correct for s in result.samples if s.correct is not None]
    majority_ok = result.votes[0].get("correct") if result.votes else None
    tiles[3].metric("Correct", f"{sum(correct)}/{k_total}" if correct else "–",
                    delta=None if majority_ok is None else
                    ("majority right" if majority_ok else "majority wrong"),
                    delta_color="normal" if majority_ok else "inverse",
                    help="Against the reference answer, when you gave one")
    if not result.votes:
        st.info("No answer had an extractable answer (an <answer> tag or \\boxed{}), so "
                "nothing was voted on.", icon=":material/how_to_vote:")
    else:
        st.dataframe(pd.DataFrame([{
            "answer": vote["answer"], "votes": vote["count"], "share": vote["count"] / k_total,
            "samples": ", ".join(str(i + 1) for i in vote["samples"]),
            **({"correct": vote.get("correct")} if "correct" in vote else {}),
        } for vote in result.votes]), hide_index=True, width="stretch", column_config={
            "share": st.column_config.ProgressColumn("share", min_value=0.0, max_value=1.0,
                                                     format="percent")})
    st.caption(f"{k_total} answers in {result.seconds:.1f} s ({backend}).")
    for i, sample in enumerate(result.samples):
        mark = "" if sample.correct is None else (" ✅" if sample.correct else " ❌")
        title = (f"Answer {i + 1}: {sample.extracted if sample.extracted is not None else '—'}"
                 f"{mark} · {sample.tokens} tokens"
                 + ("" if sample.finish_reason == "stop" else " · cut off"))
        with st.expander(title):
            st.markdown(completion_html(sample.text), unsafe_allow_html=True)


# -- the page ----------------------------------------------------------------------------------
answer_slot, samples_slot = st.container(), st.container()
try:
    if generate:
        with answer_slot:
            stream_answer()
    if sample_k:
        st.session_state.pop("pg_samples", None)
        with samples_slot, st.spinner(f"Sampling {int(k)} answers…", show_time=True):
            st.session_state["pg_samples"] = (ckpt.path, wb.playground_sample(
                ckpt.path, prompt, int(k), reference=reference or None, **options), backend)
except PlaygroundError as exc:
    st.error(str(exc), icon=":material/error:")

answer = st.session_state.get("pg_answer")
if answer and answer["path"] == ckpt.path:
    with answer_slot:
        show_answer(answer)
samples = st.session_state.get("pg_samples")
if samples and samples[0] == ckpt.path:
    with samples_slot:
        st.subheader(f"{len(samples[1].samples)} sampled answers")
        show_samples(samples[1], samples[2])
