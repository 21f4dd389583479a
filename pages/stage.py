"""Stage: one stage of one run up close. Status and progress with an ETA, the key numbers,
pause / resume / stop / checkpoint now (with how far the request got) / resume-from-checkpoint,
the live steering form of the parameters its kind declares (pages/steering_form.py, the same
form as Live training), the live log tail (refreshed every 2 s), the full error of a failed
stage, a chart of the metrics it recorded and the events. Each refresh asks one cheap
question (``Workbench.stage_version``) and redraws the chart and the events only when they
changed.

Opens on the run and stage named in the URL (``?run=3&stage=7``), else the newest run and its
most interesting stage (the active one, else the one that failed or stopped, else the newest)."""
from __future__ import annotations

import ast
import html
import re
from typing import Any, Optional

import pandas as pd
import streamlit as st

from backend.api import ConfigError, StoreError, WorkbenchError
from pages.common import (ACTIVE_STATES, CHART_SECONDS, FAILED, PAUSED, QUEUED,
                          RESUMABLE_STATES, RUNNING, WAITING, control, default_stage, flash,
                          fmt_time, live_summary,
                          local_time, pick_run, poll_period, query_int, rerun_if_deleted,
                          show_flashes, stage_label, stage_title, status_badge, watched_stage,
                          workbench)
from pages.stage_settings import launch_panel, stage_settings
from pages.steering_form import steering_form

wb = workbench()

st.title("Stage")
show_flashes()


# -- pick run and stage ----------------------------------------------------------------------
run_col, stage_col = st.columns(2)
run = pick_run(wb, run_col)
stages_by_id = {stage.id: stage for stage in run.stages}
stage_ids = list(stages_by_id)
wanted_stage = query_int("stage")
if wanted_stage not in stages_by_id:
    wanted_stage = default_stage(run.stages).id
stage_id = stage_col.selectbox(
    "Stage", stage_ids, index=stage_ids.index(wanted_stage),
    format_func=lambda i: (f"{stage_label(stages_by_id[i])} ({stages_by_id[i].kind}) · "
                           f"{status_badge(stages_by_id[i].status)}"))
# Keep the URL in step with the choice, so it can be bookmarked or shared.
st.query_params.update({"run": str(run.id), "stage": str(stage_id)})


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
LOG_HEIGHT = 360
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


