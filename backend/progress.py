"""How far a stage is and how long it has left: one rule for the pages and the CLI.

The rate counts only work steps of the current attempt: a worker starts its attempt's clock at
its first progress report (after loading models and data, tokenising a corpus...), so setup
time never inflates the estimate, and a resumed stage is not credited with the steps of its
earlier attempt. Until ``MIN_TIMED_STEPS`` steps are timed the estimate says "estimating...".
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from storage import records as r

MIN_TIMED_STEPS = 3


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


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)  # the store keeps naive UTC


def eta_seconds(stage: Any, now: Optional[datetime] = None) -> Optional[float]:
    """Seconds left for a running stage, or None while it cannot be estimated yet."""
    total, step = stage.total_steps, stage.step or 0
    start, beat = stage.attempt_started_at, stage.heartbeat_at
    done = step - (stage.attempt_started_step or 0)
    if stage.status != r.RUNNING or not total or not start or not beat or beat <= start \
            or done < MIN_TIMED_STEPS:
        return None
    rate = done / (beat - start).total_seconds()  # steps per second
    left = (total - step) / rate
    # Time since the last heartbeat has already passed.
    return max(0.0, left - max(0.0, ((now or utc_now()) - beat).total_seconds()))


def stage_progress(stage: Any, now: Optional[datetime] = None) -> tuple[float, str]:
    """(fraction done, text) for a stage, e.g. ``(0.15, "step 120/800 · 1m 32s left")``."""
    total, step = stage.total_steps, stage.step or 0
    fraction = min(1.0, step / total) if total else 0.0
    head = f"step {step}/{total}" if total else f"step {step}"
    if stage.status == r.COMPLETED:
        took = ((stage.ended_at - stage.started_at).total_seconds()
                if stage.ended_at and stage.started_at else None)
        return 1.0, f"{head} · done in {fmt_duration(took)}"
    if stage.status == r.RUNNING:
        if not stage.attempt_started_at or step <= (stage.attempt_started_step or 0):
            return fraction, f"{head} · starting…"
        left = eta_seconds(stage, now)
        return fraction, f"{head} · " + ("estimating…" if left is None
                                         else f"{fmt_duration(left)} left")
    return fraction, f"{head} · {stage.status}"
