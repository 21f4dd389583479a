"""Runs: every run at a glance (refreshed every 2 s), start a new one from a recipe, open a
run's stage view, delete a run after confirming."""
from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from backend.api import ConfigError, StoreError, WorkbenchError
from pages.common import (COMPLETED, RESUMABLE_STATES, flash, local_time, show_flashes,
                          status_badge, status_emoji, workbench)
from pages.stage_settings import StageSettings, stage_settings

wb = workbench()

st.title("Runs")
st.caption(f"Database: `{wb.store.display_url}`. Training runs in background processes: closing "
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
        accuracy = wb.run_result(run)
        rows.append({
            "id": run.id,
            "name": run.name,
            "recipe": f"{run.recipe} · {run.preset}",
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
    "name": st.column_config.TextColumn("Name", width="medium"),
    "recipe": st.column_config.TextColumn("Recipe · preset", width="small"),
    "status": st.column_config.TextColumn("Status", width="small"),
    "progress": st.column_config.ProgressColumn(
        "Progress", min_value=0.0, max_value=1.0, format="percent", width="small",
        help="Share of all stages' steps done"),
    "stages": st.column_config.TextColumn(
        "Stages", width="medium", help="Each stage: status, kind, step / total steps"),
    "accuracy": st.column_config.NumberColumn(
        "Result", format="%.1f%%", width="small",
        help="The final model's greedy pass@1 on held-out problems, from this run's own "
             "evaluate stage once it completed (none for a run that failed before it)"),
    "created": st.column_config.DatetimeColumn("Created", format="MM-DD HH:mm",
                                               width="small"),
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
        open_col, clone_col, delete_col, _ = st.columns([1, 1, 1, 2])
        if open_col.button("Open stage view", key="open_run", type="primary",
                           icon=":material/open_in_new:", width="stretch"):
            st.switch_page("pages/stage.py", query_params={"run": str(run.id)})
        if clone_col.button("Clone run…", key="ask_clone", icon=":material/content_copy:",
                            width="stretch",
                            help="A new run with this run's stages and configs, editable "
                                 "before it starts (fix what made it fail)."):
            st.session_state["clone_of"] = run.id
            st.rerun()  # the clone editor is drawn below the table, outside this fragment
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


def config_tabs(specs: list[Any], key: str) -> list[StageSettings]:
    """Each stage's settings in a tab: select boxes for settings with named choices, an
    editable table for the rest (pages/stage_settings.py)."""
    st.markdown("**Stage settings** (edit a value to change it; checked when you start "
                "the run)")
    labels = [f"{i + 1}. {spec.name}" for i, spec in enumerate(specs)]
    return [stage_settings(tab, spec.kind, spec.config, f"{key}_{i}", label)
            for i, (tab, spec, label) in enumerate(zip(st.tabs(labels), specs, labels))]


def stage_configs(settings: list[StageSettings]) -> list[dict[str, Any]]:
    """The configs a user set, or ConfigError with what the form showed next to a choice
    that cannot run here (vLLM missing...): refused now, not when the stage starts."""
    problems = [problem for s in settings for problem in s.problems]
    if problems:
        raise ConfigError("; ".join(problems))
    return [s.config() for s in settings]


def start_once(form: str, start: Any) -> None:
    """Run ``start()`` (which creates a run) once per drawn form. A second click on the same
    button (a double click, or a click while the first is still starting) is ignored: the
    form's generation is marked as used before the run is created, and a new generation of
    the form (fresh keys) is drawn after it. The message with the new run's link is shown at
    the top of the page, above the tables."""
    generation = st.session_state.get(f"{form}_generation", 0)
    used = f"{form}_started"
    if st.session_state.get(used) == generation:
        return
    st.session_state[used] = generation
    try:
        run = start()
    except (ConfigError, StoreError, WorkbenchError, KeyError) as exc:
        st.session_state.pop(used, None)
        st.error(f"Run not created. {exc}")
        return
    st.session_state[f"{form}_generation"] = generation + 1
    st.session_state["started_run"] = (run.id, run.name)
    st.session_state.pop("clone_of", None)
    flash(f"Run #{run.id} started: {run.name}", icon="🚀")
    st.rerun()


def started_message() -> None:
    """The run just started, with its link: at the top, on the first screen."""
    started = st.session_state.get("started_run")
    if not started:
        return
    run_id, name = started
    with st.container(border=True):
        st.success(f"Run #{run_id} started: **{name}**", icon=":material/rocket_launch:")
        st.page_link("pages/stage.py", label=f"Watch run #{run_id}",
                     icon=":material/monitoring:", query_params={"run": str(run_id)})


def new_run_form(expanded: bool) -> None:
    with st.expander("New run", expanded=expanded, icon=":material/add:"):
        recipes = wb.recipes()
        names = list(recipes)
        recipe_col, preset_col, name_col = st.columns(3)
        # r1-zero is what the README walks a new user through.
        recipe = recipe_col.selectbox("Recipe", names, key="new_recipe",
                                      index=names.index("r1-zero") if "r1-zero" in names else 0)
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
        generation = st.session_state.get("new_run_generation", 0)
        settings = config_tabs(specs, f"config_{recipe}_{preset}_{generation}")
        if st.button("Start run", type="primary", icon=":material/play_arrow:",
                     key=f"start_run_{generation}"):
            start_once("new_run", lambda: wb.create_run(
                recipe, preset, name=name.strip() or None,
                stage_configs=stage_configs(settings)))


def clone_form(run_id: int) -> None:
    """A failed or finished run's stages and configs, editable, started as a new run."""
    try:
        run = wb.get_run(run_id)
    except KeyError:
        st.session_state.pop("clone_of", None)
        return
    with st.container(border=True):
        st.markdown(f"**Clone run #{run.id} · {run.name}** ({run.recipe} · {run.preset}), "
                    f"{status_badge(run.status)}")
        failed = [s for s in run.stages if s.status in RESUMABLE_STATES and s.error]
        if failed:
            st.caption(f"It stopped in stage {failed[0].position + 1} ({failed[0].name}): "
                       f"{failed[0].error.splitlines()[0]}")
        generation = st.session_state.get("clone_run_generation", 0)
        name = st.text_input("Name (optional)", key=f"clone_name_{run.id}_{generation}",
                             placeholder=f"{run.name} (clone of #{run.id})")
        settings = config_tabs(run.stages, f"clone_config_{run.id}_{generation}")
        start_col, cancel_col, _ = st.columns([1, 1, 3])
        submitted = start_col.button("Start clone", type="primary",
                                     icon=":material/play_arrow:",
                                     key=f"start_clone_{run.id}_{generation}")
        cancelled = cancel_col.button("Cancel", key=f"cancel_clone_{run.id}_{generation}")
        if cancelled:
            st.session_state.pop("clone_of", None)
            st.rerun()
        if submitted:
            start_once("clone_run", lambda: wb.clone_run(
                run.id, name=name.strip() or None, stage_configs=stage_configs(settings)))


started_message()
runs_table()
if st.session_state.get("clone_of") is not None:
    clone_form(st.session_state["clone_of"])
new_run_form(expanded=not wb.list_runs())