# The numbers worth a glance in a TRL log dict, in this order; the rest are on the chart.
LOG_KEYS = ("epoch", "loss", "reward", "reward_std", "kl", "entropy",
            "completions/mean_length", "frac_reward_zero_std", "grad_norm", "learning_rate")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_log_line(line: str) -> str:
    """A raw TRL metrics dict (``{'loss': 0.0123, 'grad_norm': ..., ...}``, ~40 keys) as one
    short line of the numbers above (``loss 0.0123 · reward 1.2 · ... (+30 more)``); any
    other line unchanged."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return line
    try:
        values = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return line
    if not isinstance(values, dict):
        return line
    shown = [f"{key} {_short(values[key])}" for key in LOG_KEYS if key in values]
    if not shown:
        shown = [f"{key} {_short(value)}" for key, value in list(values.items())[:6]]
    more = len(values) - len(shown)
    return " · ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def checkpoint_help(stage: Any) -> tuple[bool, str]:
    """(enabled, help) of "Checkpoint now": the reason when it cannot be used."""
    if not wb.saves_checkpoints(stage.kind):
        return False, (f"Stages of kind {stage.kind} save no checkpoints (there is nothing to "
                       f"resume from).")
    if stage.status != RUNNING:
        # A paused Trainer applies the request at once but saves only when it resumes; a stage
        # waiting for review has no trainer yet.
        return False, (f"Only a running stage can save a checkpoint now (this one is "
                       f"{stage.status}).")
    return True, ("Save a full checkpoint (model, optimizer, scheduler, data position) at the "
                  "next step boundary and keep training; the stage can later resume from it.")


def controls(stage: Any) -> None:
    """Pause / resume / stop / checkpoint now / resume from checkpoint. Drawn once per page
    run: a change of status reruns the page (``watched_stage``), which redraws them enabled as
    they should be."""
    status, stage_id = stage.status, stage.id
    # Wider columns for the longer labels, so "Resume from checkpoint" is not cut off.
    pause_col, resume_col, stop_col, save_col, restart_col = st.columns([1, 1, 1, 1.3, 1.6])
    control(pause_col, "Pause", "pause", wb.pause, status in (RUNNING, WAITING),
            "Pause at the next step boundary; the worker keeps its memory.",
            ":material/pause:", stage_id)
    control(resume_col, "Resume", "resume", wb.resume, status == PAUSED,
            "Continue a paused stage.", ":material/play_arrow:", stage_id)
    control(stop_col, "Stop", "stop", wb.stop, status in (QUEUED, *ACTIVE_STATES),
            "Save a checkpoint at the next step and exit; resume from it later.",
            ":material/stop:", stage_id)
    can_save, save_help = checkpoint_help(stage)
    control(save_col, "Checkpoint now", "checkpoint", wb.checkpoint, can_save, save_help,
            ":material/save:", stage_id)
    control(restart_col, "Resume from checkpoint", "resume_checkpoint", wb.resume,
            status in RESUMABLE_STATES,
            "Restart this stage from its last checkpoint (from the start if it has none) "
            "and go on with the run; refused when that checkpoint is not on this machine.",
            ":material/restart_alt:", stage_id)


def live_panel(stage_id: int, shown_status: str) -> None:
    """Progress, the key numbers and the log tail: two elements per refresh."""
    stage = watched_stage(stage_id, shown_status)
    if stage is None:
        return
    # A new event (the events table below is drawn once per page run) redraws the page.
    version = wb.stage_version(stage_id)
    event_id = version.event_id
    if st.session_state.setdefault(f"stage_drawn_event_{stage_id}", event_id) != event_id:
        st.session_state[f"stage_drawn_event_{stage_id}"] = event_id
        st.rerun()
    summary = stage.summary or {}
    footer = (f"Checkpoint: <code>{html.escape(stage.checkpoint)}</code>" if stage.checkpoint
              else "Checkpoint: none yet")
    request = wb.checkpoint_request(stage_id) if version.commands else None
    if request is not None:  # how far the newest "Checkpoint now" got
        footer += f"<br>Last checkpoint request: {html.escape(request.describe())}"
    live_summary(stage, [
        ("Step", stage.step, "Optimizer steps done"),
        ("Total steps", stage.total_steps if stage.total_steps else "–", None),
        ("PID", stage.pid if stage.pid and stage.status in ACTIVE_STATES else "–",
         f"Worker process on {stage.host}" if stage.host else None),
        ("Held-out accuracy", percent(summary.get("accuracy")),
         "Strict: the answer inside <answer> tags equals the reference "
         f"({summary.get('problems', '?')} held-out problems)"),
        ("Lenient accuracy", percent(summary.get("accuracy_lenient")),
         "The last number in the completion equals the reference"),
    ], footer=footer)
    st.markdown("**Log** (newest last)")
    log = "\n".join(format_log_line(line) for line in
                    collapse_progress_bars(wb.log_tail(stage_id, 300))[-LOG_LINES:])
    # A fixed height: a long tail scrolls inside its box rather than lengthening the page.
    st.code(log or "(no output yet)", language="text", wrap_lines=True, height=LOG_HEIGHT)


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


MUTED, GRID = "#808080", "rgba(128,128,128,0.25)"
PANEL_HEIGHT = 220


@st.cache_data(max_entries=16, show_spinner=False)
def metrics_figure(db_url: str, stage_id: int, names: tuple[str, ...], metric_rows: int) -> dict:
    """One small panel per metric, stacked, each with its own y axis (loss and learning rate
    do not share a scale), as a plain Plotly spec; built once per change of the stage's
    metrics (``metric_rows``) and shared by every refresh and tab. At most ~1000 points per
    curve (bucket means on long stages): fast at 10,000 steps."""
    table = wb.metric_table(stage_id, list(names))
    shown = [n for n in names if n in table]
    if not shown:
        return {}
    few_points = max(len(table[n][0]) for n in shown) <= 30
    gap = 0.06 if len(shown) > 1 else 0.0
    height = (1 - gap * (len(shown) - 1)) / len(shown)
    axis = {"gridcolor": GRID, "zerolinecolor": GRID, "linecolor": GRID}
    data, layout = [], {
        "template": "none", "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"color": MUTED, "size": 11}, "showlegend": False, "hovermode": "x",
        "height": 60 + PANEL_HEIGHT * len(shown), "margin": {"l": 50, "r": 10, "t": 30, "b": 30},
        "annotations": []}
    for i, name in enumerate(shown):
        steps, values = table[name]
        suffix = "" if i == 0 else str(i + 1)
        top = 1 - i * (height + gap)
        data.append({"type": "scatter", "x": steps, "y": values, "name": name,
                     "mode": "lines+markers" if few_points else "lines",
                     "xaxis": "x", "yaxis": f"y{suffix}", "line": {"width": 2}})
        layout[f"yaxis{suffix}"] = {**axis, "domain": [max(0.0, top - height), top]}
        layout["annotations"].append({"text": name, "xref": "paper", "yref": "paper",
                                      "x": 0, "y": top, "xanchor": "left",
                                      "yanchor": "bottom", "showarrow": False})
    layout["xaxis"] = {**axis, "anchor": f"y{len(shown) if len(shown) > 1 else ''}",
                       "title": {"text": "step"}}
    return {"data": data, "layout": layout}


def metrics_chart(stage_id: int) -> None:
    version = wb.stage_version(stage_id)
    if not version.metric_rows:
        st.caption("No metrics recorded yet.")
        return
    names = metric_names(wb.db_url, stage_id, version.metric_rows)
    chosen = st.multiselect("Metrics to plot", names, key=f"metrics_{stage_id}",
                            default=["loss"] if "loss" in names else names[:1],
                            label_visibility="collapsed", placeholder="Pick metrics to plot")
    if not chosen:
        return
    figure = metrics_figure(wb.db_url, stage_id, tuple(chosen), version.metric_rows)
    if figure:
        st.plotly_chart(figure, key=f"chart_{stage_id}", theme=None)


@st.cache_data(max_entries=16, show_spinner=False)
def metric_names(db_url: str, stage_id: int, metric_rows: int) -> list[str]:
    return wb.metric_names(stage_id)


def missing_checkpoint(stage: Any) -> bool:
    """A stopped / interrupted / failed stage whose newest checkpoint is not on this machine:
    say so before anyone restarts it, and offer the restart that gives up those steps (the
    Resume button is refused with the same message). True when it is missing."""
    point = wb.resume_point(stage.id)
    if not point.missing:
        return False
    st.warning(point.missing_message(stage.id), icon=":material/warning:")
    if st.button(f"Restart anyway, from {point.describe()}", key=f"lose_progress_{stage.id}",
                 icon=":material/restart_alt:",
                 help="Gives up the steps after it; a warning event records what was lost."):
        try:
            flash(wb.resume(stage.id, lose_progress=True), icon="⚠️")
        except (StoreError, WorkbenchError, KeyError) as exc:
            flash(str(exc), icon="⚠️")
        st.rerun()
    return True


def rerun_form(stage: Any, checkpoint_missing: bool = False) -> None:
    """Fix a failed (or stopped / interrupted) stage's config and run it again: the settings
    drawn as in the New run form (select boxes for named choices such as the generation
    backend and the launcher, the rest a table); the changed ones go to
    ``Workbench.rerun_stage``, which validates them first. One click runs it once: the drawn
    form's generation is marked used before the call."""
    generation = st.session_state.get(f"rerun_generation_{stage.id}", 0)
    with st.expander("Fix config and re-run", expanded=stage.status == FAILED,
                     icon=":material/build:"):
        settings = stage_settings(st.container(), stage.kind, stage.config,
                                  f"rerun_config_{stage.id}_{generation}", stage.name,
                                  stage_id=stage.id)
        lose_progress = checkpoint_missing and st.checkbox(
            "Restart anyway without the missing checkpoint",
            key=f"rerun_lose_progress_{stage.id}_{generation}",
            help="Its newest checkpoint is not on this machine (see above).")
        submitted = st.button(
            "Re-run with this config", type="primary", icon=":material/replay:",
            key=f"rerun_submit_{stage.id}_{generation}",
            help="Runs this stage again from its last checkpoint (from its start if it "
                 "has none), then the rest of the run.")
    if not submitted:
        return
    used = f"rerun_started_{stage.id}"
    if st.session_state.get(used) == generation:
        return
    try:
        if settings.problems:
            raise ConfigError("; ".join(settings.problems))
        config = settings.config()
        sets = {k: v for k, v in config.items() if v != stage.config.get(k)}
        if not sets:
            st.info("Nothing changed: edit a value first (or use Resume from checkpoint).")
            return
        st.session_state[used] = generation
        message = wb.rerun_stage(stage.id, sets, lose_progress=bool(lose_progress))
    except (ConfigError, StoreError, WorkbenchError, KeyError) as exc:
        st.session_state.pop(used, None)
        st.error(f"Not re-run. {exc}")
        return
    st.session_state[f"rerun_generation_{stage.id}"] = generation + 1
    flash(f"Stage re-run with {', '.join(f'{k}={v}' for k, v in sets.items())}: {message}",
          icon="🔁")
    st.rerun()


