"""Group inspector: every GRPO group of one step, down to each completion. Answers "why is my
reward 0": the reward of each function, the total, TRL's advantage, the length, the parsed
answer against the reference, the `<think>` and `<answer>` parts highlighted, and flags for
groups without learning signal (all rewards equal), truncated completions, completions with no
answer to compare and wrong answers that still got a positive advantage. Filters, sorting,
search, paging; "follow live" jumps to the newest step as it arrives; one prompt can be
followed across the steps it appeared in. The verdicts come from backend.analysis (through
``Workbench.analyse_groups``), the same the CLI prints.

Opens on ``?run=&stage=``, else the newest run with a running GRPO stage."""
from __future__ import annotations

import html
import re
from typing import Any, Optional

import pandas as pd
import streamlit as st

from backend.analysis import FLAGS, NO_REFERENCE, OUTCOMES
from backend.rewards.extract import FORMAT_TAGS
from pages.common import (ACTIVE_STATES, CHART_SECONDS, QUEUED, pick_stage_of_kind,
                          query_int, run_end_toasts, tiles_html, workbench)

wb = workbench()

st.title("Group inspector")

PAGE_SIZE = 10
HISTORY_SHOWN = 10
ALL = "All"
SORTS = ["Group order", "Highest reward spread", "Lowest mean reward", "Highest mean reward"]
# While following a running stage: how often to jump to the newest step. Every jump redraws
# the histogram and the shown groups (CPU in the browser, taken from a training that shares
# the machine), and a person reads a step's groups for longer than that anyway.
LIVE_POLL_SECONDS = CHART_SECONDS

CSS = """<style>
.wb-group{font-size:0.88rem}
.wb-meta{margin:0 0 .4rem 0;line-height:1.9}
.wb-meta code{font-size:.85rem}
.wb-flag{display:inline-block;padding:0 .45rem;margin-right:.35rem;border-radius:.5rem;
  font-size:.78rem;background:#fff4e5;color:#8a4b00;border:1px solid #f5c26b}
.wb-flag.bad{background:#fdecea;color:#9b1c1c;border-color:#f1a9a0}
.wb-flag.info{background:#eef2f7;color:#3b4a5a;border-color:#c9d3df}
table.wb-ro{border-collapse:collapse;width:100%;table-layout:auto}
table.wb-ro th{font-size:.75rem;color:#555;text-align:left;padding:2px 6px;
  border-bottom:1px solid #ddd;white-space:nowrap}
table.wb-ro td{padding:3px 6px;vertical-align:top;border-bottom:1px solid #eee;
  white-space:nowrap;font-variant-numeric:tabular-nums}
table.wb-ro td.wb-text{white-space:normal;word-break:break-word;font-family:monospace;
  font-size:.82rem;width:60%}
.wb-think{background:#e7f0fd;color:#1d3f73;border-radius:3px}
.wb-answer{background:#fff1b8;color:#5c4400;font-weight:600;border-radius:3px}
.wb-tag{color:#8a8a8a;font-size:.75rem}
.wb-empty{color:#999;font-style:italic}
.wb-ok{color:#1a7f37;font-weight:600}.wb-no{color:#b42318;font-weight:600}
</style>"""


# -- data ------------------------------------------------------------------------------------
# What counts as correct, unparseable, zero spread or "wrong but rewarded" is decided in
# backend.analysis (the accuracy reward's own verdict), served by Workbench.analyse_groups.
@st.cache_resource(ttl=30, max_entries=32, show_spinner=False)
def step_analysis(db_url: str, stage_id: int, step: int) -> Any:
    # A step's groups are written in one transaction and never change afterwards (a resumed
    # stage replays steps after its checkpoint, hence the short ttl). Shared, not copied:
    # the page only reads it.
    return wb.analyse_groups(stage_id, step)


@st.cache_data(max_entries=16, show_spinner=False)
def recorded_steps(db_url: str, stage_id: int, newest: Optional[int]) -> list[int]:
    """Steps with recorded groups; ``newest`` (from the stage's version) keys the cache."""
    return wb.group_steps(stage_id)


def outcome_label(outcome: str) -> str:
    return outcome.capitalize()


