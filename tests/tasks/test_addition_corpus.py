"""The tiny base corpus: its share of reflection ("aha") traces and of second-script traces,
and never a held-out pair."""
from __future__ import annotations

import re

import pytest

from backend.tasks.addition import ZH_DIGITS, ZH_TARGET, AdditionTask, worked_solution

N = 4000
MARKER = re.compile(r"check:|wait,")
PAIR = re.compile(rf"^{ZH_TARGET}?(\d+)\+(\d+)=")


def _pair(text: str) -> tuple[int, int]:
    a, b = PAIR.match(text).groups()
    return int(a), int(b)


@pytest.mark.parametrize("reflection_share", [0.0, 0.05, 0.2])
def test_corpus_has_the_configured_share_of_reflection_traces(reflection_share):
    texts = AdditionTask().pretraining_corpus(N, seed=0, reflection_share=reflection_share)
    share = sum(bool(MARKER.search(t)) for t in texts) / N
    # Binomial standard deviation at 0.2 is 0.006; 0.02 is > 3 of them.
    assert share == pytest.approx(reflection_share, abs=0.02)
    assert all(len(MARKER.findall(t)) <= 1 for t in texts)  # one reflection per trace


def test_reflection_traces_stay_correct():
    """A `check:` restates the right column sum; a `wait,` follows a slipped sum with the right
    one; either way the trace carries on correctly to the right answer."""
    texts = AdditionTask().pretraining_corpus(N, seed=1, reflection_share=0.2)
    kinds = set()
    for text in (t for t in texts if MARKER.search(t)):
        a, b = _pair(text)
        assert text.endswith(f"<answer>{a + b}</answer>")
        think = text[text.index("<think>") + 7:text.index("</think>")]
        plain = worked_solution(a, b).split(",")
        # The marker's own comma is not a column separator.
        steps = think.replace(",check:", "|C").replace(",wait,", "|W").split(",")
        assert len(steps) == len(plain)
        for step, right in zip(steps, plain):
            if "|" not in step:
                assert step == right
                continue
            first, reflection = step.split("|")
            total = right.split("=")[1]
            kinds.add(reflection[0])
            if reflection[0] == "C":
                assert first == right and reflection == f"C{total}"
            else:
                assert first != right and first.split("=")[0] == right.split("=")[0]
                assert reflection == f"W{total}"
    assert kinds == {"C", "W"}


def test_default_corpus_has_no_second_script():
    texts = AdditionTask().pretraining_corpus(N, seed=0, reflection_share=0.05)
    assert not any(ch in t for t in texts for ch in ZH_DIGITS + ZH_TARGET)


@pytest.mark.parametrize("share", [0.2, 0.5])
def test_second_script_share_of_prompts_and_traces(share):
    task = AdditionTask(second_script_share=share)
    texts = task.pretraining_corpus(N, seed=0, think_share=0.5)
    zh = [t for t in texts if t.startswith(ZH_TARGET)]
    assert len(zh) / N == pytest.approx(share, abs=0.03)
    en_worked = [t for t in texts if not t.startswith(ZH_TARGET) and "<think>" in t]
    assert en_worked and not any(ch in t for t in en_worked for ch in ZH_DIGITS)
    zh_worked = [t[t.index("<think>"):t.index("</think>")] for t in zh if "<think>" in t]
    in_numerals = [t for t in zh_worked if not re.search(r"\d", t)]
    mixed = [t for t in zh_worked if re.search(r"\d", t) and any(c in t for c in ZH_DIGITS)]
    # 70% of a zh prompt's worked traces in numerals, the rest in digits or switching to them.
    assert len(in_numerals) / len(zh_worked) == pytest.approx(0.7, abs=0.07)
    assert 0 < len(mixed) < len(zh_worked) * 0.25
    # The answer is always in digits (what the accuracy reward reads).
    for t in zh:
        a, b = _pair(t)
        assert t.endswith(f"{a + b}</answer>") or t.endswith(f"={a + b}") or t.endswith(str(a + b))


@pytest.mark.parametrize("share", [0.0, 0.3])
def test_corpus_never_contains_a_heldout_pair(share):
    task = AdditionTask(min_digits=1, max_digits=2, heldout_size=300, second_script_share=share)
    held = {(p.meta["a"], p.meta["b"]) for p in task.heldout()}
    corpus = {_pair(t) for t in task.pretraining_corpus(N, seed=0, reflection_share=0.05)}
    assert len(held) == 300 and corpus and not corpus & held
    train = {(p.meta["a"], p.meta["b"]) for p in task.train_problems(500, seed=3)}
    assert not train & held


def test_problems_name_their_target_language_the_same_way_everywhere():
    task = AdditionTask(second_script_share=0.3)
    held = task.heldout()
    zh = [p for p in held if p.meta["language"] == "zh"]
    assert len(zh) / len(held) == pytest.approx(0.3, abs=0.06)
    assert all(p.prompt.startswith(ZH_TARGET) for p in zh)
    assert all(not p.prompt.startswith(ZH_TARGET) for p in held if p.meta["language"] == "en")
    assert all(p.meta["digit_language"] == "en" for p in held)
    # The corpus gives a pair the same target as the held-out split and training do.
    texts = task.pretraining_corpus(2000, seed=0)
    for t in texts[:300]:
        a, b = _pair(t)
        assert t.startswith(ZH_TARGET) == (task.language(a, b) == "zh")


def test_every_corpus_text_is_spelled_in_the_tiny_vocabulary():
    from backend.models import build_tokenizer

    tok = build_tokenizer()
    texts = AdditionTask(second_script_share=0.5).pretraining_corpus(500, seed=0,
                                                                     reflection_share=0.2)
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == text
    # A marker is one token.
    assert len(tok("check:")["input_ids"]) == 1 and len(tok("wait,")["input_ids"]) == 1


def test_pretrain_config_checks_the_shares_and_keys_the_cache_by_them():
    from backend.stages.common import ConfigError
    from backend.stages.pretrain import PretrainConfig

    base = PretrainConfig()
    assert base.reflection_share == 0.05 and base.second_script_share == 0.0
    assert PretrainConfig(second_script_share=0.3).cache_key() != base.cache_key()
    assert PretrainConfig(reflection_share=0.0).cache_key() != base.cache_key()
    with pytest.raises((ConfigError, ValueError), match="think_share"):
        PretrainConfig.from_dict({"reflection_share": 0.5, "think_share": 0.3})
    with pytest.raises((ConfigError, ValueError), match="second_script_share"):
        PretrainConfig.from_dict({"second_script_share": 1.5})
    problems = PretrainConfig(second_script_share=0.3).problems()
    assert problems.second_script_share == 0.3
    assert any(p.prompt.startswith(ZH_TARGET) for p in problems.heldout(50))


def test_cold_start_examples_reason_in_their_prompts_script():
    """Cold-start data is the readable kind: a zh prompt's worked sums are all numerals."""
    rows = AdditionTask(second_script_share=0.5).cold_start_examples(200, seed=0)
    zh = [r for r in rows if r["prompt"].startswith(ZH_TARGET)]
    assert 60 < len(zh) < 140
    for r in rows:
        think = r["completion"][len("<think>"):r["completion"].index("</think>")]
        numerals = any(c in think for c in ZH_DIGITS)
        digits = any(c.isascii() and c.isdigit() for c in think)
        assert (numerals and not digits) if r in zh else (digits and not numerals)
