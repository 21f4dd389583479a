"""Compare: the evaluated models of several runs side by side, as the R1 paper reports its
results: one row per model, one column per figure the evaluations stored (greedy pass@1,
pass@1 over k samples, cons@k, pass@k, format, ...), the best value of each column marked;
a CSV download of the table; the runs' training curves (reward, held-out accuracy,
completion length) overlaid against step or training time. A selected row links to the stage
that scored it.

Opens on ``?runs=3,5`` (run ids), else the newest runs that have evaluation results."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd
import streamlit as st

from pages.common import (CHART_MUTED, chart_layout, line_trace, show_flashes, status_badge,
                          workbench)

wb = workbench()

st.title("Compare")
show_flashes()

DEFAULT_RUNS = 4  # runs preselected when the URL names none
CHART_HEIGHT = 320
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]
BEST_STYLE = "font-weight: 700; background-color: rgba(255, 196, 0, 0.28)"
X_AXES = {"step": "Step", "time": "Training time"}
# The Evaluation page (per-problem results) when this install has it.
EVALUATION_PAGE = "pages/evaluation.py"


# -- choosing runs -----------------------------------------------------------------------------
def wanted_runs(run_ids: list[int], evaluated: list[int]) -> list[int]:
    """The URL's ``?runs=``, else the newest runs with evaluation results."""
    text = st.query_params.get("runs", "")
    asked = [int(part) for part in text.split(",") if part.strip().isdigit()]
    asked = [run_id for run_id in asked if run_id in run_ids]
    return asked or evaluated[:DEFAULT_RUNS] or run_ids[:1]


runs = wb.list_runs()
if not runs:
    st.info("No runs yet. Start one (e.g. recipe `r1-zero`, or `distill` for the paper's "
            "comparison) on the Runs page.")
    st.page_link("pages/runs.py", label="Runs", icon=":material/add:")
    st.stop()

runs_by_id = {run.id: run for run in runs}  # newest first
all_entries = wb.eval_entries()
evaluated = list(dict.fromkeys(entry.run_id for entry in all_entries))
chosen = st.multiselect(
    "Runs", list(runs_by_id), default=wanted_runs(list(runs_by_id), evaluated),
    format_func=lambda i: (f"#{i} · {runs_by_id[i].name} · {status_badge(runs_by_id[i].status)}"
                           + ("" if i in evaluated else " · not evaluated")),
    help="Each run's evaluated models become rows of the table; its training stages, curves.")
st.query_params["runs"] = ",".join(str(i) for i in chosen)
if not chosen:
    st.info("Pick one or more runs.")
    st.stop()


# -- the table ---------------------------------------------------------------------------------
def cell_text(value: Optional[float], column: Any) -> str:
    if value is None:
        return "–"
    if column.share:
        return f"{100 * value:.1f}%"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def has_evaluation_page() -> bool:
    return (Path(__file__).resolve().parent.parent / EVALUATION_PAGE).exists()


def table_frame(table: Any) -> pd.DataFrame:
    """The table as the page shows it: the model, each figure as text (shares in %), what it
    was scored on, and links to the stage that scored it (and its per-problem results).
    Links are relative to the page's address, so they work behind a base path too."""
    rows = []
    for entry in table.entries:
        row = {"Model": entry.name}
        for column in table.columns:
            row[column.label] = cell_text(entry.metrics.get(column.name), column)
        query = f"?run={entry.run_id}&stage={entry.stage_id}"
        row["Dataset"] = entry.dataset or "–"
        row["Stage"] = f"stage{query}"
        if has_evaluation_page():
            row["Problems"] = f"evaluation{query}"
        rows.append(row)
    return pd.DataFrame(rows)


