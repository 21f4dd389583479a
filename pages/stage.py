"""Stage: one stage of one run up close. Status and progress with an ETA, the key numbers,
pause / resume / stop / resume-from-checkpoint, the live log tail and events (refreshed every
2 s), the full error of a failed stage, and a chart of the metrics it recorded.

Opens on the run and stage named in the URL (``?run=3&stage=7``), else the newest run and its
most interesting stage (the active one, else the one that failed or stopped, else the newest)."""
from __future__ import annotations

import re
from typing import Any, Optional

import pandas as pd
import plotly.express as px
import streamlit as st

from pages.common import (ACTIVE_STATES, FAILED, PAUSED, QUEUED, RESUMABLE_STATES, RUNNING,
                          control, default_stage, fmt_time, live_stage_header, local_time,
                          progress_eta, show_flashes, status_badge, workbench)

wb = workbench()

st.title("Stage")
show_flashes()


def query_int(name: str) -> Optional[int]:
    try:
        return int(st.query_params.get(name, ""))
    except ValueError:
        return None


# -- pick run and stage ----------------------------------------------------------------------
runs = wb.list_runs()
if not runs:
    st.info("No runs yet.")
    st.page_link("pages/runs.py", label="Start one on the Runs page", icon=":material/add:")
    st.stop()

runs_by_id = {run.id: run for run in runs}
run_ids = list(runs_by_id)  # newest first
wanted_run = query_int("run")
run_col, stage_col = st.columns(2)
run_id = run_col.selectbox(
    "Run", run_ids, index=run_ids.index(wanted_run if wanted_run in runs_by_id else run_ids[0]),
    format_func=lambda i: f"#{i} · {runs_by_id[i].name} · {status_badge(runs_by_id[i].status)}")
run = runs_by_id[run_id]

stages_by_id = {stage.id: stage for stage in run.stages}
stage_ids = list(stages_by_id)
if not stage_ids:
    st.warning(f"Run #{run.id} has no stages.")
    st.stop()
wanted_stage = query_int("stage")
if wanted_stage not in stages_by_id:
    wanted_stage = default_stage(run.stages).id
stage_id = stage_col.selectbox(
    "Stage", stage_ids, index=stage_ids.index(wanted_stage),
    format_func=lambda i: (f"{stages_by_id[i].position + 1}. {stages_by_id[i].name} "
                           f"({stages_by_id[i].kind}) · {status_badge(stages_by_id[i].status)}"))
# Keep the URL in step with the choice, so it can be bookmarked or shared.
st.query_params.update({"run": str(run_id), "stage": str(stage_id)})


# -- live panel ------------------------------------------------------------------------------
def percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else "–"


def show_error(stage: Any) -> None:
    if not stage.error:
        return
    headline, _, _ = stage.error.partition("\n\n")
    if stage.status == FAILED:
        st.error(f"**This stage failed.** {headline}", icon=":material/error:")
        st.code(stage.error, language="text", wrap_lines=True)
    else:
        st.warning(stage.error, icon=":material/warning:")


def events_frame(stage: Any) -> pd.DataFrame:
    """This stage's events and the run's own (newest first)."""
    events = [e for e in wb.events(stage.run_id) if e.stage_id in (None, stage.id)]
    icons = {"info": "ℹ️", "warning": "⚠️", "error": "❌"}
    return pd.DataFrame([{
        "at": local_time(e.at), "step": "" if e.step is None else str(e.step),
        "message": f"{icons.get(e.level, '•')} {e.message}",
    } for e in events], columns=["at", "step", "message"])


LOG_LINES = 25
# A tqdm bar ("Tokenizing train dataset:  91%|████ | 93575/102400 [...]") redraws itself with
# carriage returns, which become one log line per redraw.
_PROGRESS_BAR = re.compile(r"^(?P<what>[^|]*?):?\s*\d+%\|")


def collapse_progress_bars(log: str) -> list[str]:
    """Log lines with each run of redraws of one progress bar reduced to its last state."""
    lines: list[str] = []
    previous = None
    for line in log.splitlines():
        if not line.strip():
            continue  # a bar's final newline leaves an empty line behind
        bar = _PROGRESS_BAR.match(line)
        what = bar.group("what") if bar else None
        if what is not None and what == previous:
            lines[-1] = line
        else:
            lines.append(line)
        previous = what
    return lines


