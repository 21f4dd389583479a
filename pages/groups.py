"""Group inspector: every GRPO group of one step, down to each completion. Answers "why is my
reward 0": the reward of each function, the total, TRL's advantage, the length, the parsed
answer against the reference, the `<think>` and `<answer>` parts highlighted, and flags for
groups without learning signal (all rewards equal), truncated completions and completions
with no answer to compare. Filters, sorting, search, paging; "follow live" jumps to the newest
step as it arrives; one prompt can be followed across the steps it appeared in.

Opens on ``?run=&stage=``, else the newest run with a running GRPO stage."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from backend.rewards import describe_reward
from backend.rewards.extract import extract_answer
from pages.common import ACTIVE_STATES, QUEUED, pick_stage_of_kind, query_int, workbench

wb = workbench()

st.title("Group inspector")

PAGE_SIZE = 10
HISTORY_SHOWN = 10
OUTCOMES = ["All", "Mixed", "All correct", "All wrong"]
FLAGS = ["zero variance", "truncated", "no answer"]
SORTS = ["Group order", "Highest reward spread", "Lowest mean reward", "Highest mean reward"]
EPS = 1e-9

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


# -- analysis --------------------------------------------------------------------------------
def is_correct(rollout: Any) -> bool:
    """Correct = the accuracy reward is 1 when the stage scores accuracy, else reward > 0."""
    acc = rollout.rewards.get("accuracy")
    if acc is not None:
        return acc >= 1 - EPS
    return rollout.reward > 0


@dataclass
class GroupView:
    group: Any
    correct: list[bool]
    answers: list[Optional[str]]

    @property
    def rollouts(self) -> list[Any]:
        return self.group.rollouts

    @property
    def zero_variance(self) -> bool:
        rewards = [r.reward for r in self.rollouts]
        return not rewards or max(rewards) - min(rewards) < EPS

    @property
    def n_truncated(self) -> int:
        return sum(r.truncated for r in self.rollouts)

    @property
    def n_unparseable(self) -> int:
        return sum(a is None for a in self.answers)

    @property
    def spread(self) -> float:
        rewards = [r.reward for r in self.rollouts]
        return max(rewards) - min(rewards) if rewards else 0.0

    @property
    def outcome(self) -> str:
        if self.correct and all(self.correct):
            return "All correct"
        if not any(self.correct):
            return "All wrong"
        return "Mixed"

    def flags(self) -> set[str]:
        out = set()
        if self.zero_variance:
            out.add("zero variance")
        if self.n_truncated:
            out.add("truncated")
        if self.n_unparseable:
            out.add("no answer")
        return out

    def matches(self, needle: str) -> bool:
        return (needle in self.group.prompt.lower()
                or needle in (self.group.reference or "").lower()
                or any(needle in r.completion.lower() for r in self.rollouts))


def view(group: Any) -> GroupView:
    return GroupView(group, [is_correct(r) for r in group.rollouts],
                     [extract_answer(r.completion) for r in group.rollouts])


@st.cache_data(ttl=30, max_entries=64, show_spinner=False)
def step_groups(db_url: str, stage_id: int, step: int) -> list[Any]:
    # A step's groups are written in one transaction and never change afterwards (a resumed
    # stage replays steps after its checkpoint, hence the short ttl).
    return wb.step_groups(stage_id, step)


def select(views: list[GroupView], outcome: str, flags: list[str], search: str,
           sort: str) -> list[GroupView]:
    shown = [v for v in views if outcome == "All" or v.outcome == outcome]
    if flags:
        shown = [v for v in shown if set(flags) & v.flags()]
    needle = search.strip().lower()
    if needle:
        shown = [v for v in shown if v.matches(needle)]
    if sort == "Highest reward spread":
        shown.sort(key=lambda v: (-v.spread, v.group.group_index))
    elif sort == "Lowest mean reward":
        shown.sort(key=lambda v: (v.group.reward_mean, v.group.group_index))
    elif sort == "Highest mean reward":
        shown.sort(key=lambda v: (-v.group.reward_mean, v.group.group_index))
    return shown


# -- rendering -------------------------------------------------------------------------------
_TAGS = re.compile(r"(</?think>|</?answer>)")


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


def reward_names(views: list[GroupView]) -> list[str]:
    names: list[str] = []
    for v in views:
        for r in v.rollouts:
            names.extend(n for n in r.rewards if n not in names)
    return names


def _describe(name: str) -> str:
    try:
        return describe_reward(name)
    except KeyError:
        return name


def group_flags_html(v: GroupView) -> str:
    g = len(v.rollouts)
    chips = [f'<span class="wb-flag info">{sum(v.correct)}/{g} correct</span>']
    if v.zero_variance:
        chips.append('<span class="wb-flag">⚖ zero-variance group: all rewards equal: '
                     'no learning signal</span>')
    if v.n_truncated:
        chips.append(f'<span class="wb-flag">✂ {v.n_truncated} truncated: hit '
                     f'max_completion_length</span>')
    if v.n_unparseable:
        chips.append(f'<span class="wb-flag bad">∅ {v.n_unparseable} unparseable: no '
                     f'&lt;answer&gt; tag / nothing to compare</span>')
    return "".join(chips)


def group_html(v: GroupView, names: list[str], css: str = "wb-group") -> str:
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
        r, answer, ok = v.rollouts[i], v.answers[i], v.correct[i]
        flags = []
        if r.truncated:
            flags.append('<span class="wb-flag" title="hit max_completion_length">✂ '
                         'truncated</span>')
        if answer is None:
            flags.append('<span class="wb-flag bad" title="no &lt;answer&gt; tag / nothing '
                         'to compare">∅ no answer</span>')
        shown = ('<span class="wb-empty">∅</span>' if answer is None
                 else f"<code>{_text(answer)}</code>")
        mark = '<span class="wb-ok">✓</span>' if ok else '<span class="wb-no">✗</span>'
        cells = "".join(f"<td>{_reward_cell(r.rewards.get(n))}</td>" for n in names)
        rows.append(
            f'<tr style="{row_style(r.advantage, scale)}" data-sample="{r.sample_index}">'
            f"<td>{r.sample_index}</td>"
            f'<td class="wb-adv">{r.advantage:+.3f}</td><td><b>{r.reward:.2f}</b></td>{cells}'
            f"<td>{r.length}</td><td>{mark} {shown}</td><td>{''.join(flags)}</td>"
            f'<td class="wb-text">{render_completion(r.completion)}</td></tr>')
    table = (f'<table class="wb-ro"><tr><th>#</th><th title="TRL advantage">advantage</th>'
             f'<th title="weighted total">total</th>{cols}<th title="tokens">len</th>'
             f"<th>answer</th><th>flags</th><th>completion</th></tr>{''.join(rows)}</table>")
    return f'<div class="{css}">{head}{table}</div>'


def group_label(v: GroupView) -> str:
    g = v.group
    prompt = short_prompt(g.prompt).replace("`", "'")
    ref = (g.reference or "–").replace("`", "'")
    icons = []
    if v.zero_variance:
        icons.append("⚖ zero variance")
    if v.n_truncated:
        icons.append(f"✂ {v.n_truncated}")
    if v.n_unparseable:
        icons.append(f"∅ {v.n_unparseable}")
    return (f"**#{g.group_index}** `{prompt}` → `{ref[:30]}` · mean {g.reward_mean:.2f} "
            f"± {g.reward_std:.2f} · {sum(v.correct)}/{len(v.rollouts)} correct"
            + (" · " + " · ".join(icons) if icons else ""))


def advantage_histogram(views: list[GroupView]) -> go.Figure:
    advantages = [r.advantage for v in views for r in v.rollouts]
    lo, hi = min(advantages + [-1.0]), max(advantages + [1.0])
    size = max((hi - lo) / 40, 0.02)
    bins = dict(start=lo - size / 2, end=hi + size / 2, size=size)
    fig = go.Figure()
    for name, pick, color in (
            ("negative", lambda a: a < -1e-6, "#da3633"),
            ("zero", lambda a: abs(a) <= 1e-6, "#9e9e9e"),
            ("positive", lambda a: a > 1e-6, "#2ea043")):
        xs = [a for a in advantages if pick(a)]
        if xs:
            fig.add_trace(go.Histogram(x=xs, xbins=bins, name=f"{name} ({len(xs)})",
                                       marker_color=color))
    fig.update_layout(
        title=dict(text="Advantages of the step (TRL's)", font=dict(size=14)),
        barmode="stack", height=260, margin=dict(l=10, r=10, t=40, b=10),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1),
        xaxis_title=None, yaxis_title="completions", bargap=0.05)
    return fig


def summary(views: list[GroupView], step: int) -> None:
    rollouts = [r for v in views for r in v.rollouts]
    n = max(1, len(rollouts))
    cols = st.columns(6)
    cols[0].metric("Groups", len(views), help=f"{len(rollouts)} completions at step {step}")
    cols[1].metric("Mean reward", f"{sum(r.reward for r in rollouts) / n:.3f}",
                   help="Weighted total reward, mean over the step's completions")
    cols[2].metric("Correct", f"{sum(sum(v.correct) for v in views) / n:.0%}",
                   help="Completions whose accuracy reward is 1 (reward > 0 without one)")
    cols[3].metric("Zero-variance groups",
                   f"{sum(v.zero_variance for v in views) / max(1, len(views)):.0%}",
                   help="All completions of the group got the same reward: every advantage is "
                        "0 and the group teaches nothing")
    cols[4].metric("Truncated", f"{sum(r.truncated for r in rollouts) / n:.0%}",
                   help="Completions that hit max_completion_length without ending")
    cols[5].metric("No answer", f"{sum(v.n_unparseable for v in views) / n:.0%}",
                   help="Completions with no <answer> tag (or \\boxed{}): nothing to compare")
    hist_col, fn_col = st.columns([2, 1])
    hist_col.plotly_chart(advantage_histogram(views), key="advantage_histogram",
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


def prompt_history(stage_id: int, prompts: list[str]) -> None:
    st.subheader("Follow this prompt across steps")
    followed = st.session_state.get("followed_prompt")
    options = list(dict.fromkeys(([followed] if followed else []) + prompts))
    if not options:
        return
    key = f"history_prompt_{stage_id}"
    if st.session_state.get(key) not in options:
        st.session_state[key] = followed if followed in options else options[0]
    prompt = st.selectbox("Prompt", options, key=key, format_func=short_prompt,
                          help="Prompts of this step; 'Follow' on a group picks its prompt.")
    history = [view(g) for g in wb.prompt_history(stage_id, prompt)]
    if not history:
        st.caption("This prompt has no recorded groups.")
        return
    frame = pd.DataFrame([{
        "step": v.group.step,
        "mean reward": v.group.reward_mean,
        "std": v.group.reward_std,
        "correct": sum(v.correct) / len(v.rollouts) if v.rollouts else None,
        "mean length": _mean([r.length for r in v.rollouts]),
        "truncated": v.n_truncated,
        "no answer": v.n_unparseable,
    } for v in history])
    st.caption(f"Seen at {len(history)} step(s): "
               + ", ".join(str(s) for s in frame["step"][:40])
               + (" …" if len(frame) > 40 else ""))
    table_col, plot_col = st.columns([1, 1])
    table_col.dataframe(frame, hide_index=True, width="stretch", column_config={
        "mean reward": st.column_config.NumberColumn(format="%.3f"),
        "std": st.column_config.NumberColumn(format="%.3f"),
        "correct": st.column_config.NumberColumn(format="percent"),
        "mean length": st.column_config.NumberColumn(format="%.1f"),
    })
    if len(frame) > 1:
        fig = go.Figure([
            go.Scatter(x=frame["step"], y=frame["mean reward"], name="mean reward",
                       mode="lines+markers"),
            go.Scatter(x=frame["step"], y=frame["mean length"], name="mean length (right)",
                       mode="lines+markers", yaxis="y2", line=dict(dash="dot"))])
        fig.update_layout(height=260, margin=dict(l=10, r=10, t=30, b=10),
                          yaxis2=dict(overlaying="y", side="right", showgrid=False),
                          legend=dict(orientation="h", y=1.1))
        plot_col.plotly_chart(fig, key="prompt_history_chart", config={"displayModeBar": False})
    names = reward_names(history)
    for v in list(reversed(history))[:HISTORY_SHOWN]:
        with st.expander(f"Step {v.group.step} · " + group_label(v)):
            st.markdown(group_html(v, names, "wb-group wb-history"), unsafe_allow_html=True)
    if len(history) > HISTORY_SHOWN:
        st.caption(f"The newest {HISTORY_SHOWN} of {len(history)} steps are shown.")


def inspector(stage_id: int, follow_live: bool) -> None:
    steps = wb.group_steps(stage_id)
    if not steps:
        st.info("No groups recorded yet: they appear after the first step (unless the stage "
                "runs with record_groups = false).")
        return
    step_key = f"gi_step_{stage_id}"
    if follow_live or st.session_state.get(step_key) not in steps:
        wanted = query_int("step")
        st.session_state[step_key] = (wanted if wanted in steps and not follow_live
                                      else steps[-1])
    if len(steps) > 1:
        step = st.select_slider("Step", options=steps, key=step_key, disabled=follow_live,
                                help="Steps with recorded groups")
        if not follow_live:
            st.query_params["step"] = str(step)
    else:
        step = steps[0]
        st.caption(f"Step {step} (the only one recorded so far)")
    if follow_live:
        st.query_params.pop("step", None)
        st.caption(f"Following live: step {step}, the newest of {len(steps)}.")

    views = [view(g) for g in step_groups(wb.db_url, stage_id, step)]
    if not views:
        st.info(f"Step {step} has no groups.")
        return
    summary(views, step)

    st.subheader(f"Groups of step {step}")
    f1, f2 = st.columns(2)
    f3, f4 = st.columns(2)
    outcome = f1.segmented_control("Outcome", OUTCOMES, key="gi_outcome", default="All",
                                   help="Correct = accuracy reward 1 (reward > 0 without an "
                                        "accuracy reward)") or "All"
    flags = f2.pills("Only groups with", FLAGS, key="gi_flags", selection_mode="multi")
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
                st.button("Follow this prompt across steps", key=f"follow_{v.group.group_index}",
                          on_click=follow, args=(stage_id, v.group.prompt), icon=":material/timeline:")
    st.divider()
    prompt_history(stage_id, [v.group.prompt for v in views])


# -- the page --------------------------------------------------------------------------------
st.markdown(CSS, unsafe_allow_html=True)
run, stage = pick_stage_of_kind(wb, "grpo", "GRPO stage")
active = stage.status in (QUEUED, *ACTIVE_STATES)
follow_key = f"gi_follow_{stage.id}"
if follow_key not in st.session_state:
    # Follow a stage that is still running, unless the URL names a step (?step=12).
    st.session_state[follow_key] = active and query_int("step") is None
follow_live = st.toggle("Latest (follow live)", key=follow_key,
                        help="Jump to the newest step and keep refreshing as new steps arrive.")
st.fragment(inspector, run_every=2 if follow_live and active else None)(stage.id, follow_live)
