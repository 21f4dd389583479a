"""One stage's settings in the run forms (Runs: new run, clone). Not a page itself (only files
listed in ``app.py``'s ``st.navigation`` are).

A setting whose dataclass field declares ``choices`` (``generation_backend``: hf | vllm, the
launcher...) is a select box; the rest are rows of an editable table, sent to the backend as
text (it validates and coerces them). Next to a choice the form shows at once what would make
the stage fail later: a generation backend that cannot run here (vLLM not installed, a head
size vLLM rejects: ``Workbench.generation_backend_problem``). For a stage that has a
``launcher``, the process count and machine count appear only with ``launcher=accelerate``,
and the command the stage will be started with is shown as it will run (on the Stage page,
``launch_panel``: each machine's line with the stage's id).

No ``st.form`` around these widgets: what a choice shows or hides, and the reason a choice
cannot run, must follow the choice at once, not after a submit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import streamlit as st

from backend.api import ConfigError
from pages.common import (ACTIVE_STATES, CONFIG_COLUMNS, QUEUED, config_frame, edited_config,
                          workbench)

def _accelerate(chosen: dict[str, Any]) -> bool:
    return chosen.get("launcher") == "accelerate"


def _machines(chosen: dict[str, Any]) -> bool:
    return _accelerate(chosen) and _int(chosen.get("num_machines")) > 1


# Settings that only mean something with other settings' values: drawn only then (their
# stored value is kept meanwhile). launcher=local runs the stage as one plain process; the
# rendezvous address matters only when several machines take part.
SHOWN_WHEN: dict[str, Any] = {
    "accelerate_config": _accelerate, "num_processes": _accelerate, "num_machines": _accelerate,
    "main_process_ip": _machines, "main_process_port": _machines,
}
# The launch group's rows (a stage config with LaunchConfig's fields), drawn after the
# stage's other choices; and how many widgets one row holds.
LAUNCH_ROWS = (("launcher", "accelerate_config", "num_processes", "num_machines"),
               ("main_process_ip", "main_process_port"))
ROW_WIDTH = 4
# Whole-number settings of the launch group, drawn as number inputs.
NUMBER_INPUTS = {"num_processes": 1, "num_machines": 1, "main_process_port": 1}  # -> least value
# Text settings of the launch group, drawn as text inputs.
TEXT_INPUTS = ("main_process_ip",)
# Choices a user may extend with a value of their own: an accelerate config file's path.
OPEN_CHOICES = ("accelerate_config",)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


@dataclass
class StageSettings:
    """What a user set for one stage: the select boxes' and number inputs' values, and the
    table of the other settings as edited."""

    defaults: dict[str, Any]  # the stage's config as the form was drawn with it
    table_defaults: dict[str, Any]  # the settings in the table
    edited: pd.DataFrame
    chosen: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # why the stage would fail as chosen

    def config(self) -> dict[str, Any]:
        """The whole stage config, in the stage's own order (raises ConfigError on a table
        value that cannot be read, e.g. bad JSON)."""
        values = {**edited_config(self.table_defaults, self.edited), **self.chosen}
        return {key: values[key] for key in self.defaults}


def stage_settings(container: Any, kind: str, config: dict[str, Any], key: str,
                   stage_label: str, stage_id: Optional[int] = None) -> StageSettings:
    """Draw one stage's settings into ``container`` (a tab); widget keys start with ``key``.
    ``stage_id``: the stage's, when it exists already (a re-run): its commands show it."""
    wb = workbench()
    help_text = wb.config_help(kind)
    choices = {name: options for name, options in wb.config_choices(kind).items()
               if name in config}
    widgets = [name for name in config
               if name in choices or name in NUMBER_INPUTS or name in TEXT_INPUTS]
    chosen: dict[str, Any] = {name: config[name] for name in widgets}
    notes: dict[str, Any] = {}

    def draw(column: Any, name: str) -> None:
        """One widget in ``column``, with a slot under it for a reason."""
        widget_key, help_ = f"{key}_{name}", help_text.get(name) or None
        if name in choices:
            chosen[name] = choice_box(column, name, choices[name], config[name], help_,
                                      widget_key)
        elif name in NUMBER_INPUTS:
            chosen[name] = column.number_input(
                name, min_value=NUMBER_INPUTS[name], step=1, help=help_, key=widget_key,
                value=max(NUMBER_INPUTS[name], _int(config[name])))
        else:
            chosen[name] = column.text_input(name, value=str(config[name] or ""), help=help_,
                                             key=widget_key).strip()
        notes[name] = column.empty()

    # The stage's choices in its own order, ROW_WIDTH to a row; then the launch group, each
    # row's later widgets drawn only when what they depend on (drawn first) says so.
    launch = [name for row in LAUNCH_ROWS for name in row]
    plain = [name for name in widgets if name not in launch]
    for start in range(0, len(plain), ROW_WIDTH):
        for column, name in zip(container.columns(ROW_WIDTH), plain[start:start + ROW_WIDTH]):
            draw(column, name)
    for row in LAUNCH_ROWS:
        columns = iter(container.columns(ROW_WIDTH))
        for name in row:
            if name in widgets and (name not in SHOWN_WHEN or SHOWN_WHEN[name](chosen)):
                draw(next(columns), name)
    command_slot = container.empty() if "launcher" in config else None

    table_defaults = {k: v for k, v in config.items() if k not in widgets}
    frame = config_frame(table_defaults, help_text)
    edited = container.data_editor(frame, key=key, hide_index=True,
                                   disabled=["setting", "help"], column_config=CONFIG_COLUMNS,
                                   height=(len(frame) + 1) * 35 + 3)
    settings = StageSettings(config, table_defaults, edited, chosen)

    try:
        table = edited_config(table_defaults, edited)
    except ConfigError:
        table = table_defaults  # the bad value is reported when the run is started
    for name in chosen:
        # generation_backend generates with model_path's model, judge_generation_backend
        # with judge_model_path's...
        if not name.endswith("generation_backend"):
            continue
        model_path = table.get(name.removesuffix("generation_backend") + "model_path")
        problem = wb.generation_backend_problem(chosen[name], str(model_path or ""))
        if problem:
            settings.problems.append(f"{stage_label}: {name}: {problem}")
            notes[name].error(problem, icon="⚠️")
    if command_slot is not None:
        problem = show_command(command_slot, wb, kind, {**table, **chosen}, stage_id)
        if problem:
            settings.problems.append(f"{stage_label}: {problem}")
    return settings