@st.fragment(run_every=2)
def live_panel(stage_id: int, shown_status: str) -> None:
    stage = live_stage_header(stage_id, shown_status)
    if stage is None:
        return
    st.caption(f"Stage #{stage.id} · kind `{stage.kind}` · run #{stage.run_id}")
    fraction, eta = progress_eta(stage)
    st.progress(fraction, text=eta)

    summary = stage.summary or {}
    cols = st.columns(5)
    cols[0].metric("Step", stage.step)
    cols[1].metric("Total steps", stage.total_steps if stage.total_steps else "–")
    cols[2].metric("PID", stage.pid if stage.pid and stage.status in ACTIVE_STATES else "–",
                   help=f"Worker process on {stage.host}" if stage.host else None)
    cols[3].metric("Held-out accuracy", percent(summary.get("accuracy")),
                   help="Strict: the answer inside <answer> tags equals the reference "
                        f"({summary.get('problems', '?')} held-out problems)")
    cols[4].metric("Lenient accuracy", percent(summary.get("accuracy_lenient")),
                   help="The last number in the completion equals the reference")
    st.caption(f"Checkpoint: `{stage.checkpoint}`" if stage.checkpoint else
               "Checkpoint: none yet")

    status = stage.status
    pause_col, resume_col, stop_col, restart_col = st.columns(4)
    control(pause_col, "Pause", "pause", wb.pause, status == RUNNING,
            "Pause at the next step boundary; the worker keeps its memory.",
            ":material/pause:", stage_id)
    control(resume_col, "Resume", "resume", wb.resume, status == PAUSED,
            "Continue a paused stage.", ":material/play_arrow:", stage_id)
    control(stop_col, "Stop", "stop", wb.stop, status in (QUEUED, *ACTIVE_STATES),
            "Save a checkpoint at the next step and exit; resume from it later.",
            ":material/stop:", stage_id)
    control(restart_col, "Resume from checkpoint", "resume_checkpoint", wb.resume,
            status in RESUMABLE_STATES,
            "Restart this stage from its last checkpoint (from the start if it has none) "
            "and go on with the run.",
            ":material/restart_alt:", stage_id)

    show_error(stage)

    st.markdown("**Log** (newest last)")
    log = "\n".join(collapse_progress_bars(wb.log_tail(stage_id, 300))[-LOG_LINES:])
    st.code(log or "(no output yet)", language="text", wrap_lines=True)


def recent_events(stage_id: int) -> None:
    try:
        events = events_frame(wb.get_stage(stage_id))
    except KeyError:
        return
    st.dataframe(events, hide_index=True, placeholder="", column_config={
        "at": st.column_config.DatetimeColumn("At", format="YYYY-MM-DD HH:mm:ss"),
        "step": st.column_config.TextColumn("Step"),
        "message": st.column_config.TextColumn("Message", width="large"),
    })


def metrics_chart(stage_id: int) -> None:
    names = wb.metric_names(stage_id)
    if not names:
        st.caption("No metrics recorded yet.")
        return
    chosen = st.multiselect("Metrics to plot", names, key=f"metrics_{stage_id}",
                            default=["loss"] if "loss" in names else names[:1],
                            label_visibility="collapsed", placeholder="Pick metrics to plot")
    if not chosen:
        return
    # At most ~1000 points per curve (bucket means on long stages): fast at 10,000 steps.
    table = wb.metric_table(stage_id, chosen)
    shown = pd.DataFrame([{"step": step, "name": name, "value": value}
                          for name, (steps, values) in table.items()
                          for step, value in zip(steps, values)])
    if shown.empty:
        return
    few_points = shown.groupby("name").size().max() <= 30
    # One small panel per metric, each with its own y axis (loss and learning rate do not
    # share a scale).
    fig = px.line(shown, x="step", y="value", facet_row="name" if len(chosen) > 1 else None,
                  markers=few_points, height=60 + 220 * len(chosen),
                  category_orders={"name": chosen})
    fig.update_yaxes(matches=None, title_text="")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    if len(chosen) == 1:
        fig.update_yaxes(title_text=chosen[0])
    fig.update_layout(margin=dict(l=10, r=10, t=30, b=10))
    st.plotly_chart(fig, key=f"chart_{stage_id}")


stage = stages_by_id[stage_id]
live_panel(stage_id, stage.status)

# Chart and events refresh while the stage can still record something; when its status
# changes, live_panel reruns the whole page.
refresh = 2 if stage.status in (QUEUED, *ACTIVE_STATES) else None
st.subheader("Metrics")
st.fragment(metrics_chart, run_every=refresh)(stage_id)
st.subheader("Recent events")
st.fragment(recent_events, run_every=refresh)(stage_id)

examples = (stage.summary or {}).get("examples")
if examples:
    with st.expander(f"Held-out examples ({len(examples)})"):
        st.dataframe(pd.DataFrame(examples), hide_index=True)
with st.expander("Config"):
    st.json(stage.config)
    st.caption(f"Started {fmt_time(stage.started_at)} · ended {fmt_time(stage.ended_at)} · "
               f"output `{stage.output_dir or '–'}`")
