"""What every page shares: the cached ``Workbench``, status badges, progress/ETA text and
time formatting. Not a page itself (only files listed in ``st.navigation`` in ``app.py`` are).

Pages import ``backend.api`` only, never torch / transformers / trl: the UI never trains.
"""
from __future__ import annotations

import html
import json
import os
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import pandas as pd
import streamlit as st

from backend.api import (ACTIVE_STATES, COMPLETED, FAILED, INTERRUPTED, PAUSED, QUEUED,
                         RESUMABLE_STATES, RUNNING, STOPPED, WAITING, ConfigError, StoreError,
                         Workbench, WorkbenchError)

def _through_app_navigation() -> None:
    """Make every page run inside ``app.py``'s ``st.navigation``.

    Because this folder is called ``pages/``, Streamlit starts each server in its old
    "pages folder" mode and keeps it until ``st.navigation`` has run once: when the first
    request a server gets is a deep link (``/training?run=5``, a bookmark, a tab left open over
    a restart), it runs that page file on its own, and the sidebar lists every file of the
    folder (``common`` included) without the wide layout. Switching the mode off and rerunning
    lets ``app.py`` run and open the same page. Uses Streamlit internals; if they move, pages
    still work, only that first deep link looks off."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # pragma: no cover - a Streamlit without it
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


_through_app_navigation()

# Stage states come from storage.records through backend.api; pages only style them.
# status -> (emoji, st.badge colour)
_STATUS_STYLE: dict[str, tuple[str, str]] = {
    QUEUED: ("⏳", "gray"),
    RUNNING: ("🟢", "green"),
    PAUSED: ("⏸️", "orange"),
    WAITING: ("👀", "violet"),
    COMPLETED: ("✅", "blue"),
    FAILED: ("❌", "red"),
    STOPPED: ("⏹️", "gray"),
    INTERRUPTED: ("⚠️", "orange"),
}


@st.cache_resource(show_spinner=False)
def _cached_workbench(db_url: Optional[str], home: Optional[str]) -> Workbench:
    # The key is what decides which database Workbench(None) opens: R1WB_DB_URL, else
    # the SQLite file under R1WB_HOME. One Workbench (one engine) per database per process.
    return Workbench(db_url)


def workbench() -> Workbench:
    """The process-wide Workbench for the database named by the environment. A database
    that cannot be opened stops the page with the store's own explanation."""
    try:
        return _cached_workbench(os.environ.get("R1WB_DB_URL"), os.environ.get("R1WB_HOME"))
    except StoreError as exc:
        st.error(f"Cannot open the run database. {exc}")
        st.stop()


# -- status ----------------------------------------------------------------------------------
def status_emoji(status: str) -> str:
    return _STATUS_STYLE.get(status, ("❔", "gray"))[0]


def status_badge(status: str) -> str:
    """Coloured emoji + text, e.g. ``"🟢 running"``; works in tables and markdown alike."""
    return f"{status_emoji(status)} {status}"


def status_color(status: str) -> str:
    """The ``st.badge`` colour of a status."""
    return _STATUS_STYLE.get(status, ("❔", "gray"))[1]


def status_markdown(status: str) -> str:
    """A coloured badge in Streamlit markdown (headers, captions, st.markdown)."""
    return f":{status_color(status)}-badge[{status_badge(status)}]"


# -- time ------------------------------------------------------------------------------------
def local_time(dt: Optional[datetime]) -> Optional[datetime]:
    """A naive-UTC store timestamp as naive local time (the UI runs on the user's machine)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def fmt_time(dt: Optional[datetime]) -> str:
    local = local_time(dt)
    return local.strftime("%Y-%m-%d %H:%M:%S") if local else "–"


# -- progress --------------------------------------------------------------------------------
def progress_eta(stage: Any) -> tuple[float, str]:
    """(fraction done, text), e.g. ``(0.15, "step 120/800 · 1m 32s left")``: the same rule as
    the CLI's (``backend.progress``)."""
    return Workbench.stage_progress(stage)


def tiles_html(tiles: list[tuple[str, Any, Optional[str]]]) -> str:
    """A row of number tiles (label, value, help) as HTML: what ``st.metric`` shows, at a
    fraction of the browser's work when a page redraws them every few seconds."""
    cells = "".join(
        f'<div class="wb-tile" data-label="{html.escape(label)}" '
        f'data-value="{html.escape(str(value))}" title="{html.escape(help_ or "")}" '
        f'style="flex:1 1 8rem;min-width:6rem"><div style="font-size:.875rem;opacity:.75">'
        f'{html.escape(label)}</div><div style="font-size:2rem;line-height:1.3">'
        f'{html.escape(str(value))}</div></div>' for label, value, help_ in tiles)
    return f'<div style="display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:.6rem">{cells}</div>'