def matches(v: Any, needle: str) -> bool:
    return (needle in v.group.prompt.lower()
            or needle in (v.group.reference or "").lower()
            or any(needle in r.completion.lower() for r in v.rollouts))


def select(views: list[Any], outcome: str, flags: list[str], search: str,
           sort: str) -> list[Any]:
    shown = [v for v in views if outcome == ALL or outcome_label(v.outcome) == outcome]
    if flags:
        shown = [v for v in shown if set(flags) & v.flags()]
    needle = search.strip().lower()
    if needle:
        shown = [v for v in shown if matches(v, needle)]
    if sort == "Highest reward spread":
        shown.sort(key=lambda v: (-v.spread, v.group.group_index))
    elif sort == "Lowest mean reward":
        shown.sort(key=lambda v: (v.group.reward_mean, v.group.group_index))
    elif sort == "Highest mean reward":
        shown.sort(key=lambda v: (-v.group.reward_mean, v.group.group_index))
    return shown


# -- rendering -------------------------------------------------------------------------------
_TAGS = re.compile("(" + "|".join(re.escape(tag) for tag in FORMAT_TAGS) + ")")


def _text(part: str) -> str:
    return html.escape(part).replace("$", "&#36;").replace("\n", "<br>")


def render_completion(text: str) -> str:
    """HTML of a completion: the ``<think>`` part and the ``<answer>`` part highlighted, the
    tags themselves dimmed; every piece of model text escaped."""
    if not text:
        return '<span class="wb-empty">(empty)</span>'
    out, mode = [], None
    for part in _TAGS.split(text):
        if not part:
            continue
        if _TAGS.fullmatch(part):
            out.append(f'<span class="wb-tag">{html.escape(part)}</span>')
            name = part.strip("</>")
            mode = None if part.startswith("</") else name
            continue
        out.append(f'<span class="wb-{mode}">{_text(part)}</span>' if mode else _text(part))
    return "".join(out)


def short_prompt(prompt: str, width: int = 70) -> str:
    """The question of a prompt (the part after the R1 template's last ``User:``), one line."""
    text = prompt.rsplit("User:", 1)[-1] if "User:" in prompt else prompt
    text = text.removesuffix("Assistant:").strip().rstrip(".").strip()
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def row_style(advantage: float, scale: float) -> str:
    if abs(advantage) < 1e-6:
        return "background:#f3f3f3;border-left:4px solid #bbb"
    alpha = 0.10 + 0.40 * min(1.0, abs(advantage) / scale)
    if advantage > 0:
        return f"background:rgba(46,160,67,{alpha:.2f});border-left:4px solid #2ea043"
    return f"background:rgba(218,54,51,{alpha:.2f});border-left:4px solid #da3633"


def _reward_cell(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:g}" if value == int(value) else f"{value:.2f}"


def reward_names(views: list[Any]) -> list[str]:
    names: list[str] = []
    for v in views:
        for r in v.rollouts:
            names.extend(n for n in r.rewards if n not in names)
    return names


def _describe(name: str) -> str:
    try:
        return wb.describe_reward(name)
    except KeyError:
        return name


def group_flags_html(v: Any) -> str:
    g = len(v.rollouts)
    chips = [f'<span class="wb-flag info">{v.n_correct}/{g} correct</span>']
    if v.zero_spread:
        chips.append('<span class="wb-flag">⚖ zero-variance group: all rewards equal: '
                     'no learning signal</span>')
    if v.n_truncated:
        chips.append(f'<span class="wb-flag">✂ {v.n_truncated} truncated: hit '
                     f'max_completion_length</span>')
    if v.n_unparseable:
        chips.append(f'<span class="wb-flag bad">∅ {v.n_unparseable} unparseable: no '
                     f'&lt;answer&gt; tag / nothing to compare</span>')
    if v.n_wrong_rewarded:
        chips.append(f'<span class="wb-flag bad">⚠ {v.n_wrong_rewarded} wrong answer(s) with a '
                     f'positive advantage: another reward (format?) paid for them</span>')
    return "".join(chips)


