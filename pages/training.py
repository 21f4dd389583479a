"""Live training: one GRPO stage while it runs. Progress with an ETA and pause / resume / stop;
a grid of curves (reward per function, held-out accuracy, completion length, KL, entropy, clip
ratio, zero-variance groups, learning rate) refreshed every 2 s, each marked where a steering
command took effect; live steering of temperature, KL beta, reward weights and learning rate;
the steering log; and a warning when the curves look like a policy collapse.

Opens on ``?run=&stage=``, else the newest run with a running GRPO stage."""
from __future__ import annotations

import math
import zlib
from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.api import StoreError, WorkbenchError
from pages.common import (ACTIVE_STATES, PAUSED, QUEUED, RUNNING, command_label, control,
                          live_stage_header, local_time, pick_stage_of_kind, progress_eta,
                          show_flashes, workbench)

wb = workbench()

st.title("Live training")
show_flashes()

# How far held-out accuracy must fall from its peak, with format still high, to call it a
# collapse. The tiny preset at lr 5e-4 goes 32% -> 15% -> 3% in its first 20 steps with format
# at 100%, and once every group answers the same wrong number no group has reward spread, so
# nothing can pull it back: the warning has to come at the first falling eval (15 points is
# far outside the noise of a 200-problem eval), while lowering the learning rate still helps
# (bench/collapse_rescue.py, docs/results.md).
COLLAPSE_DROP = 0.15
FORMAT_HIGH = 0.80
ZERO_STD_HIGH = 0.90
CHART_HEIGHT = 290
# Points per curve: a chart cannot show more, and a 10,000-step stage must refresh in well
# under the 2 s refresh period (bench/bench_inspector.py measures it).
MAX_POINTS = 1000
REFRESH = {"2 s": 2, "5 s": 5, "15 s": 15, "never": None}
DEFAULT_REFRESH = "2 s"


# -- data ------------------------------------------------------------------------------------
def reward_names(stage: Any) -> list[str]:
    funcs = str((stage.config or {}).get("reward_funcs", ""))
    return [n.strip() for n in funcs.split(",") if n.strip()]


def config_weights(stage: Any) -> list[float]:
    try:
        return [float(w) for w in str(stage.config.get("reward_weights", "")).split(",")
                if w.strip()]
    except ValueError:
        return []


def metric_frame(stage_id: int) -> pd.DataFrame:
    """The stage's metrics as a step x name table (NaN where a step did not log a metric).
    Long stages come back averaged over buckets of steps (at most MAX_POINTS per curve)."""
    table = wb.metric_table(stage_id, max_points=MAX_POINTS)
    if not table:
        return pd.DataFrame()
    frame = pd.concat({name: pd.Series(values, index=steps, dtype=float)
                       for name, (steps, values) in table.items()}, axis=1).sort_index()
    frame.index.name = "step"
    return frame


def series(frame: pd.DataFrame, name: str) -> pd.Series:
    if frame.empty or name not in frame.columns:
        return pd.Series(dtype=float)
    return frame[name].dropna()


def current_values(stage: Any) -> dict[str, Any]:
    """The steerable values the stage runs with now: the newest ``steer/*`` metrics and
    ``learning_rate`` (exact, never bucket means), else the stage's config."""
    cfg = stage.config or {}
    names = reward_names(stage)
    weights = config_weights(stage)
    now = wb.latest_metrics(stage.id, ["steer/temperature", "steer/beta", "learning_rate"]
                            + [f"steer/weight/{n}" for n in names])
    values: dict[str, Any] = {
        "temperature": now.get("steer/temperature", float(cfg.get("temperature", 1.0))),
        "beta": now.get("steer/beta", float(cfg.get("beta", 0.0))),
        "learning_rate": now.get("learning_rate", float(cfg.get("learning_rate", 0.0))),
        "weights": {},
    }
    for i, name in enumerate(names):
        values["weights"][name] = now.get(f"steer/weight/{name}",
                                          weights[i] if i < len(weights) else 1.0)
    return values