def live_summary(stage: Any, tiles: list[tuple[str, Any, Optional[str]]],
                 footer: str = "") -> None:
    """What a live page refreshes every 2 s, as ONE element: the progress text ("step 120/800
    · 1m 32s left") over a thin bar, a row of tiles (label, value, help) and an optional
    footer line. One HTML element rather than ``st.progress`` + ``st.metric`` + captions:
    each element a refresh sends costs the browser work, ``st.progress`` animates every
    change and ``st.metric`` is costly to lay out (bench/bench_watching.py)."""
    fraction, text = progress_eta(stage)
    st.markdown(
        f'<div class="wb-progress" data-fraction="{fraction:.4f}" style="margin:.2rem 0 .8rem 0">'
        f'<div style="font-size:.875rem;margin-bottom:.3rem">{html.escape(text)}</div>'
        f'<div style="height:.5rem;border-radius:.25rem;background:rgba(128,128,128,.2)">'
        f'<div style="width:{100 * fraction:.2f}%;height:100%;border-radius:.25rem;'
        f'background:#ff4b4b"></div></div></div>'
        + (tiles_html(tiles) if tiles else "")
        + (f'<div style="font-size:.875rem;opacity:.75;margin-bottom:.8rem">{footer}</div>'
           if footer else ""),
        unsafe_allow_html=True)


# How often a page polls a stage that can still change (queued or active): each poll is one
# cheap query (``Workbench.stage_version``), and only what changed is redrawn.
POLL_SECONDS = 2
# How often charts and the followed groups are redrawn while steps arrive. A redrawn Plotly
# chart costs the browser ~0.1 s of CPU on a small machine, taken from a training that shares
# it; the numbers above the charts still refresh every POLL_SECONDS
# (bench/bench_watching.py measures each setting).
CHART_SECONDS = 10


def poll_period(status: str) -> Optional[int]:
    """Seconds between polls of a stage in ``status``; None once it can no longer change by
    itself (finished, failed, stopped: a resume from this page reruns it anyway)."""
    return POLL_SECONDS if status in (QUEUED, *ACTIVE_STATES) else None


def heldout_accuracy(stages: list[Any]) -> Optional[float]:
    """The held-out accuracy of the newest stage that reported one (a 0–1 share)."""
    for stage in reversed(stages):
        value = (stage.summary or {}).get("accuracy")
        if isinstance(value, (int, float)):
            return float(value)
    return None


def default_stage(stages: list[Any]) -> Optional[Any]:
    """The stage worth looking at first: the active one, else the one that failed or was
    stopped, else the newest that ran, else the first."""
    if not stages:
        return None
    for wanted in (ACTIVE_STATES, RESUMABLE_STATES):
        hit = next((s for s in stages if s.status in wanted), None)
        if hit:
            return hit
    ran = [s for s in stages if s.status != QUEUED]
    return ran[-1] if ran else stages[0]


# -- messages that survive a rerun -------------------------------------------------------------
def flash(message: str, icon: Optional[str] = None) -> None:
    """Queue a toast for the next script run (an action usually ends with ``st.rerun()``)."""
    st.session_state.setdefault("_flash", []).append((message, icon))


def control(column: Any, label: str, key: str, action: Callable[[int], str], enabled: bool,
            help_text: str, icon: str, stage_id: int) -> None:
    """A stage control button (pause / resume / stop ...): runs ``action(stage_id)`` and
    shows its answer, or the error, as a toast that survives the rerun."""
    if column.button(label, key=key, disabled=not enabled, help=help_text, icon=icon,
                     width="stretch"):
        try:
            flash(action(stage_id), icon="✅")
        except (WorkbenchError, StoreError, KeyError) as exc:
            flash(str(exc), icon="⚠️")
        st.rerun()


def stage_title(stage: Any) -> None:
    st.subheader(f"{stage_label(stage)} {status_markdown(stage.status)}")


def watched_stage(stage_id: int, shown_status: str) -> Optional[Any]:
    """For a fragment that refreshes a stage: the stage now; ``None`` (and a note) when it was
    deleted. When its status changed since the page was drawn, the whole page reruns: its
    title, buttons and refresh periods depend on the status (and stay out of the fragment, so
    a refresh does not resend them)."""
    try:
        stage = workbench().get_stage(stage_id)
    except KeyError:
        # Deleted (in another tab, from the CLI): the whole page reruns and shows
        # ``run_gone`` instead of its controls and forms.
        st.rerun(scope="app")
    if stage.status != shown_status:
        st.rerun()
    return stage