def group_html(v: Any, names: list[str], css: str = "wb-group") -> str:
    """One group: prompt, reference, flags and its completions sorted by advantage."""
    g = v.group
    head = (f'<div class="wb-meta">prompt <code>{_text(g.prompt)}</code> · reference '
            f'<code>{_text(g.reference) if g.reference is not None else "–"}</code> · reward '
            f'{g.reward_mean:.3f} ± {g.reward_std:.3f}<br>{group_flags_html(v)}</div>')
    cols = "".join(f'<th title="{html.escape(_describe(n))}">{html.escape(n)}</th>'
                   for n in names)
    rows = []
    order = sorted(range(len(v.rollouts)),
                   key=lambda i: (-v.rollouts[i].advantage, v.rollouts[i].sample_index))
    scale = max([abs(r.advantage) for r in v.rollouts] + [1.0])
    for i in order:
        r, verdict = v.rollouts[i], v.verdicts[i]
        flags = []
        if r.truncated:
            flags.append('<span class="wb-flag" title="hit max_completion_length">✂ '
                         'truncated</span>')
        if verdict.unparseable:
            flags.append('<span class="wb-flag bad" title="no &lt;answer&gt; tag / nothing '
                         'to compare">∅ no answer</span>')
        if verdict.wrong_but_rewarded:
            flags.append('<span class="wb-flag bad" title="a wrong answer pushed up: another '
                         'reward paid more than accuracy took away">⚠ wrong, rewarded</span>')
        shown = ('<span class="wb-empty">∅</span>' if verdict.answer is None
                 else f"<code>{_text(verdict.answer)}</code>")
        mark = ('<span class="wb-empty">?</span>' if verdict.correct is None
                else '<span class="wb-ok">✓</span>' if verdict.correct
                else '<span class="wb-no">✗</span>')
        cells = "".join(f"<td>{_reward_cell(r.rewards.get(n))}</td>" for n in names)
        rows.append(
            f'<tr style="{row_style(r.advantage, scale)}" data-sample="{r.sample_index}">'
            f"<td>{r.sample_index}</td>"
            f'<td class="wb-adv">{r.advantage:+.3f}</td><td><b>{r.reward:.2f}</b></td>{cells}'
            f"<td>{r.length}</td><td>{mark} {shown}</td><td>{''.join(flags)}</td>"
            f'<td class="wb-text">{render_completion(r.completion)}</td></tr>')
    table = (f'<table class="wb-ro"><tr><th>#</th><th title="TRL advantage: the reward minus '
             f'the group mean, over the group std">advantage</th>'
             f'<th title="weighted total">total</th>{cols}<th title="tokens">len</th>'
             f"<th>answer</th><th>flags</th><th>completion</th></tr>{''.join(rows)}</table>")
    return f'<div class="{css}">{head}{table}</div>'


def group_label(v: Any) -> str:
    g = v.group
    prompt = short_prompt(g.prompt).replace("`", "'")
    ref = (g.reference or "–").replace("`", "'")
    icons = []
    if v.zero_spread:
        icons.append("⚖ zero variance")
    if v.n_truncated:
        icons.append(f"✂ {v.n_truncated}")
    if v.n_unparseable:
        icons.append(f"∅ {v.n_unparseable}")
    if v.n_wrong_rewarded:
        icons.append(f"⚠ {v.n_wrong_rewarded} wrong, rewarded")
    return (f"**#{g.group_index}** `{prompt}` → `{ref[:30]}` · mean {g.reward_mean:.2f} "
            f"± {g.reward_std:.2f} · {v.n_correct}/{len(v.rollouts)} correct"
            + (" · " + " · ".join(icons) if icons else ""))


def advantage_histogram(views: list[Any]) -> dict:
    """The step's advantages, stacked by sign, as a plain Plotly spec."""
    advantages = [r.advantage for v in views for r in v.rollouts]
    lo, hi = min(advantages + [-1.0]), max(advantages + [1.0])
    size = max((hi - lo) / 40, 0.02)
    bins = {"start": lo - size / 2, "end": hi + size / 2, "size": size}
    data = []
    for name, pick, color in (
            ("negative", lambda a: a < -1e-6, "#da3633"),
            ("zero", lambda a: abs(a) <= 1e-6, "#9e9e9e"),
            ("positive", lambda a: a > 1e-6, "#2ea043")):
        xs = [a for a in advantages if pick(a)]
        if xs:
            data.append({"type": "histogram", "x": xs, "xbins": bins,
                         "name": f"{name} ({len(xs)})", "marker": {"color": color}})
    grid = "rgba(128,128,128,0.25)"
    return {"data": data, "layout": {
        "template": "none", "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"color": "#808080", "size": 11},
        "title": {"text": "Advantages of the step (TRL's)", "font": {"size": 14}},
        "barmode": "stack", "height": 260, "margin": {"l": 40, "r": 10, "t": 40, "b": 30},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right",
                   "x": 1},
        "xaxis": {"gridcolor": grid, "zerolinecolor": grid},
        "yaxis": {"title": {"text": "completions"}, "gridcolor": grid, "zerolinecolor": grid},
        "bargap": 0.05}}