def changed_params(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The ``set_params`` payload: only the values that differ from the current ones."""
    def differs(a: Optional[float], b: Optional[float]) -> bool:
        if a is None or b is None:
            return a is not b
        return not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)

    out: dict[str, Any] = {}
    for key in ("temperature", "beta", "learning_rate"):
        if key in wanted and differs(current.get(key), wanted[key]):
            out[key] = float(wanted[key])
    weights = {name: float(w) for name, w in wanted.get("weights", {}).items()
               if differs(current["weights"].get(name), w)}
    if weights:
        out["reward_weights"] = weights
    return out


def collapse_warning(frame: pd.DataFrame, commands: tuple = ()) -> Optional[str]:
    """Text of the collapse callout when held-out accuracy fell by at least COLLAPSE_DROP
    from its peak while the format reward (else the answer-tag rate) stayed high. Says so
    when the learning rate was already changed live after the peak."""
    acc = series(frame, "eval/accuracy")
    if len(acc) < 2:
        return None
    peak_step = acc.idxmax()
    peak, last = float(acc.max()), float(acc.iloc[-1])
    if peak_step == acc.index[-1] or peak - last < COLLAPSE_DROP - 1e-9:
        return None
    fmt = series(frame, "rewards/format/mean")
    what = "format"
    if len(fmt):
        level = float(fmt.iloc[-5:].mean())  # a few steps: one noisy step does not decide
    else:
        tags = series(frame, "eval/answer_tag_rate")
        if not len(tags):
            return None
        level, what = float(tags.iloc[-1]), "the answer-tag rate"
    if level < FORMAT_HIGH:
        return None
    text = (f"Accuracy fell from {peak:.0%} (step {peak_step}) to {last:.0%} "
            f"(step {acc.index[-1]}) while {what} stayed at {level:.0%}: policy collapse? ")
    lowered = [c for c in commands if c.kind == "set" and "learning_rate" in c.payload
               and c.applied_step is not None and c.applied_step >= peak_step]
    if lowered:
        c = lowered[-1]
        return text + (f"The learning rate was set to {c.payload['learning_rate']} at step "
                       f"{c.applied_step}: watch whether the next held-out evals recover.")
    return text + "Lower the learning rate live below."


def zero_signal_note(frame: pd.DataFrame) -> Optional[str]:
    share = series(frame, "frac_reward_zero_std")
    if len(share) < 3:
        return None
    recent = float(share.iloc[-5:].mean())
    if recent < ZERO_STD_HIGH:
        return None
    return (f"{recent:.0%} of the groups in the last {min(5, len(share))} steps gave every "
            f"completion the same reward: almost no learning signal. See why in the Group "
            f"inspector; a higher temperature gives more varied groups.")


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
PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def chart(title: str, frame: pd.DataFrame, lines: list[tuple[str, str]],
          markers: list[tuple[int, str]], *, percent: bool = False, sci: bool = False,
          empty: str = "nothing logged yet", right: Optional[tuple[str, str]] = None) -> go.Figure:
    """One small line chart: ``lines`` are (metric, legend label); ``right`` one more on a
    second y axis; dashed verticals where steering took effect. All charts of a stage share
    the x range (0 to the newest step), so a step lines up across the grid."""
    fig = go.Figure()
    has_data = False
    for i, (name, label) in enumerate(lines):
        s = series(frame, name)
        if not len(s):
            continue
        has_data = True
        fig.add_trace(go.Scatter(x=s.index, y=s.values, name=label,
                                 mode="lines+markers" if len(s) <= 30 else "lines",
                                 marker=dict(size=5),
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2)))
    if right is not None:
        s = series(frame, right[0])
        if len(s):
            fig.add_trace(go.Scatter(x=s.index, y=s.values, name=right[1], yaxis="y2",
                                     mode="lines", line=dict(color="#999", dash="dot")))
            fig.update_layout(yaxis2=dict(overlaying="y", side="right", showgrid=False,
                                          tickformat=".0%", rangemode="tozero"))
    if not has_data:
        fig.add_annotation(text=empty, showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5, font=dict(color="#888"))
        fig.update_yaxes(showticklabels=False)
    for step, label in markers:
        fig.add_vline(x=step, line_dash="dash", line_color="#d62728", line_width=1,
                      opacity=0.8, annotation_text=label, annotation_position="top left",
                      annotation_textangle=-90, annotation_font_size=10,
                      annotation_font_color="#d62728",
                      annotation_bgcolor="rgba(255,255,255,0.6)")
    last = int(frame.index.max()) if not frame.empty else 1
    fig.update_layout(
        title=dict(text=title, font=dict(size=14), x=0, xanchor="left", y=0.97),
        height=CHART_HEIGHT, margin=dict(l=10, r=10, t=36, b=10),
        legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0,
                    font=dict(size=10)),
        hovermode="x unified", showlegend=len(fig.data) > 1,
    )
    fig.update_xaxes(range=[-0.02 * last, last * 1.02 + 0.5])
    if percent:
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    if sci:
        fig.update_yaxes(tickformat=".1e", rangemode="tozero")
    return fig


def figures(stage: Any, frame: pd.DataFrame, markers: list[tuple[int, str]]) -> list[go.Figure]:
    rewards = [("reward", "total (weighted)")] + [
        (f"rewards/{n}/mean", n) for n in reward_names(stage)]
    beta = float((stage.config or {}).get("beta", 0.0))
    return [
        chart("Reward (group means)", frame, rewards, markers),
        chart("Held-out accuracy (quick eval)", frame,
              [("eval/accuracy", "accuracy"), ("eval/think_rate", "uses <think>"),
               ("eval/accuracy_lenient", "lenient")], markers, percent=True,
              empty="no eval yet (eval_every)"),
        chart("Mean completion length (tokens)", frame,
              [("completions/mean_length", "mean length")], markers,
              right=("completions/clipped_ratio", "truncated (right)")),
        chart("KL to the reference model", frame, [("kl", "KL")], markers,
              empty="no KL: beta = 0, no reference model" if beta == 0 else "no KL yet"),
        chart("Entropy", frame, [("entropy", "entropy")], markers),
        chart("Clip ratio", frame, [("clip_ratio/region_mean", "region"),
                                    ("clip_ratio/low_mean", "low"),
                                    ("clip_ratio/high_mean", "high")], markers, percent=True),
        chart("Groups with zero reward variance", frame,
              [("frac_reward_zero_std", "share of groups")], markers, percent=True),
        chart("Learning rate", frame, [("learning_rate", "learning rate")], markers,
              sci=True),
        chart("Steered values", frame,
              [("steer/temperature", "temperature"), ("steer/beta", "beta")]
              + [(f"steer/weight/{n}", f"weight {n}") for n in reward_names(stage)], markers),
    ]


# -- page parts ------------------------------------------------------------------------------
def pct(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.0%}"


def num(value: Optional[float], fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


@st.fragment(run_every=2)
def header(stage_id: int, shown_status: str) -> None:
    stage = live_stage_header(stage_id, shown_status)
    if stage is None:
        return
    fraction, eta = progress_eta(stage)
    st.progress(fraction, text=eta)
    status = stage.status
    pause_col, resume_col, stop_col, _ = st.columns([1, 1, 1, 3])
    control(pause_col, "Pause", "pause", wb.pause, status == RUNNING,
            "Pause at the next step boundary.", ":material/pause:", stage_id)
    control(resume_col, "Resume", "resume", wb.resume, status == PAUSED,
            "Continue the paused stage.", ":material/play_arrow:", stage_id)
    control(stop_col, "Stop", "stop", wb.stop, status in (QUEUED, *ACTIVE_STATES),
            "Save a checkpoint at the next step and exit (resume it from the Stage page).",
            ":material/stop:", stage_id)


def charts(stage_id: int) -> None:
    stage = wb.get_stage(stage_id)
    frame = metric_frame(stage_id)
    if frame.empty:
        st.info("No metrics yet: the first ones arrive after the first step.")
        return
    commands = wb.commands(stage_id)
    warning = collapse_warning(frame, tuple(commands))
    if warning:
        st.warning(warning, icon=":material/trending_down:")
    note = zero_signal_note(frame)
    if note:
        st.info(note, icon=":material/horizontal_rule:")

    now = wb.latest_metrics(stage_id, ["reward", "eval/accuracy", "completions/mean_length",
                                       "frac_reward_zero_std"])
    tiles = st.columns(5)
    tiles[0].metric("Step", stage.step, help="Optimizer steps done")
    tiles[1].metric("Reward", num(now.get("reward")),
                    help="Weighted total reward, mean over the step's completions")
    tiles[2].metric("Held-out accuracy", pct(now.get("eval/accuracy")),
                    help="Strict accuracy in the newest quick held-out eval")
    tiles[3].metric("Mean length", num(now.get("completions/mean_length"), "{:.1f}"),
                    help="Mean completion length in tokens, newest step")
    tiles[4].metric("Zero-variance groups", pct(now.get("frac_reward_zero_std")),
                    help="Groups in which every completion got the same reward (no signal)")

    st.page_link("pages/groups.py", label="Why this reward? Inspect the groups of each step",
                 icon=":material/grid_view:",
                 query_params={"run": str(stage.run_id), "stage": str(stage.id)})
    markers = steering_markers(commands)
    figs = figures(stage, frame, markers)
    for row in range(0, len(figs), 3):
        for i, (col, fig) in enumerate(zip(st.columns(3), figs[row:row + 3])):
            col.plotly_chart(fig, key=f"chart_{row + i}", config={"displayModeBar": False})


def steering_form(stage: Any) -> None:
    st.subheader("Live steering")
    live = stage.status in ACTIVE_STATES
    current = current_values(stage)
    beta_locked = float((stage.config or {}).get("beta", 0.0)) == 0.0
    # Keys carry the current values: once a change is applied the form shows the new ones.
    sig = zlib.crc32(repr(sorted((k, str(v)) for k, v in current.items())).encode())
    with st.form(f"steer_{stage.id}", border=True):
        cols = st.columns(3 + len(current["weights"]))
        temperature = cols[0].number_input(
            "Temperature", min_value=0.01, max_value=5.0, value=float(current["temperature"]),
            step=0.05, format="%.2f", key=f"steer_temperature_{sig}", disabled=not live,
            help="Sampling temperature of the group completions.")
        beta = cols[1].number_input(
            "KL beta", min_value=0.0, value=float(current["beta"]), step=0.01, format="%.3f",
            key=f"steer_beta_{sig}", disabled=not live or beta_locked,
            help="This stage started with beta = 0, so no reference model was loaded and KL "
                 "cannot be switched on live." if beta_locked else
                 "Weight of the KL penalty to the reference model.")
        lr = cols[2].number_input(
            "Learning rate", min_value=0.0, value=float(current["learning_rate"]),
            step=1e-5, format="%.2e", key=f"steer_lr_{sig}", disabled=not live,
            help="Set for every parameter group of the optimizer at the next step.")
        weights = {}
        for col, (name, value) in zip(cols[3:], current["weights"].items()):
            weights[name] = col.number_input(
                f"Weight: {name}", value=float(value), step=0.1, format="%.2f",
                key=f"steer_weight_{name}_{sig}", disabled=not live,
                help=f"Weight of the {name} reward in the total that advantages come from.")
        submitted = st.form_submit_button("Apply at next step", type="primary",
                                          disabled=not live, icon=":material/tune:")
    if not live:
        st.caption(f"Steering needs a running or paused stage (this one is {stage.status}).")
    else:
        st.caption("Prefilled with the values the stage runs with now; only the values you "
                   "change are sent, and they take effect at the next step boundary.")
    if submitted:
        wanted = {"temperature": temperature, "learning_rate": lr, "weights": weights}
        if not beta_locked:
            wanted["beta"] = beta
        payload = changed_params(current, wanted)
        if not payload:
            st.info("Nothing changed.")
        else:
            try:
                message = wb.set_params(stage.id, payload)
                st.success(f"{', '.join(f'{k}={v}' for k, v in payload.items())}: {message}")
            except (WorkbenchError, StoreError, KeyError) as exc:
                st.error(str(exc))


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
header(stage.id, stage.status)

refresh = None
if stage.status in (QUEUED, *ACTIVE_STATES):
    # Redrawing nine charts costs CPU in the server and the browser; on a small machine that
    # shares its cores with the training, fewer redraws mean faster steps
    # (bench/bench_watching.py measures the cost of each setting).
    choice = st.segmented_control(
        "Redraw the charts every", list(REFRESH), default=DEFAULT_REFRESH, key="chart_refresh",
        help="The progress bar above updates every 2 s regardless. On a machine that trains "
             "on the CPU, fewer redraws leave more CPU to the training.")
    refresh = REFRESH[choice or DEFAULT_REFRESH]
st.fragment(charts, run_every=refresh)(stage.id)

steering_form(stage)
st.subheader("Steering log")
st.fragment(steering_log, run_every=refresh)(stage.id)
event_log(stage)
