"""Live training: one GRPO stage while it runs. Progress with an ETA, the numbers of the newest
step and pause / resume / stop (refreshed every 2 s); a grid of curves (reward per function,
held-out accuracy, completion length, KL, entropy, clip ratio, zero-variance groups, learning
rate, steered values), each marked where a steering command took effect; a warning when the
curves look like a policy collapse; live steering of the parameters the stage kind declares;
the steering log.

Watching must cost the training little (it shares the CPU on a small machine): every refresh
asks one cheap question (``Workbench.stage_version``: did anything change?), figures are built
once per change of the data and shared by every open tab (``st.cache_data``), charts whose data
did not change are re-sent unchanged, and the steering form and log are redrawn only when a
command was made or applied. ``bench/bench_watching.py`` measures the cost.

Opens on ``?run=&stage=``, else the newest run with a running GRPO stage."""
from __future__ import annotations

import math
from typing import Any, Optional

import pandas as pd
import streamlit as st

from pages.common import (ACTIVE_STATES, CHART_SECONDS, PAUSED, QUEUED, RUNNING, WAITING,
                          chart_layout, line_trace,
                          command_label,
                          control, live_summary, local_time, pick_stage_of_kind, poll_period,
                          rerun_if_deleted, show_flashes, stage_title, watched_stage, workbench)
from pages.steering_form import reward_names, steering_form

wb = workbench()

st.title("Live training")
show_flashes()

CHART_HEIGHT = 290
# Points per curve: a third of the page's width cannot show more, and a long stage's curves
# come back as bucket means (Store.metric_table), so a 10,000-step stage redraws as fast as
# a short one.
MAX_POINTS = 400
# Chart redraw periods. Every redraw of a changed chart costs the browser ~0.1 s of CPU (an
# unchanged one ~25 ms), ten charts per redraw, which on a 2-core machine comes out of the
# training; the numbers above them refresh every 2 s regardless (bench/bench_watching.py).
REFRESH = {"2 s": 2, "5 s": 5, f"{CHART_SECONDS} s": CHART_SECONDS, "30 s": 30, "never": None}
DEFAULT_REFRESH = f"{CHART_SECONDS} s"
TILES = ["reward", "eval/accuracy", "completions/mean_length", "frac_reward_zero_std"]
PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
MARKER = "#d62728"


# -- data ------------------------------------------------------------------------------------
def chart_metrics(stage: Any) -> list[str]:
    names = reward_names(stage)
    return (["reward", "eval/accuracy", "eval/think_rate", "eval/accuracy_lenient",
             "completions/mean_length", "completions/clipped_ratio", "kl", "entropy",
             "clip_ratio/region_mean", "clip_ratio/low_mean", "clip_ratio/high_mean",
             "frac_reward_zero_std", "learning_rate", "steer/temperature", "steer/beta",
             "reflection_rate", "language_mixing_rate"]
            + [f"rewards/{n}/mean" for n in names] + [f"steer/weight/{n}" for n in names])


def nice_ceiling(step: int) -> int:
    """The x range's right end: the next of 10, 15, 20, 30, 50, 75, 100, 150 ... at or above
    ``step``. Curves fill two thirds of the width or more, and the range (so every chart
    whose own data did not change) stays the same for many steps."""
    if step <= 10:
        return 10
    scale = 10 ** int(math.floor(math.log10(step)))
    return int(next(m * scale for m in (1, 1.5, 2, 3, 5, 7.5, 10) if m * scale >= step))


def steering_markers(commands: list[Any]) -> list[tuple[int, str]]:
    """(step, label) of every command that took effect, one label per step."""
    at_step: dict[int, list[str]] = {}
    for cmd in commands:
        if cmd.applied_step is None:
            continue
        label = command_label(cmd)
        if label not in at_step.setdefault(cmd.applied_step, []):
            at_step[cmd.applied_step].append(label)
    return [(step, "; ".join(labels)) for step, labels in sorted(at_step.items())]


