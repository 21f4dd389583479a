"""One stage's settings in the run forms (Runs: new run, clone). Not a page itself (only files
listed in ``app.py``'s ``st.navigation`` are).

A setting whose dataclass field declares ``choices`` (``generation_backend``: hf | vllm, the
launcher...) is a select box; the rest are rows of an editable table, sent to the backend as
text (it validates and coerces them). Next to a choice the form shows at once what would make
the stage fail later: a generation backend that cannot run here (vLLM not installed, a head
size vLLM rejects: ``Workbench.generation_backend_problem``). For a stage that has a
``launcher``, the process count and machine count appear only with ``launcher=accelerate``,
and the command the stage will be started with is shown as it will run.

No ``st.form`` around these widgets: what a choice shows or hides, and the reason a choice
cannot run, must follow the choice at once, not after a submit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd
import streamlit as st

from backend.api import ConfigError
from pages.common import CONFIG_COLUMNS, config_frame, edited_config, workbench

# Settings that only mean something with another setting's value: drawn only then (their
# stored value is kept meanwhile). With launcher=local the stage runs as one plain process.
ONLY_WITH: dict[str, tuple[str, str]] = {
    "num_processes": ("launcher", "accelerate"),
    "num_machines": ("launcher", "accelerate"),
    "accelerate_config": ("launcher", "accelerate"),
}
# Whole-number settings drawn as number inputs beside the select boxes (the launch group).
NUMBER_INPUTS = ("num_processes", "num_machines")
# Choices a user may extend with a value of their own: an accelerate config file's path.
OPEN_CHOICES = ("accelerate_config",)


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
                   stage_label: str) -> StageSettings:
    """Draw one stage's settings into ``container`` (a tab); widget keys start with ``key``."""
    wb = workbench()
    help_text = wb.config_help(kind)
    choices = {name: options for name, options in wb.config_choices(kind).items()
               if name in config}
    numbers = [name for name in NUMBER_INPUTS if name in config]
    widgets = [name for name in config if name in choices or name in numbers]

    chosen: dict[str, Any] = {name: config[name] for name in widgets}
    notes: dict[str, Any] = {}
    shown = [name for name in widgets if name in choices and name not in ONLY_WITH]
    if shown:
        for column, name in zip(container.columns(max(3, len(shown))), shown):
            chosen[name] = choice_box(column, name, choices[name], config[name],
                                      help_text.get(name, ""), f"{key}_{name}")
            notes[name] = column.empty()
    # The launch group: the dependent settings, then the command they give.
    dependent = [name for name in widgets if name in ONLY_WITH
                 and chosen.get(ONLY_WITH[name][0]) == ONLY_WITH[name][1]]
    if dependent:
        for column, name in zip(container.columns(max(3, len(dependent))), dependent):
            if name in numbers:
                chosen[name] = column.number_input(
                    name, min_value=1, step=1, value=max(1, int(config[name] or 1)),
                    help=help_text.get(name, ""), key=f"{key}_{name}")
            else:
                chosen[name] = choice_box(column, name, choices[name], config[name],
                                          help_text.get(name, ""), f"{key}_{name}")
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
    if "generation_backend" in chosen:
        problem = wb.generation_backend_problem(chosen["generation_backend"],
                                                str(table.get("model_path") or ""))
        if problem:
            settings.problems.append(f"{stage_label}: {problem}")
            notes.get("generation_backend", container).error(problem, icon="⚠️")
    if command_slot is not None:
        show_command(command_slot, wb, kind, {**table, **chosen})
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


def show_command(slot: Any, wb: Any, kind: str, config: dict[str, Any]) -> None:
    """The command line the stage's worker will be started with, as the launcher builds it
    (``Workbench.launch_command``); the reason instead when these settings cannot build one."""
    builder = getattr(wb, "launch_command", None)
    if builder is None:
        return
    try:
        command = builder(kind, config)
    except (ConfigError, ValueError) as exc:
        slot.error(f"No launch command: {exc}", icon="⚠️")
        return
    with slot.container():
        st.caption("The stage starts with this command (on a multi-node setup: node 0's; "
                   "see docs/scaling.md):")
        st.code(command, language="bash", wrap_lines=True)