def show_flashes() -> None:
    for message, icon in st.session_state.pop("_flash", []):
        st.toast(message, icon=icon)
    run_end_toasts()


# How often an open page checks whether a run finished or failed (one list of runs).
RUN_TOAST_SECONDS = 10


@st.fragment(run_every=RUN_TOAST_SECONDS)
def run_end_toasts() -> None:
    """A toast when a run finishes or fails while the app is open, whichever page shows:
    compares each run's status with the one this session saw last."""
    statuses = {run.id: (run.name, run.status) for run in workbench().list_runs()}
    seen = st.session_state.get("_run_statuses")
    st.session_state["_run_statuses"] = statuses
    if seen is None:
        return  # the first look: nothing ended *while* the app was open
    for run_id, (name, status) in statuses.items():
        before = seen.get(run_id, (name, None))[1]
        if before == status or status not in (COMPLETED, FAILED):
            continue
        if status == COMPLETED:
            st.toast(f"Run #{run_id} ({name}) finished", icon="✅")
        else:
            st.toast(f"Run #{run_id} ({name}) failed", icon="❌")


# -- picking a run and a stage ---------------------------------------------------------------
def query_int(name: str) -> Optional[int]:
    """An integer query parameter (``?run=3``), ``None`` when absent or not a number."""
    try:
        return int(st.query_params.get(name, ""))
    except ValueError:
        return None


def run_gone(run_id: int) -> None:
    """A page opened on a run that no longer exists (deleted in another tab or from the CLI,
    or an old bookmark): a short message and the way back, nothing else."""
    st.warning(f"Run {run_id} was deleted.", icon=":material/delete:")
    st.page_link("pages/runs.py", label="Back to Runs", icon=":material/arrow_back:")
    st.stop()


def check_run_exists(runs: list[Any]) -> None:
    """Stop the page with ``run_gone`` when the URL names a run not among ``runs``."""
    wanted = query_int("run")
    if wanted is not None and wanted not in {run.id for run in runs}:
        run_gone(wanted)


def rerun_if_deleted(fragment: Callable[..., None]) -> Callable[..., None]:
    """Wrap a refreshing fragment: when its stage was deleted meanwhile (the API raises
    KeyError), the whole page reruns and says so (``run_gone``), not a traceback."""
    def wrapped(*args: Any, **kwargs: Any) -> None:
        try:
            fragment(*args, **kwargs)
        except KeyError:
            st.rerun(scope="app")
    wrapped.__name__ = getattr(fragment, "__name__", "fragment")
    wrapped.__qualname__ = getattr(fragment, "__qualname__", wrapped.__name__)
    return wrapped


def run_picker(runs: list[Any], fallback: int, container: Any = None) -> Any:
    """The Run selectbox over ``runs`` (newest first): opens on the URL's ``?run=`` when it
    names one of them, else on run ``fallback``; keeps the URL in step with the choice, so it
    can be bookmarked or shared."""
    runs_by_id = {run.id: run for run in runs}
    run_ids = list(runs_by_id)
    wanted = query_int("run")
    run_id = (container if container is not None else st).selectbox(
        "Run", run_ids, index=run_ids.index(wanted if wanted in runs_by_id else fallback),
        format_func=lambda i: f"#{i} · {runs_by_id[i].name} · {status_badge(runs_by_id[i].status)}")
    st.query_params.update({"run": str(run_id)})
    return runs_by_id[run_id]


def pick_run(wb: Workbench, container: Any = None) -> Any:
    """The top of a page about one run (Stage, Pipeline): the Run selectbox, opened on the
    URL's run, else the newest. Stops the page, saying why, when there is no run yet, when the
    URL's run was deleted, or when the chosen run has no stages."""
    runs = wb.list_runs()
    check_run_exists(runs)
    if not runs:
        st.info("No runs yet.")
        st.page_link("pages/runs.py", label="Start one on the Runs page", icon=":material/add:")
        st.stop()
    run = run_picker(runs, runs[0].id, container)
    if not run.stages:
        st.warning(f"Run #{run.id} has no stages.")
        st.stop()
    return run


def stage_label(stage: Any) -> str:
    """A stage as the user numbers it in its run: ``3. Reasoning RL``."""
    return f"{stage.position + 1}. {stage.name}"


