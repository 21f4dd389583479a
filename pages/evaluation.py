"""Evaluation: an evaluate stage's results the way the R1 paper reports them, down to every
sample. A summary table per model x prompt template (greedy pass@1, pass@1 as the mean over k
samples, cons@k, pass@k, format, language consistency, reasoning length); the held-out
problems of one model and template, filterable to the failed ones (majority vote wrong); and
one problem's greedy answer and k samples with their extracted answers, correctness and the
vote clusters they formed.

Opens on the stage in the URL (``?stage=12``, as ``python -m backend eval`` prints), else the
newest run with an evaluate stage. Reads through ``backend.api`` only."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages.common import ACTIVE_STATES, COMPLETED, pick_stage_of_kind, query_int, workbench

wb = workbench()

st.title("Evaluation")

# A link that names only the stage (the CLI prints ?stage=ID) opens that stage's run.
wanted = query_int("stage")
if wanted is not None and query_int("run") is None:
    try:
        st.query_params["run"] = str(wb.get_stage(wanted).run_id)
    except KeyError:
        st.warning(f"Stage {wanted} does not exist (its run was deleted?).")
        st.stop()

run, stage = pick_stage_of_kind(wb, "evaluate", "evaluate stage")
summary = wb.eval_summary(stage.id)
if not summary:
    if stage.status in ACTIVE_STATES:
        st.info(f"Stage {stage.id} is {stage.status}: the results appear when it finishes.")
    elif stage.status != COMPLETED:
        st.warning(f"Stage {stage.id} is {stage.status}" + (f": {stage.error.splitlines()[0]}"
                                                             if stage.error else "."))
    else:
        st.info("This stage recorded no results.")
    st.stop()

first = next(iter(next(iter(summary.values())).values()))
k = first.get("k")
st.caption(f"{first.get('n_problems')} held-out problems of {first.get('dataset')} "
           f"({first.get('split')}); k = {k} samples per problem at temperature "
           f"{first.get('temperature')}, top-p {first.get('top_p')}; greedy answers scored "
           f"too.")


def pct(value) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "–"


# -- summary: one row per model x template ---------------------------------------------------
rows = []
for model, templates in summary.items():
    for template, m in templates.items():
        rows.append({
            "model": model, "template": template,
            "greedy pass@1": pct(m.get("greedy_pass@1")),
            f"pass@1 (mean of {k})": pct(m.get("pass@1")),
            f"cons@{k}": pct(m.get("cons@k")), f"pass@{k}": pct(m.get("pass@k")),
            "format": pct(m.get("format")), "language": pct(m.get("language")),
            "reasoning (chars)": round(m.get("reasoning_chars") or 0.0, 1),
            "reasoning (tokens)": round(m.get("reasoning_tokens") or 0.0, 1),
        })
st.subheader("Summary")
st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")

# -- problems of one model x template ----------------------------------------------------------
st.subheader("Problems")
pick_model, pick_template, pick_failed = st.columns([1, 1, 1])
models = list(summary)
model = pick_model.selectbox("Model", models, index=models.index("final")
                             if "final" in models else 0, key="eval_model")
templates = list(summary[model])
template = pick_template.selectbox("Template", templates, key="eval_template")
failed_only = pick_failed.toggle("Failed problems only", key="eval_failed",
                                 help="Majority vote wrong, or no sample gave an answer")
problems = wb.eval_problems(stage.id, model, template, failed_only=failed_only)
if not problems:
    st.info("No problem failed." if failed_only else "No stored samples for this model.")
    st.stop()
table = pd.DataFrame([{
    "#": p["problem_index"], "problem": p["prompt"], "reference": p["reference"],
    "greedy": p["greedy_answer"], "greedy ✓": p["greedy_correct"],
    "correct": f"{p['n_correct']}/{p['k']}", "majority": p["majority"],
    "majority ✓": p["majority_correct"],
} for p in problems])
st.dataframe(table, hide_index=True, width="stretch")

# -- one problem: its samples and how they voted -----------------------------------------------
by_index = {p["problem_index"]: p for p in problems}
index = st.selectbox("Open problem", list(by_index), key="eval_problem",
                     format_func=lambda i: f"#{i} · {by_index[i]['prompt'][:60]}")
problem = by_index[index]
st.markdown(f"**Problem #{index}**: `{problem['prompt']}` · reference **{problem['reference']}**"
            f" · {'failed' if problem['failed'] else 'solved'} by majority vote")
votes = pd.DataFrame([{"vote": v["cluster"], "answer": v["answer"], "count": v["count"],
                       "correct": v["correct"]} for v in problem["votes"]]
                     + ([{"vote": None, "answer": "(no answer)", "count": problem["no_answer"],
                          "correct": False}] if problem["no_answer"] else []))
st.markdown("**Votes** (equivalent answers count as one vote, largest first)")
st.dataframe(votes, hide_index=True, width="stretch")
samples = wb.eval_samples(stage.id, model, template=template, problem_index=index)
st.markdown("**Samples**")
st.dataframe(pd.DataFrame([{
    "sample": "greedy" if s.greedy else str(s.sample_index),
    "extracted": "(no answer)" if s.extracted is None else s.extracted,
    "correct": s.correct, "vote": s.cluster, "format ok": s.format_ok,
    "completion": s.completion,
} for s in samples]), hide_index=True, width="stretch")