# -- charts ----------------------------------------------------------------------------------
def chart(title: str, table: dict, lines: list[tuple[str, str]], markers: list[tuple[int, str]],
          x_max: int, *, percent: bool = False, sci: bool = False,
          empty: str = "nothing logged yet", right: Optional[tuple[str, str]] = None) -> dict:
    """One small line chart as a plain Plotly spec (a dict: building ``go.Figure`` objects
    costs more than the query). ``lines`` are (metric, legend label); ``right`` one more on a
    second y axis; dashed verticals where steering took effect. Every chart of a stage shares
    the x range, so a step lines up across the grid."""
    data = []
    for i, (name, label) in enumerate(lines):
        steps, values = table.get(name, ((), ()))
        if not steps:
            continue
        data.append(line_trace(steps, values, label, PALETTE[i % len(PALETTE)]))
    layout = chart_layout(title, height=CHART_HEIGHT, margin_right=40 if right else 10,
                          percent=percent)
    layout["xaxis"]["range"] = [-0.02 * x_max, x_max * 1.02 + 0.5]
    if sci:
        layout["yaxis"].update(tickformat=".1e", rangemode="tozero")
    if right is not None:
        steps, values = table.get(right[0], ((), ()))
        if steps:
            data.append({"type": "scatter", "x": list(steps), "y": list(values),
                         "name": right[1], "yaxis": "y2", "mode": "lines",
                         "line": {"color": "#999", "dash": "dot"}})
            # ".1~%": 0%, 0.5%, 1% ... (".0%" printed 0%, 1%, 1%, 2% on a small range)
            layout["yaxis2"] = {"overlaying": "y", "side": "right", "showgrid": False,
                                "tickformat": ".1~%", "rangemode": "tozero"}
    layout["showlegend"] = len(data) > 1
    if not data:
        layout["annotations"].append({"text": empty, "showarrow": False, "xref": "paper",
                                      "yref": "paper", "x": 0.5, "y": 0.5,
                                      "font": {"color": "#888"}})
        layout["yaxis"]["showticklabels"] = False
        # Plotly refuses a figure without a trace.
        data.append({"type": "scatter", "x": [], "y": [], "hoverinfo": "skip"})
    for step, label in markers:
        layout["shapes"].append({"type": "line", "x0": step, "x1": step, "xref": "x",
                                 "y0": 0, "y1": 1, "yref": "paper", "opacity": 0.8,
                                 "line": {"dash": "dash", "color": MARKER, "width": 1}})
        layout["annotations"].append({"text": label, "x": step, "xref": "x", "y": 1,
                                      "yref": "paper", "showarrow": False, "textangle": -90,
                                      "xanchor": "right", "yanchor": "top",
                                      "font": {"size": 10, "color": MARKER},
                                      "bgcolor": "rgba(255,255,255,0.6)"})
    return {"data": data, "layout": layout}


@st.cache_data(max_entries=16, show_spinner=False)
def chart_specs(db_url: str, stage_id: int, metric_rows: int, commands_applied: int,
                live: bool) -> list[dict]:
    """The stage's charts for one state of its data (the arguments after ``stage_id`` are
    its change counters): built once, then shared by every refresh and every open tab until a
    step, an eval or an applied command changes them."""
    stage = wb.get_stage(stage_id)
    table = wb.metric_table(stage_id, chart_metrics(stage), max_points=MAX_POINTS)
    if not table:
        return []
    last = max(steps[-1] for steps, _ in table.values())
    x_max = nice_ceiling(last) if live else max(1, last)
    markers = steering_markers(wb.commands(stage_id))
    names = reward_names(stage)
    beta = float((stage.config or {}).get("beta") or 0.0)
    return [
        chart("Reward (group means)", table, [("reward", "total (weighted)")]
              + [(f"rewards/{n}/mean", n) for n in names], markers, x_max),
        chart("Held-out accuracy (quick eval)", table,
              [("eval/accuracy", "accuracy"), ("eval/think_rate", "uses <think>"),
               ("eval/accuracy_lenient", "lenient")], markers, x_max, percent=True,
              empty="no eval yet (eval_every)"),
        chart("Mean completion length (tokens)", table,
              [("completions/mean_length", "mean length")], markers, x_max,
              right=("completions/clipped_ratio", "truncated (right)")),
        chart("KL to the reference model", table, [("kl", "KL")], markers, x_max,
              empty="no KL: beta = 0, no reference model" if beta == 0 else "no KL yet"),
        chart("Entropy", table, [("entropy", "entropy")], markers, x_max),
        chart("Clip ratio", table, [("clip_ratio/region_mean", "region"),
                                    ("clip_ratio/low_mean", "low"),
                                    ("clip_ratio/high_mean", "high")], markers, x_max,
              percent=True),
        chart("Groups with zero reward variance", table,
              [("frac_reward_zero_std", "share of groups")], markers, x_max, percent=True),
        # The R1-Zero "aha": share of completions with a reflection marker (reflection_markers
        # setting); on the two-script task also the share whose CoT mixes scripts.
        chart("Reflections and language mixing", table,
              [("reflection_rate", "with a reflection"),
               ("language_mixing_rate", "mixed-script CoT")], markers, x_max, percent=True),
        chart("Learning rate", table, [("learning_rate", "learning rate")], markers, x_max,
              sci=True),
        chart("Steered values", table,
              [("steer/temperature", "temperature"), ("steer/beta", "beta")]
              + [(f"steer/weight/{n}", f"weight {n}") for n in names], markers, x_max),
    ]