def styled(table: Any, frame: pd.DataFrame) -> Any:
    """Bold on a gold background: the best value of each ranked column (ties all marked)."""
    best_cells = {(i, column.label) for column in table.columns
                  for i in table.best.get(column.name, ())}

    def mark(data: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame([[BEST_STYLE if (i, col) in best_cells else ""
                              for col in data.columns] for i in range(len(data))],
                            index=data.index, columns=data.columns)

    return frame.style.apply(mark, axis=None)


LINK_COLUMNS = {
    "Model": st.column_config.TextColumn("Model", pinned=True),
    "Stage": st.column_config.LinkColumn(
        "Stage", display_text="open stage ↗", width="small",
        help="The stage that scored this model: its config, log and events"),
    "Problems": st.column_config.LinkColumn(
        "Problems", display_text="per problem ↗", width="small",
        help="Every held-out problem: the k samples and how they voted"),
}

entries = [entry for entry in all_entries if entry.run_id in chosen]
st.subheader("Evaluated models")
if not entries:
    st.info("None of these runs has evaluation results yet (an `evaluate` stage, as in the "
            "`r1-zero`, `r1` and `distill` recipes, or `python -m backend eval CHECKPOINT`).")
else:
    names = {f"{e.stage_id}:{e.label}": e for e in entries}
    picked = st.multiselect("Models", list(names), default=list(names),
                            format_func=lambda key: names[key].name,
                            help="Rows of the table: every model the chosen runs evaluated.")
    table = wb.compare_table([names[key] for key in picked])
    if not table.entries:
        st.info("Pick one or more models.")
    else:
        st.dataframe(styled(table, table_frame(table)), hide_index=True, width="stretch",
                     key="compare_table", column_config=LINK_COLUMNS)
        st.caption("Bold on gold: the best value of each column among these models (pass "
                   "rates, format, language consistency, <think> use: higher is better; lengths "
                   "and settings are not ranked). Shares are of held-out problems; pass@1 is the "
                   "mean over k sampled answers, cons@k their majority vote.")
        st.download_button("Download the table (CSV)", table.csv(), file_name="compare.csv",
                           mime="text/csv", icon=":material/download:")


# -- the curves --------------------------------------------------------------------------------
def curve_chart(title: str, curves: list[Any], x_axis: str, colors: dict[str, str],
                percent: bool) -> dict:
    """One chart, one line per training stage, as a plain Plotly spec (see pages/training.py)."""
    data = []
    for curve in curves:
        xs = curve.steps if x_axis == "step" else curve.seconds
        if xs is None:
            continue
        if x_axis == "time":
            xs = [s / 60 for s in xs]
        data.append(line_trace(xs, curve.values, curve.label, colors.get(curve.label, CHART_MUTED)))
    layout = chart_layout(title, height=CHART_HEIGHT, margin_bottom=40, legend_y=-0.18,
                          percent=percent)
    layout["showlegend"] = True
    layout["xaxis"].update(title={"text": "step" if x_axis == "step" else "training time (min)",
                                  "font": {"size": 10}}, rangemode="tozero")
    if not data:
        layout["annotations"].append({
            "text": "not logged by these runs" if x_axis == "step"
            else "no step times logged", "showarrow": False, "xref": "paper",
            "yref": "paper", "x": 0.5, "y": 0.5, "font": {"color": "#888"}})
        layout["yaxis"]["showticklabels"] = False
        layout["showlegend"] = False
        data.append({"type": "scatter", "x": [], "y": [], "hoverinfo": "skip"})
    return {"data": data, "layout": layout}


st.subheader("Training curves")
x_choice = st.segmented_control(
    "Against", list(X_AXES), default="step", format_func=X_AXES.get, key="compare_x",
    help="Training time adds up TRL's own seconds per optimizer step (loading and quick "
         "evaluations left out), so runs at matched compute line up.")
x_axis = x_choice or "step"
curves = wb.compare_curves(chosen)
labels = list(dict.fromkeys(c.label for chart in curves.values() for c in chart))
if not labels:
    st.info("No training curves in these runs yet (a GRPO stage logs reward, held-out "
            "accuracy and completion length).")
else:
    colors = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    charts = [("Reward (group means)", "reward", False),
              ("Held-out accuracy (quick eval)", "held-out accuracy", True),
              ("Mean completion length (tokens)", "completion length", False)]
    for col, (title, key, percent) in zip(st.columns(len(charts)), charts):
        col.plotly_chart(curve_chart(title, curves[key], x_axis, colors, percent),
                         key=f"compare_{key}", theme=None, config={"displayModeBar": False})
