"""Runs: every run at a glance (refreshed every 2 s), start a new one from a recipe, open a
run's stage view, delete a run after confirming."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from backend.api import ConfigError, StoreError, WorkbenchError
from pages.common import (COMPLETED, flash, heldout_accuracy, local_time, show_flashes,
                          status_badge, status_emoji, workbench)

wb = workbench()

st.title("Runs")
st.caption(f"Database: `{wb.store.url}`. Training runs in background processes: closing "
           f"this tab or restarting the UI does not stop it.")
show_flashes()


# -- the table -------------------------------------------------------------------------------
def stage_fraction(stage: Any) -> float:
    if stage.status == COMPLETED:
        return 1.0
    return min(1.0, stage.step / stage.total_steps) if stage.total_steps else 0.0


def runs_frame(runs: list[Any]) -> pd.DataFrame:
    rows = []
    for run in runs:
        accuracy = heldout_accuracy(run.stages)
        rows.append({
            "id": run.id,
            "name": run.name,
            "recipe": run.recipe,
            "preset": run.preset,
            "status": status_badge(run.status),
            "progress": (sum(stage_fraction(s) for s in run.stages) / len(run.stages)
                         if run.stages else 0.0),
            "stages": "  ·  ".join(
                f"{status_emoji(s.status)} {s.kind} {s.step}/{s.total_steps or '?'}"
                for s in run.stages),
            "accuracy": None if accuracy is None else 100 * accuracy,
            "created": local_time(run.created_at),
        })
    return pd.DataFrame(rows)


RUN_COLUMNS = {
    "id": st.column_config.NumberColumn("Run", format="#%d", width="small"),
    "name": st.column_config.TextColumn("Name"),
    "recipe": st.column_config.TextColumn("Recipe"),
    "preset": st.column_config.TextColumn("Preset"),
    "status": st.column_config.TextColumn("Status"),
    "progress": st.column_config.ProgressColumn(
        "Progress", min_value=0.0, max_value=1.0, format="percent", width="small",
        help="Share of all stages' steps done"),
    "stages": st.column_config.TextColumn(
        "Stages", help="Each stage: status, kind, step / total steps"),
    "accuracy": st.column_config.NumberColumn(
        "Held-out acc.", format="%.1f%%",
        help="Strict accuracy on held-out problems, from the newest stage that evaluated"),
    "created": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
}


@st.fragment(run_every=2)
def runs_table() -> None:
    runs = wb.list_runs()
    if not runs:
        st.info("No runs yet. Start one with **New run** below.")
        return
    # A new key after a delete clears the selection (it would otherwise point at a
    # neighbouring run).
    key = f"runs_table_{st.session_state.get('runs_table_generation', 0)}"
    picked = st.dataframe(runs_frame(runs), key=key, on_select="rerun",
                          selection_mode="single-row", hide_index=True, placeholder="–",
                          column_config=RUN_COLUMNS)
    rows = picked.selection.rows
    if not rows or rows[0] >= len(runs):
        st.caption("Select a run to open its stages or delete it.")
        return
    run_actions(runs[rows[0]])


def run_actions(run: Any) -> None:
    with st.container(border=True):
        st.markdown(f"**Run #{run.id} · {run.name}** — {status_badge(run.status)}")
        open_col, delete_col, _ = st.columns([1, 1, 3])
        if open_col.button("Open stage view", key="open_run", type="primary",
                           icon=":material/open_in_new:", width="stretch"):
            st.switch_page("pages/stage.py", query_params={"run": str(run.id)})
        if delete_col.button("Delete run…", key="ask_delete", icon=":material/delete:",
                             width="stretch"):
            st.session_state["confirm_delete"] = run.id
        if st.session_state.get("confirm_delete") == run.id:
            confirm_delete(run)


def confirm_delete(run: Any) -> None:
    st.warning(f"Delete run **#{run.id} · {run.name}** and everything it recorded (stages, "
               f"metrics, rollouts, datasets, events)? Stages still running are killed "
               f"first. This cannot be undone.")
    yes_col, no_col, _ = st.columns([1, 1, 3])
    if yes_col.button(f"Yes, delete run #{run.id}", key="confirm_delete_yes", type="primary",
                      width="stretch"):
        st.session_state.pop("confirm_delete", None)
        try:
            wb.delete_run(run.id)
        except (WorkbenchError, StoreError, KeyError) as exc:
            flash(f"Run #{run.id} was not deleted: {exc}", icon="⚠️")
        else:
            flash(f"Run #{run.id} deleted", icon="🗑️")
            st.session_state["runs_table_generation"] = (
                st.session_state.get("runs_table_generation", 0) + 1)
        st.rerun()
    if no_col.button("Cancel", key="confirm_delete_no", width="stretch"):
        st.session_state.pop("confirm_delete", None)
        st.rerun()


# -- stage configs as editable tables --------------------------------------------------------
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


def new_run_form(expanded: bool) -> None:
    with st.expander("New run", expanded=expanded, icon=":material/add:"):
        recipes = wb.recipes()
        recipe_col, preset_col, name_col = st.columns(3)
        recipe = recipe_col.selectbox("Recipe", list(recipes), key="new_recipe")
        preset = preset_col.selectbox(
            "Preset", wb.presets(), key="new_preset",
            help="Resizes every stage. 'tiny' is the embedded default (minutes on a laptop "
                 "CPU); 'smoke' takes seconds, for trying the UI.")
        name = name_col.text_input("Name (optional)", key="new_name",
                                   placeholder=f"{recipe} ({preset})")
        st.caption(recipes[recipe])
        try:
            specs = wb.default_stages(recipe, preset)
        except ConfigError as exc:
            st.error(f"This recipe and preset do not fit together: {exc}")
            return
        with st.form("new_run_form", border=False):
            st.markdown("**Stage settings** (edit a value to change it; checked when you "
                        "start the run)")
            tabs = st.tabs([f"{i + 1}. {spec.name}" for i, spec in enumerate(specs)])
            edited = []
            for i, (tab, spec) in enumerate(zip(tabs, specs)):
                frame = config_frame(spec.config, wb.config_help(spec.kind))
                edited.append(tab.data_editor(
                    frame, key=f"config_{recipe}_{preset}_{i}", hide_index=True,
                    disabled=["setting", "help"], column_config=CONFIG_COLUMNS,
                    height=(len(frame) + 1) * 35 + 3))
            submitted = st.form_submit_button("Start run", type="primary",
                                              icon=":material/play_arrow:")
        if submitted:
            try:
                configs = [edited_config(spec.config, frame)
                           for spec, frame in zip(specs, edited)]
                run = wb.create_run(recipe, preset, name=name.strip() or None,
                                    stage_configs=configs)
            except (ConfigError, StoreError, WorkbenchError) as exc:
                st.error(f"Run not created. {exc}")
            else:
                st.success(f"Run #{run.id} started: **{run.name}**")
                st.page_link("pages/stage.py", label=f"Watch run #{run.id}",
                             icon=":material/monitoring:", query_params={"run": str(run.id)})


runs_table()
new_run_form(expanded=not wb.list_runs())