@st.cache_data(max_entries=16, show_spinner=False)
def newest_numbers(db_url: str, stage_id: int, metric_rows: int,
                   commands_applied: int) -> tuple[dict, Optional[str], Optional[str]]:
    """(newest value of each tile's metric, collapse warning, zero-signal note) for one state
    of the stage's data."""
    return (wb.latest_metrics(stage_id, TILES), wb.collapse_warning(stage_id),
            wb.zero_signal_note(stage_id))


# -- page parts ------------------------------------------------------------------------------
def pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"


def num(value: Optional[float], fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def drawn_key(stage_id: int) -> str:
    return f"training_drawn_commands_{stage_id}"


def controls(stage: Any) -> None:
    """Pause / resume / stop, drawn once per page run (a change of status reruns the page)."""
    status, stage_id = stage.status, stage.id
    pause_col, resume_col, stop_col, _ = st.columns([1, 1, 1, 3])
    control(pause_col, "Pause", "pause", wb.pause, status in (RUNNING, WAITING),
            "Pause at the next step boundary.", ":material/pause:", stage_id)
    control(resume_col, "Resume", "resume", wb.resume, status == PAUSED,
            "Continue the paused stage.", ":material/play_arrow:", stage_id)
    control(stop_col, "Stop", "stop", wb.stop, status in (QUEUED, *ACTIVE_STATES),
            "Save a checkpoint at the next step and exit (resume it from the Stage page).",
            ":material/stop:", stage_id)


def live_status(stage_id: int, shown_status: str) -> None:
    """Progress and the newest numbers, one element per refresh (plus a warning when the
    curves look wrong); polls every 2 s while the stage can change. When a steering command
    was made (here, in another tab, from the CLI) or applied, the whole page is redrawn: the
    form shows the values the stage now runs with, the log the new row, the charts the new
    marker."""
    stage = watched_stage(stage_id, shown_status)
    if stage is None:
        return
    version = wb.stage_version(stage_id)
    commands = (version.commands, version.commands_applied)
    if st.session_state.setdefault(drawn_key(stage_id), commands) != commands:
        st.session_state[drawn_key(stage_id)] = commands  # (or the rerun would rerun again)
        st.rerun()
    if not version.metric_rows:
        live_summary(stage, [])
        if stage.status == QUEUED:
            st.info(pipeline_note(stage), icon=":material/hourglass_top:")
        else:
            st.info("No metrics yet: the first ones arrive after the first step.")
        return
    now, warning, note = newest_numbers(wb.db_url, stage_id, version.metric_rows,
                                        version.commands_applied)
    live_summary(stage, [
        ("Step", stage.step, "Optimizer steps done"),
        ("Reward", num(now.get("reward")),
         "Weighted total reward, mean over the step's completions"),
        ("Held-out accuracy", pct(now.get("eval/accuracy")),
         "Strict accuracy in the newest quick held-out eval"),
        ("Mean length", num(now.get("completions/mean_length"), "{:.1f}"),
         "Mean completion length in tokens, newest step"),
        ("Zero-variance groups", pct(now.get("frac_reward_zero_std")),
         "Groups in which every completion got the same reward (no signal)"),
    ])
    if warning:
        st.warning(warning, icon=":material/trending_down:")
    if note:
        st.info(note, icon=":material/horizontal_rule:")


def pipeline_note(stage: Any) -> str:
    """While this stage waits its turn: which stage of the run runs now, and how far it is
    (e.g. the base model pre-training, minutes before GRPO starts)."""
    run = wb.get_run(stage.run_id)
    busy = next((s for s in run.stages if s.status in ACTIVE_STATES), None)
    if busy is None:
        return "Queued: waiting for the run's earlier stages to start."
    _, text = wb.stage_progress(busy)
    return (f"Queued behind stage {busy.position + 1} of {len(run.stages)}: {busy.name} "
            f"({busy.kind}) is {busy.status}, {text}. This stage starts when it is done.")


def charts(stage_id: int, live: bool) -> None:
    version = wb.stage_version(stage_id)
    figs = chart_specs(wb.db_url, stage_id, version.metric_rows, version.commands_applied, live)
    for row in range(0, len(figs), 3):
        for i, (col, fig) in enumerate(zip(st.columns(3), figs[row:row + 3])):
            col.plotly_chart(fig, key=f"chart_{row + i}", theme=None,
                             config={"displayModeBar": False})


# -- steering (the form itself is pages/steering_form.py, shared with the Stage page) --------
def steering_log(stage_id: int) -> None:
    cmds = list(reversed(wb.commands(stage_id)))
    if not cmds:
        st.caption("No steering commands yet.")
        return
    st.dataframe(pd.DataFrame([{
        "command": command_label(c),
        "requested at": local_time(c.created_at),
        "applied at step": None if c.applied_step is None else int(c.applied_step),
        "result": c.result if c.applied_at else "⏳ waiting for the next step boundary",
    } for c in cmds]), hide_index=True, width="stretch", column_config={
        "requested at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        "applied at step": st.column_config.NumberColumn(format="%d"),
        "result": st.column_config.TextColumn(width="large"),
    })


def event_log(stage: Any) -> None:
    events = [e for e in wb.events(stage.run_id) if e.stage_id in (None, stage.id)]
    if not events:
        return
    with st.expander(f"Events ({len(events)})"):
        st.dataframe(pd.DataFrame([{"at": local_time(e.at),
                                    "step": None if e.step is None else int(e.step),
                                    "message": e.message} for e in events]),
                     hide_index=True, width="stretch")


# -- the page --------------------------------------------------------------------------------
run, stage = pick_stage_of_kind(wb, "grpo", "GRPO stage")
stage_title(stage)
controls(stage)
st.fragment(rerun_if_deleted(live_status), run_every=poll_period(stage.status))(
    stage.id, stage.status)

refresh = None
if stage.status in (QUEUED, *ACTIVE_STATES):
    choice = st.segmented_control(
        "Redraw the charts every", list(REFRESH), default=DEFAULT_REFRESH, key="chart_refresh",
        help="The numbers above refresh every 2 s regardless. Each redraw costs CPU in the "
             "browser; on a machine that trains on the CPU, fewer redraws leave more of it to "
             "the training.")
    refresh = REFRESH[choice or DEFAULT_REFRESH]
st.page_link("pages/groups.py", label="Why this reward? Inspect the groups of each step",
             icon=":material/grid_view:",
             query_params={"run": str(stage.run_id), "stage": str(stage.id)})
# Charts redraw while steps arrive; a paused or finished stage's curves do not move (a change
# of status reruns the page).
st.fragment(rerun_if_deleted(charts), run_every=refresh if stage.status == RUNNING else None)(
    stage.id, stage.status in (QUEUED, *ACTIVE_STATES))

steering_form(stage)
st.subheader("Steering log")
steering_log(stage.id)
event_log(stage)

# What the form and the log above show; live_status redraws the page when it changes.
version = wb.stage_version(stage.id)
st.session_state[drawn_key(stage.id)] = (version.commands, version.commands_applied)
