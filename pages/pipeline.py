"""Pipeline: one run's stages as a graph. Each stage is a box coloured by its status, with its
kind, its progress and the one number that says how it did (``Workbench.stage_key_metric``);
each arrow is an artifact one stage hands to the next (the stage's ``inputs`` wiring). Under
the graph, one row per stage links to where to look closer: the Stage page, Live training and
the Group inspector for GRPO stages, Curation for the dataset a rejection stage wrote and for
an SFT stage that waits for its review.

Opens on the run named in the URL (``?run=3``), else the newest run. While the run can still
change by itself, the graph and the rows refresh every few seconds by re-reading that run only."""
from __future__ import annotations

from typing import Any, Optional

import streamlit as st

from pages.common import (COMPLETED, FAILED, INTERRUPTED, PAUSED, QUEUED, RUNNING, STOPPED,
                          WAITING, pick_run, poll_period, rerun_if_deleted, show_flashes,
                          stage_label, status_badge, status_emoji, workbench)

wb = workbench()

st.title("Pipeline")
show_flashes()

# Box fill per status: the same meaning as the badges elsewhere (common._STATUS_STYLE), in
# pale tones so the black text stays readable; a stage waiting for review stands out.
_FILL = {
    QUEUED: "#eeeeee", RUNNING: "#c8f0c8", PAUSED: "#ffe0b2", WAITING: "#e6d2ff",
    COMPLETED: "#cfe3ff", FAILED: "#ffc8c8", STOPPED: "#dddddd", INTERRUPTED: "#ffe0b2",
}


def status_text(status: str) -> str:
    """What the graph says of a status: a waiting stage waits for a person, not a machine."""
    return "waiting for review" if status == WAITING else status


def dot_text(text: str) -> str:
    """Text inside a double-quoted DOT string (stage names are typed by users)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def pipeline_dot(run: Any) -> str:
    """The run's stages and their wiring as Graphviz DOT source."""
    keys = {stage.key for stage in run.stages}
    lines = ["digraph pipeline {", "  rankdir=LR;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
             '  edge [fontname="Helvetica", fontsize=9, color="#777777"];']
    for stage in run.stages:
        _, progress = wb.stage_progress(stage)
        metric = wb.stage_key_metric(stage)
        label = [stage_label(stage),
                 f"{stage.kind} · {status_emoji(stage.status)} {status_text(stage.status)}"]
        if progress and stage.status != WAITING:
            label.append(progress)
        if metric:
            label.append(f"{metric[0]}: {metric[1]}")
        width = ", penwidth=2.5" if stage.status in (WAITING, RUNNING, FAILED) else ""
        text = "\\n".join(dot_text(part) for part in label)  # DOT's line break
        lines.append(f'  "{dot_text(stage.key)}" [label="{text}", '
                     f'fillcolor="{_FILL.get(stage.status, "#ffffff")}"{width}];')
    for stage in run.stages:
        for name, ref in stage.inputs.items():
            source, _, artifact = ref.partition(".")
            if source not in keys:
                continue  # a wire to nothing (an old run): the Stage page shows the error
            edge = artifact if artifact == name else f"{artifact} → {name}"
            lines.append(f'  "{dot_text(source)}" -> "{dot_text(stage.key)}" '
                         f'[label="{dot_text(edge)}"];')
    lines.append("}")
    return "\n".join(lines)


def curation_dataset(run: Any, stage: Any) -> Optional[int]:
    """The dataset to review for a stage: the one a rejection stage wrote, the one an SFT stage
    waits for, or the one wired into it from the stage that wrote it."""
    def written(producer: Any) -> Optional[int]:
        output = (producer.outputs or {}).get("dataset")
        value = output.get("dataset_id") if isinstance(output, dict) else None
        value = value or (producer.summary or {}).get("dataset_id")
        return value if isinstance(value, int) and value > 0 else None

    if stage.kind == "rejection":
        return written(stage)
    waiting = (stage.summary or {}).get("waiting_for_dataset")
    if isinstance(waiting, int):
        return waiting
    ref = stage.inputs.get("dataset")
    if stage.kind == "sft" and ref:
        source = next((s for s in run.stages if s.key == ref.partition(".")[0]), None)
        return written(source) if source is not None else None
    return None


def stage_row(run: Any, stage: Any) -> None:
    ids = {"run": str(run.id), "stage": str(stage.id)}
    metric = wb.stage_key_metric(stage)
    _, progress = wb.stage_progress(stage)
    text_col, links_col = st.columns([3, 2], vertical_alignment="center")
    shown = status_badge(stage.status).replace(WAITING, status_text(WAITING))
    text_col.markdown(f"**{stage_label(stage)}** · `{stage.kind}` · {shown}"
                      + (f" · {metric[0]} **{metric[1]}**" if metric else "")
                      + (f"  \n{progress}" if progress and stage.status != WAITING else ""))
    with links_col:
        st.page_link("pages/stage.py", label="Stage", icon=":material/open_in_new:",
                     query_params=ids)
        if stage.kind == "grpo":
            st.page_link("pages/training.py", label="Live training", icon="📈",
                         query_params=ids)
            st.page_link("pages/groups.py", label="Group inspector", icon="🧩",
                         query_params=ids)
        dataset_id = curation_dataset(run, stage)
        if dataset_id is not None and (stage.kind == "rejection" or stage.status == WAITING
                                       or stage.kind == "sft"):
            st.page_link("pages/curation.py", label=f"Curation (dataset {dataset_id})",
                         icon="🗂️", query_params={"dataset": str(dataset_id)})


def pipeline(run_id: int, shown_status: str) -> None:
    """The graph and the rows, from a fresh read of the run (a refresh asks for nothing else).
    When the run's status changed, the whole page reruns so the refresh period follows it."""
    run = wb.get_run(run_id)  # KeyError when deleted meanwhile: rerun_if_deleted says so
    if run.status != shown_status:
        st.rerun()
    st.graphviz_chart(pipeline_dot(run), width="stretch")
    if any(stage.status == WAITING for stage in run.stages):
        st.info("This run waits for a person: review the dataset on the Curation page and "
                "mark it ready, then the next stage starts.", icon="👀")
    for stage in run.stages:
        with st.container(border=True):
            stage_row(run, stage)


# -- pick the run --------------------------------------------------------------------------
run = pick_run(wb)
run_id, status = run.id, run.status

# Slower than a stage page's 2 s: each refresh redraws the whole graph, and stages change
# state in minutes, not seconds.
REFRESH_SECONDS = 5
st.fragment(rerun_if_deleted(pipeline),
            run_every=REFRESH_SECONDS if poll_period(status) else None)(run_id, status)