def pick_stage_of_kind(wb: Workbench, kind: str, what: str = "stage") -> tuple[Any, Any]:
    """Run and stage selectboxes limited to runs that have a stage of ``kind``; opens on the
    URL's ``?run=&stage=``, else the newest run with an active stage of that kind, else the
    newest run that has one. Keeps the URL in step. Stops the page when there is nothing, or
    when the URL's run was deleted."""
    all_runs = wb.list_runs()
    check_run_exists(all_runs)
    runs = [run for run in all_runs if any(s.kind == kind for s in run.stages)]
    if not runs:
        st.info(f"No run has a {what} yet. Start one (e.g. recipe `r1-zero`) on the Runs page.")
        st.page_link("pages/runs.py", label="Runs", icon=":material/add:")
        st.stop()
    active = next((run for run in runs if any(
        s.kind == kind and s.status in ACTIVE_STATES for s in run.stages)), None)
    run_col, stage_col = st.columns(2)
    run = run_picker(runs, (active or runs[0]).id, run_col)  # runs: newest first
    run_id = run.id
    stages = [s for s in run.stages if s.kind == kind]
    stages_by_id = {s.id: s for s in stages}
    wanted_stage = query_int("stage")
    if wanted_stage not in stages_by_id:
        wanted_stage = default_stage(stages).id
    stage_ids = list(stages_by_id)
    stage_id = stage_col.selectbox(
        "Stage", stage_ids, index=stage_ids.index(wanted_stage),
        format_func=lambda i: (f"{stages_by_id[i].position + 1}. {stages_by_id[i].name} "
                               f"· {status_badge(stages_by_id[i].status)}"))
    st.query_params.update({"run": str(run_id), "stage": str(stage_id)})
    return run, stages_by_id[stage_id]


# -- steering commands -------------------------------------------------------------------------
def command_label(cmd: Any) -> str:
    """Short text of a command: ``pause``, ``temperature=0.7``, ``reward_weights=1,0``."""
    return Workbench.describe_command(cmd)


# -- stage configs as editable tables (Runs: new run, clone; Stage: fix and re-run) --------
def shown(value: Any) -> str:
    """A config value as the text a user edits (the backend coerces text to each type)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


def config_frame(config: dict[str, Any], help_text: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"setting": key, "value": shown(value), "help": help_text.get(key, "")}
                         for key, value in config.items()])


def edited_config(defaults: dict[str, Any], edited: pd.DataFrame) -> dict[str, Any]:
    """The stage config a user submitted: untouched settings keep their typed default,
    edited ones go to the backend as text (it validates and coerces them)."""
    config = {}
    for key, text in zip(edited["setting"], edited["value"]):
        default = defaults[key]
        text = "" if text is None or pd.isna(text) else str(text).strip()
        if text == shown(default):
            config[key] = default
        elif default is None:
            config[key] = text or None
        elif isinstance(default, (list, dict)):
            try:
                config[key] = json.loads(text)
            except ValueError:
                raise ConfigError(f"setting {key}={text!r} is not valid JSON") from None
        else:
            config[key] = text
    return config


CONFIG_COLUMNS = {
    "setting": st.column_config.TextColumn("Setting", width="medium"),
    "value": st.column_config.TextColumn("Value", width="small"),
    "help": st.column_config.TextColumn("What it does", width="large"),
}


# -- charts: plain Plotly specs (dicts; building go.Figure objects costs more than the query) --
# Readable on Streamlit's light and dark themes alike: charts are drawn without Streamlit's
# theme (``theme=None``: the browser skips restyling every figure on every redraw).
CHART_MUTED, CHART_GRID = "#808080", "rgba(128,128,128,0.25)"


def line_trace(x: list, y: list, name: str, color: str) -> dict:
    """One curve; markers only while there are few points."""
    return {"type": "scatter", "x": list(x), "y": list(y), "name": name,
            "mode": "lines+markers" if len(x) <= 30 else "lines", "marker": {"size": 5},
            "line": {"color": color, "width": 2}}


def chart_layout(title: str, *, height: int, margin_right: int = 10, margin_bottom: int = 30,
                 legend_y: float = -0.12, percent: bool = False) -> dict[str, Any]:
    """The layout every small line chart shares (no theme, transparent, legend below);
    callers add their axis ranges and titles to ``xaxis`` / ``yaxis``."""
    axis = {"gridcolor": CHART_GRID, "zerolinecolor": CHART_GRID, "linecolor": CHART_GRID}
    return {
        "template": "none", "height": height,
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"color": CHART_MUTED, "size": 11},
        "title": {"text": title, "font": {"size": 14}, "x": 0, "xanchor": "left", "y": 0.97},
        "margin": {"l": 40, "r": margin_right, "t": 36, "b": margin_bottom},
        "legend": {"orientation": "h", "yanchor": "top", "y": legend_y, "xanchor": "left",
                   "x": 0, "font": {"size": 10}},
        "hovermode": "x unified",
        "xaxis": dict(axis),
        "yaxis": {**axis, **({"tickformat": ".0%", "rangemode": "tozero"} if percent else {})},
        "shapes": [], "annotations": [],
    }