def points(value: Any) -> str:
    return f"{value:+.1f}" if isinstance(value, (int, float)) else "–"


def eval_results(stage: Any) -> None:
    """An evaluate stage's base -> final comparison, from its summary."""
    summary = stage.summary or {}
    rows = wb.eval_table(summary)
    if not rows:
        return
    st.subheader("Evaluation: base → final")
    st.caption(f"{summary.get('problems', '?')} held-out problems of "
               f"`{summary.get('dataset', '?')}` (split `{summary.get('split', '?')}`"
               + (f", answers read as {summary['answer_format']}"
                  if summary.get("answer_format") else "") + ")")
    gain = summary.get("gain_points")
    if isinstance(gain, (int, float)):
        st.markdown(f"Greedy pass@1 **{points(gain)} points** "
                    f"({percent(rows[0]['base'])} → {percent(rows[0]['final'])})")
    st.dataframe(pd.DataFrame([{"metric": row["metric"], "base": percent(row["base"]),
                                "final": percent(row["final"]),
                                "gain (points)": points(row["gain (points)"])}
                               for row in rows]), hide_index=True)
    for label in ("final", "base"):
        examples = (summary.get(label) or {}).get("examples")
        if examples:
            with st.expander(f"Held-out examples, {label} model ({len(examples)})"):
                st.dataframe(pd.DataFrame(examples), hide_index=True)