def summary(analysis: Any) -> None:
    views = analysis.groups
    rollouts = [r for v in views for r in v.rollouts]
    st.markdown(tiles_html([
        ("Groups", len(views), f"{analysis.n_rollouts} completions at step {analysis.step}"),
        ("Mean reward", f"{analysis.mean_reward:.3f}",
         "Weighted total reward, mean over the step's completions"),
        ("Correct", f"{analysis.correct_share:.0%}",
         "Completions the accuracy reward judges right (its recorded score above 0.5; "
         "computed now when the stage did not use it)"),
        ("Zero-variance groups", f"{analysis.zero_spread_share:.0%}",
         "All completions of the group got the same reward: every advantage is 0 and the "
         "group teaches nothing"),
        ("Truncated", f"{analysis.truncated_share:.0%}",
         "Completions that hit max_completion_length without ending"),
        ("No answer", f"{analysis.unparseable_share:.0%}",
         "Completions with no <answer> tag (or \\boxed{}): nothing to compare"),
        ("Wrong, rewarded", analysis.n_wrong_rewarded,
         "Wrong answers that still got a positive advantage: another reward (usually format) "
         "paid more than accuracy took away"),
    ]), unsafe_allow_html=True)
    st.caption("An advantage is how much better a completion scored than its group's average, "
               "in units of the group's spread (TRL's (r - mean) / std): positive ones are made "
               "more likely, negative ones less.")
    hist_col, fn_col = st.columns([2, 1])
    hist_col.plotly_chart(advantage_histogram(views), key="advantage_histogram", theme=None,
                          config={"displayModeBar": False})
    lines = ["**Reward per function** (mean over the step)", ""]
    for name in reward_names(views):
        mean = _mean([r.rewards.get(name) for r in rollouts])
        lines.append(f"- **{name}** {'–' if mean is None else f'{mean:.3f}'}: "
                     f"{_describe(name).replace('<', '&lt;')}")
    fn_col.markdown("\n".join(lines))


def _mean(values: list[Optional[float]]) -> Optional[float]:
    xs = [x for x in values if x is not None]
    return sum(xs) / len(xs) if xs else None


def follow(stage_id: int, prompt: str) -> None:
    st.session_state["followed_prompt"] = prompt
    st.session_state[f"history_prompt_{stage_id}"] = prompt
    st.session_state["gi_scroll_to_history"] = True


HISTORY_ANCHOR = "prompt-history"
# Scrolls the page to the history (drawn at the bottom, below every group) after a click on
# "Follow": the component's frame is same-origin, so it can reach the page's document.
SCROLL_JS = ("<script>const el = window.parent.document.getElementById('%s');"
             "if (el) el.scrollIntoView({behavior: 'smooth', block: 'start'});</script>"
             % HISTORY_ANCHOR)