def choice_box(container: Any, name: str, options: list[str], value: Any, help_: str,
               key: str) -> Optional[str]:
    """A select box over a setting's declared choices, opened on its value (a value outside
    them, e.g. a config file's path, is offered too)."""
    options = list(options)
    if value not in options and value not in (None, ""):
        options.append(str(value))
    return container.selectbox(name, options, index=options.index(value) if value in options
                               else 0, help=help_ or None, key=key,
                               accept_new_options=name in OPEN_CHOICES)


def show_command(slot: Any, wb: Any, kind: str, config: dict[str, Any],
                 stage_id: Optional[int] = None) -> Optional[str]:
    """The command line(s) the stage's worker(s) will be started with, as the runner builds
    them (``Workbench.launch_commands``); the reason instead, returned as well, when the
    launch settings cannot work here (a DeepSpeed config on a machine without GPUs, several
    machines on a SQLite store...)."""
    try:
        lines = wb.launch_commands(kind, config, stage_id)
    except (ConfigError, ValueError) as exc:
        slot.error(f"These launch settings cannot start here: {exc}", icon="⚠️")
        return str(exc)
    with slot.container():
        if len(lines) == 1:
            notes = ([] if stage_id is not None else
                     ["STAGE_ID: the stage's id once the run is created"]) + (
                ["FREE_PORT: a port free at launch"] if "FREE_PORT" in lines[0] else [])
            st.caption("The stage's worker starts with" + (f" ({'; '.join(notes)})"
                                                           if notes else "") + ":")
        else:
            st.caption("Machine 0 (this one: the runner starts it) runs the first line; each "
                       "other machine runs its own line there, once the stage is launching, "
                       "from a checkout at the same path with the same R1WB_DB_URL and "
                       "R1WB_HOME (docs/scaling.md)." + (
                           "" if stage_id is not None else
                           " STAGE_ID: the stage's id once the run is created."))
        st.code("\n\n".join(lines if len(lines) == 1 else
                             [f"# machine {k}\n{line}" for k, line in enumerate(lines)]),
                language="bash", wrap_lines=True)
    return None


def launch_panel(stage: Any) -> None:
    """Stage page: the command lines of a stage launched over many processes, with its id
    filled in, so that each other machine's line can be copied from here (the run's events
    hold them as well, with the port the runner picked on one machine)."""
    config = stage.config or {}
    if config.get("launcher") != "accelerate":
        return
    machines = _int(config.get("num_machines")) or 1
    with st.expander(f"Launch: {config.get('num_processes')} processes on {machines} "
                     f"machine(s)", icon=":material/lan:",
                     expanded=machines > 1 and stage.status in (QUEUED, *ACTIVE_STATES)):
        try:
            lines = workbench().launch_commands(stage.kind, config, stage_id=stage.id,
                                                check=False)
        except (ConfigError, ValueError) as exc:
            st.caption(f"The command cannot be rebuilt on this machine: {exc}")
            return
        if machines > 1:
            st.caption("The runner runs machine 0's line; run each other machine's line there, "
                       "from a checkout at the same path with the same R1WB_DB_URL and "
                       "R1WB_HOME (docs/scaling.md). After a resume, run them again.")
        else:
            st.caption("FREE_PORT: the port the runner picked at launch (Recent events).")
        st.code("\n\n".join(f"# machine {k}\n{line}" for k, line in enumerate(lines)),
                language="bash", wrap_lines=True)
