"""Few-shot prompt templates for evaluation: N worked examples from the training split, shown
before the question in the prompt format the model was trained on (plain text or chat turns),
and the evaluate stage's settings for them."""
from __future__ import annotations

import pytest

from backend.prompts import (BARE, R1_CHAT_INSTRUCTION, R1_ZERO_TEMPLATE, PromptFormat,
                             render_few_shot, template_label, worked_completion)
from backend.stages.common import ConfigError
from backend.stages.evaluate import EvaluateConfig, few_shot_examples, parse_task
from backend.tasks.problem import Problem
from tests.backend.test_prompts import CHAT_TEMPLATE, _english_tokenizer, _tiny_tokenizer

EXAMPLES = [("12+30=", "<think>2+0+0=2,1+3+0=4</think><answer>42</answer>"),
            ("5+5=", "<think>5+5+0=10</think><answer>10</answer>")]


@pytest.mark.parametrize("problem, expected", [
    # the addition task's own worked column sums (what its corpus and cold start write)
    (Problem("578+853=", "1431", {"a": 578, "b": 853}),
     "<think>8+3+0=11,7+5+1=13,5+8+1=14</think><answer>1431</answer>"),
    # a GSM8K solution: the text before ####, calculator annotations dropped
    (Problem("Q?", "72", {"solution": "48/2 = <<48/2=24>>24\n48+24 = <<48+24=72>>72\n#### 72"}),
     "<think>48/2 = 24\n48+24 = 72</think><answer>72</answer>"),
    # nothing to show as reasoning: only the answer, no made-up thought
    (Problem("Q?", "7"), "<answer>7</answer>"),
])
def test_worked_completion(problem, expected):
    assert worked_completion(problem) == expected


def test_zero_shot_is_the_plain_prompt():
    tok = _tiny_tokenizer()
    assert render_few_shot(PromptFormat("plain", BARE), "7+8=", tok, []) == "7+8="
    assert template_label(0) == "0-shot" and template_label(4) == "4-shot"


def test_tiny_model_examples_are_separated_by_end_of_sequence():
    # The character tokenizer cannot spell a newline: examples end where a text ends.
    tok = _tiny_tokenizer()
    text = render_few_shot(PromptFormat("plain", BARE), "7+8=", tok, EXAMPLES)
    assert text == (f"12+30={EXAMPLES[0][1]}<eos>5+5={EXAMPLES[1][1]}<eos>7+8=")
    assert tok.unk_token_id not in tok(text, add_special_tokens=False)["input_ids"]


def test_r1_zero_template_repeats_the_template_per_example():
    tok = _english_tokenizer()
    fmt = PromptFormat("plain", R1_ZERO_TEMPLATE)
    text = render_few_shot(fmt, "7+8", tok, EXAMPLES[:1])
    assert text == (R1_ZERO_TEMPLATE.format(prompt="12+30=") + " " + EXAMPLES[0][1] + "\n\n"
                    + R1_ZERO_TEMPLATE.format(prompt="7+8"))


def test_chat_examples_are_earlier_turns():
    tok = _tiny_tokenizer(CHAT_TEMPLATE)
    fmt = PromptFormat("chat", R1_CHAT_INSTRUCTION)
    text = render_few_shot(fmt, "7+8=", tok, EXAMPLES[:1])
    assert text == ("user: " + R1_CHAT_INSTRUCTION.format(prompt="12+30=") + ";assistant: "
                    + EXAMPLES[0][1] + ";user: " + R1_CHAT_INSTRUCTION.format(prompt="7+8=")
                    + ";assistant:")


def test_examples_come_from_the_training_split_never_held_out():
    cfg = EvaluateConfig(task="addition")
    source = cfg.problem_source(None)
    examples = few_shot_examples(source, 4, seed=0)
    held = {p.prompt for p in source.heldout()}
    assert len(examples) == 4 and not {q for q, _ in examples} & held
    assert all(c.startswith("<think>") and c.endswith("</answer>") for _, c in examples)
    assert few_shot_examples(source, 4, seed=0) == examples  # the same prompt every time


def test_few_shot_from_a_dataset_file(gsm8k_dir):
    cfg = EvaluateConfig(dataset=str(gsm8k_dir))
    examples = few_shot_examples(cfg.problem_source(None), 2, seed=0)
    assert len(examples) == 2
    assert all("####" not in c and "<<" not in c and c.startswith("<think>") for _, c in examples)


@pytest.mark.parametrize("settings, message", [
    ({"few_shot": "0,0"}, "twice"),
    ({"few_shot": "-1"}, "few_shot"),
    ({"top_p": "0"}, "top_p"),
    ({"top_p": "1.5"}, "top_p"),
    ({"temperature": "0"}, "temperature"),
    ({"task": "subtraction"}, "addition:MIN-MAX"),
    ({"task": "addition:3-1"}, "MIN <= MAX"),
    ({"language": "fr"}, "en, zh"),
])
def test_bad_evaluation_settings_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        EvaluateConfig.from_dict(settings)


def test_paper_defaults_and_list_settings():
    cfg = EvaluateConfig.from_dict({"few_shot": "0,4"})
    assert cfg.few_shot == [0, 4]
    assert (cfg.temperature, cfg.top_p) == (0.6, 0.95)
    assert parse_task("addition") == (1, 3) and parse_task("Addition:1-5") == (1, 5)
