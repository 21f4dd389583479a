"""What every page shares: the cached ``Workbench``, status badges, progress/ETA text and
time formatting. Not a page itself (only files listed in ``st.navigation`` in ``app.py`` are).

Pages import ``backend.api`` only, never torch / transformers / trl: the UI never trains.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Optional

import streamlit as st

from backend.api import StoreError, Workbench

# Stage states, as in storage/records.py (backend.api does not re-export them).
QUEUED, RUNNING, PAUSED, COMPLETED, FAILED, STOPPED, INTERRUPTED = (
    "queued", "running", "paused", "completed", "failed", "stopped", "interrupted"
)
ACTIVE_STATES = (RUNNING, PAUSED)
RESUMABLE_STATES = (STOPPED, INTERRUPTED, FAILED)

# status -> (emoji, st.badge colour)
_STATUS_STYLE: dict[str, tuple[str, str]] = {
    QUEUED: ("⏳", "gray"),
    RUNNING: ("🟢", "green"),
    PAUSED: ("⏸️", "orange"),
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
def utc_now() -> datetime:
    # The store keeps naive UTC datetimes; compare like with like.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def fmt_duration(seconds: Optional[float]) -> str:
    """``14s``, ``1m 32s``, ``2h 05m``, ``3d 4h``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def local_time(dt: Optional[datetime]) -> Optional[datetime]:
    """A naive-UTC store timestamp as naive local time (the UI runs on the user's machine)."""
    if dt is None:
        return None
    return dt.replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def fmt_time(dt: Optional[datetime]) -> str:
    local = local_time(dt)
    return local.strftime("%Y-%m-%d %H:%M:%S") if local else "–"


# -- progress --------------------------------------------------------------------------------
def progress_eta(stage: Any, now: Optional[datetime] = None) -> tuple[float, str]:
    """(fraction done, text) for a stage, e.g. ``(0.15, "step 120/800 · 1m 32s left")``.

    The rate is the steps done in this attempt (since ``attempt_started_step``) over the time
    from the attempt's start to the last heartbeat, so a resumed stage is not credited with
    the steps of its earlier attempt.
    """
    total = stage.total_steps
    step = stage.step or 0
    fraction = min(1.0, step / total) if total else 0.0
    head = f"step {step}/{total}" if total else f"step {step}"
    status = stage.status
    if status == COMPLETED:
        took = (stage.ended_at - stage.started_at).total_seconds() \
            if stage.ended_at and stage.started_at else None
        return 1.0, f"{head} · done in {fmt_duration(took)}"
    if status == QUEUED:
        return fraction, f"{head} · queued"
    if status == RUNNING:
        # The worker keeps started_at from the first attempt; prefer a per-attempt start time
        # when the store provides one.
        start = getattr(stage, "attempt_started_at", None) or stage.started_at
        done = step - (stage.attempt_started_step or 0)
        beat = stage.heartbeat_at
        if not total or not start or not beat or done <= 0 or beat <= start:
            return fraction, f"{head} · starting…" if done <= 0 else head
        rate = done / (beat - start).total_seconds()  # steps per second
        left = (total - step) / rate
        # Time since the last heartbeat has already passed.
        left -= max(0.0, ((now or utc_now()) - beat).total_seconds())
        return fraction, f"{head} · {fmt_duration(max(0.0, left))} left"
    return fraction, f"{head} · {status}"


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


def show_flashes() -> None:
    for message, icon in st.session_state.pop("_flash", []):
        st.toast(message, icon=icon)