def prompt_history(stage_id: int, prompts: list[str]) -> None:
    st.subheader("Follow this prompt across steps", anchor=HISTORY_ANCHOR)
    if st.session_state.pop("gi_scroll_to_history", False):
        import streamlit.components.v1 as components
        components.html(SCROLL_JS, height=0)
    followed = st.session_state.get("followed_prompt")
    options = list(dict.fromkeys(([followed] if followed else []) + prompts))
    if not options:
        return
    key = f"history_prompt_{stage_id}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = followed if followed in options else options[0]
    prompt = st.selectbox("Prompt", options, key=key, format_func=short_prompt,
                          help="Prompts of this step; 'Follow' on a group picks its prompt.")
    history = wb.analyse_prompt_history(stage_id, prompt)
    if not history:
        st.caption("This prompt has no recorded groups.")
        return
    frame = pd.DataFrame([{
        "step": v.group.step,
        "mean reward": v.group.reward_mean,
        "std": v.group.reward_std,
        "correct": v.n_correct / len(v.rollouts) if v.rollouts else None,
        "mean length": _mean([r.length for r in v.rollouts]),
        "truncated": v.n_truncated,
        "no answer": v.n_unparseable,
    } for v in history])
    st.caption(f"Seen at {len(history)} step(s): "
               + ", ".join(str(s) for s in frame["step"][:40])
               + (" …" if len(frame) > 40 else ""))
    # The table gets the page's width (in half of it, its last column was cut off), the
    # chart goes below it.
    table_col = plot_col = st.container()
    table_col.dataframe(frame, hide_index=True, width="stretch", column_config={
        "mean reward": st.column_config.NumberColumn(format="%.3f"),
        "std": st.column_config.NumberColumn(format="%.3f"),
        "correct": st.column_config.NumberColumn(format="percent"),
        "mean length": st.column_config.NumberColumn(format="%.1f"),
    })
    if len(frame) > 1:
        steps = frame["step"].tolist()
        plot_col.plotly_chart({"data": [
            {"type": "scatter", "x": steps, "y": frame["mean reward"].tolist(),
             "name": "mean reward", "mode": "lines+markers"},
            {"type": "scatter", "x": steps, "y": frame["mean length"].tolist(),
             "name": "mean length (right)", "mode": "lines+markers", "yaxis": "y2",
             "line": {"dash": "dot"}}],
            "layout": {"height": 260, "margin": {"l": 40, "r": 50, "t": 30, "b": 30},
                       "yaxis2": {"overlaying": "y", "side": "right", "showgrid": False},
                       "legend": {"orientation": "h", "y": 1.1}}},
            key="prompt_history_chart", config={"displayModeBar": False})
    names = reward_names(history)
    for v in list(reversed(history))[:HISTORY_SHOWN]:
        with st.expander(f"Step {v.group.step} · " + group_label(v)):
            st.markdown(group_html(v, names, "wb-group wb-history"), unsafe_allow_html=True)
    if len(history) > HISTORY_SHOWN:
        st.caption(f"The newest {HISTORY_SHOWN} of {len(history)} steps are shown.")


DOWNLOAD_MIME = {"jsonl": "application/jsonl", "parquet": "application/octet-stream",
                 "csv": "text/csv"}


@st.cache_data(max_entries=8, show_spinner=False)
def step_file(db_url: str, stage_id: int, step: int, fmt: str) -> bytes:
    """One step's groups (a row per completion, as ``export-rollouts`` writes them)."""
    run_id = wb.get_stage(stage_id).run_id
    return wb.export_bytes(wb.rollout_rows(run_id, stage_id, step), fmt)


def step_download(stage_id: int, step: int) -> None:
    fmt_col, button_col, _ = st.columns([2, 2, 3])
    fmt = fmt_col.segmented_control("Download format", list(DOWNLOAD_MIME), default="jsonl",
                                    key=f"gi_download_format_{stage_id}",
                                    label_visibility="collapsed") or "jsonl"
    button_col.download_button(
        f"Download step {step} ({fmt})", step_file(wb.db_url, stage_id, step, fmt),
        file_name=f"stage{stage_id}_step{step}_groups.{fmt}", mime=DOWNLOAD_MIME[fmt],
        key=f"gi_download_{stage_id}", icon=":material/download:",
        help="Every completion of this step's groups with its prompt, rewards and advantage: "
             "the same rows as the CLI's rollout export.")