FORMATS = {"jsonl": "application/jsonl", "parquet": "application/octet-stream",
           "csv": "text/csv"}


@st.cache_data(max_entries=8, show_spinner=False)
def export_file(db_url: str, what: str, run_id: int, stage_id: int, fmt: str,
                version: tuple) -> bytes:
    """A download's bytes, built once per change of the stage's data (``version``)."""
    rows = (wb.rollout_rows(run_id, stage_id) if what == "rollouts"
            else wb.metric_rows(stage_id))
    return wb.export_bytes(rows, fmt)


def downloads(stage: Any) -> None:
    """The stage's rollouts and metrics as files, with the CLI exports' content."""
    version = wb.stage_version(stage.id)
    kinds = [("metrics", version.metric_rows)]
    if version.group_step is not None:
        kinds.insert(0, ("rollouts", version.group_step))
    if not any(n for _, n in kinds):
        return
    with st.expander("Download", icon=":material/download:"):
        fmt = st.segmented_control("Format", list(FORMATS), default="jsonl",
                                   key=f"download_format_{stage.id}") or "jsonl"
        cols = st.columns(len(kinds))
        for col, (what, _) in zip(cols, kinds):
            data = export_file(wb.db_url, what, stage.run_id, stage.id, fmt,
                               (version.metric_rows, version.group_step))
            col.download_button(f"{what.capitalize()} ({fmt})", data,
                                file_name=f"run{stage.run_id}_stage{stage.id}_{what}.{fmt}",
                                mime=FORMATS[fmt], key=f"download_{what}_{stage.id}",
                                icon=":material/download:", disabled=not data)


stage = stages_by_id[stage_id]
stage_title(stage)
st.caption(f"Stage #{stage.id} · kind `{stage.kind}` · run #{stage.run_id}")
controls(stage)
show_error(stage)
launch_panel(stage)  # a stage over many processes / machines: each machine's command line
if stage.status in RESUMABLE_STATES:
    rerun_form(stage, checkpoint_missing=missing_checkpoint(stage))
st.fragment(rerun_if_deleted(live_panel), run_every=poll_period(stage.status))(
    stage_id, stage.status)
# While the stage runs: the live parameters its kind declares (the same form as Live
# training), redrawn with the new values when a change is applied (an event reruns the page).
# Also while an SFT stage waits for review: its worker stores the change and training starts
# with it.
if stage.status in ACTIVE_STATES:
    steering_form(stage)
eval_results(stage)

# The chart refreshes while the stage can still record something, as often as the Live
# training charts (each redraw costs the browser CPU); when its status changes, live_panel
# reruns the whole page.
st.subheader("Metrics")
st.fragment(rerun_if_deleted(metrics_chart),
            run_every=CHART_SECONDS if poll_period(stage.status) else None)(stage_id)
downloads(stage)
st.subheader("Recent events")
recent_events(stage_id)
st.session_state[f"stage_drawn_event_{stage_id}"] = wb.stage_version(stage_id).event_id

examples = (stage.summary or {}).get("examples")
if examples:
    with st.expander(f"Held-out examples ({len(examples)})"):
        st.dataframe(pd.DataFrame(examples), hide_index=True)
with st.expander("Config"):
    st.json(stage.config)
    st.caption(f"Started {fmt_time(stage.started_at)} · ended {fmt_time(stage.ended_at)} · "
               f"output `{stage.output_dir or '–'}`")
