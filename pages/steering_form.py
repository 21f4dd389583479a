"""The live steering form: one form for every page that steers a stage (Live training for
GRPO, the Stage page for every kind). Not a page itself (only files listed in ``app.py``'s
``st.navigation`` are).

The form is built from the stage kind's declarations (``Workbench.live_params``: type,
bounds, help, how it is applied), prefilled with the values the stage runs with now, and
sends only what changed. ``Workbench.check_params`` refuses a bad value with its message
before anything is sent; a change it names as risky (a 10x learning rate, a negative reward
weight) waits for a confirmation.
"""
from __future__ import annotations

import math
import zlib
from typing import Any

import streamlit as st

from backend.api import ConfigError, StoreError, WorkbenchError
from pages.common import ACTIVE_STATES, WAITING, workbench

LABELS = {"temperature": "Temperature", "beta": "KL beta", "learning_rate": "Learning rate"}
FORMATS = {"learning_rate": "%.2e", "beta": "%.3f"}
STEPS = {"learning_rate": 1e-5, "beta": 0.01, "temperature": 0.05}


def reward_names(stage: Any) -> list[str]:
    """The stage's reward functions, in the order of its weights."""
    funcs = (stage.config or {}).get("reward_funcs") or []
    if isinstance(funcs, str):  # a config stored before reward_funcs became a list
        funcs = funcs.split(",")
    return [str(n).strip() for n in funcs if str(n).strip()]


def current_values(stage: Any) -> dict[str, Any]:
    """The values of the stage's live parameters it runs with now: the effective values the
    worker stored (``Stage.params``), else the config's."""
    values = {}
    for param in workbench().live_params(stage.kind):
        value = (stage.params or {}).get(param.name, (stage.config or {}).get(param.name))
        if param.type == "weights":
            names = reward_names(stage)
            weights = list(value) if isinstance(value, (list, tuple)) else []
            value = [float(w) for w in weights] + [1.0] * (len(names) - len(weights))
        values[param.name] = value
    return values


def changed_params(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """The ``set_params`` payload: every value that differs from the current one (weights as
    the whole list, so an earlier live change of another weight is kept)."""
    def differs(a: Any, b: Any) -> bool:
        if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
            return len(a or []) != len(b or []) or any(differs(x, y) for x, y in zip(a, b))
        if a is None or b is None:
            return a is not b
        return not math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)

    return {name: value for name, value in wanted.items() if differs(current.get(name), value)}


def send(stage_id: int, payload: dict[str, Any]) -> None:
    try:
        message = workbench().set_params(stage_id, payload)
        st.success(f"{', '.join(f'{k}={v}' for k, v in payload.items())}: {message}")
    except (ConfigError, WorkbenchError, StoreError, KeyError) as exc:
        st.error(str(exc))


def steering_form(stage: Any, title: str = "Live steering") -> None:
    """The form for ``stage``'s declared live parameters (nothing for a kind without any),
    enabled while the stage is running, paused or waiting for review."""
    params = workbench().live_params(stage.kind)
    if not params:
        return
    st.subheader(title)
    live = stage.status in ACTIVE_STATES
    current = current_values(stage)
    names = reward_names(stage)
    # Keys carry the current values: once a change is applied the form shows the new ones.
    sig = zlib.crc32(repr(sorted((k, str(v)) for k, v in current.items())).encode())
    wanted: dict[str, Any] = {}
    with st.form(f"steer_{stage.id}", border=True):
        widths = sum(len(names) if p.type == "weights" else 1 for p in params)
        cols = iter(st.columns(max(1, widths)))
        for param in params:
            help_text = f"{param.help} Applied to: {param.applies}. Allowed: {param.bounds()}."
            if param.type == "weights":
                weights = []
                for name, value in zip(names, current[param.name]):
                    weights.append(next(cols).number_input(
                        f"Weight: {name}", value=float(value), step=0.1, format="%.2f",
                        key=f"steer_weight_{name}_{sig}", disabled=not live, help=help_text))
                wanted[param.name] = weights
                continue
            locked = param.zero_stays_zero and not (stage.config or {}).get(param.name)
            value = current[param.name]
            wanted[param.name] = next(cols).number_input(
                LABELS.get(param.name, param.name.replace("_", " ").capitalize()),
                value=float(value if value is not None else 0.0),
                step=STEPS.get(param.name, 0.1), format=FORMATS.get(param.name, "%.2f"),
                key=f"steer_{param.name}_{sig}", disabled=not live or locked,
                help=(f"This stage started with {param.name} = 0, so it stays 0: "
                      f"{param.applies}." if locked else help_text))
            if locked:
                wanted.pop(param.name)
        submitted = st.form_submit_button("Apply at next step", type="primary",
                                          disabled=not live, icon=":material/tune:")
    if not live:
        st.caption(f"Steering needs a running or paused stage (this one is {stage.status}).")
    elif stage.status == WAITING:
        # The worker is alive and takes the change now; no trainer exists yet to use it.
        st.caption("This stage waits for review and has not trained yet: a change you apply "
                   "now is stored and takes effect when training starts, from its first step.")
    else:
        st.caption("Prefilled with the values the stage runs with now (refreshed when a change "
                   "is applied); every value you change is sent and takes effect at the next "
                   "step boundary.")
    pending_key = f"steer_pending_{stage.id}"
    if submitted:
        st.session_state.pop(pending_key, None)
        payload = changed_params(current, wanted)
        if not payload:
            st.info("Nothing changed.")
            return
        try:
            _, risks = workbench().check_params(stage.id, payload)
        except (ConfigError, WorkbenchError, StoreError, KeyError) as exc:
            st.error(f"Not sent: {exc}")
            return
        if not risks:
            send(stage.id, payload)
            return
        st.session_state[pending_key] = (payload, risks)
    pending = st.session_state.get(pending_key)
    if pending and live:
        payload, risks = pending
        st.warning("This change may hurt the run: " + "; ".join(risks) + ". Apply it anyway?",
                   icon=":material/warning:")
        yes, no, _ = st.columns([1, 1, 4])
        if yes.button("Apply anyway", key=f"steer_confirm_{stage.id}", type="primary"):
            st.session_state.pop(pending_key, None)
            send(stage.id, payload)
        if no.button("Cancel", key=f"steer_cancel_{stage.id}"):
            st.session_state.pop(pending_key, None)
            st.rerun()