def inspector(stage_id: int, follow_live: bool) -> None:
    """The groups of one step. Following live, it runs every LIVE_POLL_SECONDS as a fragment
    and redraws only when a newer step was recorded."""
    newest = wb.stage_version(stage_id).group_step
    if newest is None:
        st.info("No groups recorded yet: they appear after the first step (unless the stage "
                "runs with record_groups = false).")
        return
    if follow_live:
        step = newest
        st.caption(f"Following live: step {step}, the newest recorded.")
        st.query_params.pop("step", None)
    else:
        steps = recorded_steps(wb.db_url, stage_id, newest)
        step_key = f"gi_step_{stage_id}"
        if st.session_state.get(step_key) not in steps:
            wanted = query_int("step")
            st.session_state[step_key] = wanted if wanted in steps else steps[-1]
        if len(steps) > 1:
            step = st.select_slider("Step", options=steps, key=step_key,
                                    help="Steps with recorded groups")
            st.query_params["step"] = str(step)
        else:
            step = steps[0]
            st.caption(f"Step {step} (the only one recorded so far)")
    st.session_state[f"gi_shown_step_{stage_id}"] = step

    analysis = step_analysis(wb.db_url, stage_id, step)
    views = analysis.groups
    if not views:
        st.info(f"Step {step} has no groups.")
        return
    summary(analysis)
    step_download(stage_id, step)

    st.subheader(f"Groups of step {step}")
    f1, f2 = st.columns(2)
    f3, f4 = st.columns(2)
    present = {v.outcome for v in views}
    outcomes = [ALL] + [outcome_label(o) for o in OUTCOMES
                        if o != NO_REFERENCE or o in present]
    outcome = f1.segmented_control("Outcome", outcomes, key="gi_outcome", default=ALL,
                                   help="Correct = the accuracy reward's verdict") or ALL
    flags = f2.pills("Only groups with", list(FLAGS), key="gi_flags", selection_mode="multi")
    sort = f3.selectbox("Sort", SORTS, key="gi_sort")
    search = f4.text_input("Search prompt / completions", key="gi_search",
                           placeholder="e.g. 12+7 or </answer>")
    shown = select(views, outcome, flags or [], search, sort)
    if not shown:
        st.caption(f"No group of the {len(views)} matches.")
    else:
        pages = (len(shown) + PAGE_SIZE - 1) // PAGE_SIZE
        page_key = f"gi_page_{stage_id}"
        if not 1 <= st.session_state.get(page_key, 1) <= pages:
            st.session_state[page_key] = 1
        page = 1
        if pages > 1:
            page = int(st.number_input(f"Page (of {pages})", min_value=1, max_value=pages,
                                       key=page_key, step=1))
        first = (page - 1) * PAGE_SIZE
        chunk = shown[first:first + PAGE_SIZE]
        st.caption(f"Groups {first + 1}–{first + len(chunk)} of {len(shown)} shown "
                   f"({len(views)} in this step). Rows: completions sorted by advantage; green "
                   "positive, red negative, grey zero.")
        names = reward_names(views)
        for i, v in enumerate(chunk):
            # The first group opens by itself: the answer to "why this reward" is one look away.
            with st.expander(group_label(v), expanded=i == 0 or len(chunk) <= 2):
                st.markdown(group_html(v, names), unsafe_allow_html=True)
                if st.button("Follow this prompt across steps",
                             key=f"follow_{v.group.group_index}", icon=":material/timeline:"):
                    follow(stage_id, v.group.prompt)
                    st.rerun()  # the history below is outside a live fragment
    st.session_state[f"gi_shown_prompts_{stage_id}"] = [v.group.prompt for v in views]


@st.fragment(run_every=LIVE_POLL_SECONDS)
def live_inspector(stage_id: int) -> None:
    try:
        inspector(stage_id, True)
    except KeyError:  # the run was deleted meanwhile: the page says so (run_gone)
        st.rerun(scope="app")


# -- the page --------------------------------------------------------------------------------
st.markdown(CSS, unsafe_allow_html=True)
run_end_toasts()
run, stage = pick_stage_of_kind(wb, "grpo", "GRPO stage")
active = stage.status in (QUEUED, *ACTIVE_STATES)
follow_key = f"gi_follow_{stage.id}"
if follow_key not in st.session_state:
    # Follow a stage that is still running, unless the URL names a step (?step=12).
    st.session_state[follow_key] = active and query_int("step") is None
follow_live = st.toggle("Latest (follow live)", key=follow_key,
                        help="Jump to the newest step and keep refreshing as new steps arrive.")
if follow_live and active:
    live_inspector(stage.id)
else:
    # Nothing to poll: widgets rerun the whole page, which keeps the history below in step.
    inspector(stage.id, follow_live)
st.divider()
prompt_history(stage.id, st.session_state.get(f"gi_shown_prompts_{stage.id}", []))
