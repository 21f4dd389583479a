"""Prompt formats: a model folder with a chat template gets TRL's conversational prompts (the
R1 instruction as the user turn), rendered through its own template; the tiny model gets the
bare problem; a base model without a template gets the R1-Zero template; and the evaluate
stage prompts a model exactly as it was trained."""
from __future__ import annotations

import pytest

from backend.api import Workbench
from backend.contract import ModelArtifact
from backend.prompts import (BARE, R1_CHAT_INSTRUCTION, R1_ZERO_TEMPLATE, PromptFormat,
                             check_template, resolve_format)
from backend.runner import start_pipeline
from backend.stages import STAGE_CONFIGS
from storage import StageSpec
from tests.conftest import wait_for

# A chat template of the simplest kind (a real one, e.g. Qwen's, works the same way): the tiny
# tokenizer reads most of its characters as <unk>, which is fine for a random model.
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }};{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")


def _tiny_tokenizer(chat_template=None):
    from backend.models import build_tokenizer

    tok = build_tokenizer()
    if chat_template:
        tok.chat_template = chat_template
    return tok


def _english_tokenizer():
    """A character tokenizer that can spell English (a stand-in for a real base model without
    a chat template)."""
    import string

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>", *string.printable])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory) -> str:
    """An untrained tiny model saved with a chat template in its tokenizer."""
    from backend.models import TinyModelSpec, build_tiny_model

    out = tmp_path_factory.mktemp("chat_model")
    tok = _tiny_tokenizer(CHAT_TEMPLATE)
    model = build_tiny_model(TinyModelSpec(hidden_size=32, num_layers=1, num_heads=1,
                                           num_kv_heads=1, intermediate_size=64), tok)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


# --------------------------------------------------------------------------- choosing a format
@pytest.mark.parametrize("choice, tokenizer, style, template", [
    # auto: a chat template wins, whatever the tokenizer can spell
    ("auto", "tiny+chat", "chat", R1_CHAT_INSTRUCTION),
    ("auto", "english+chat", "chat", R1_CHAT_INSTRUCTION),
    # auto: the tiny character model cannot read English: the bare problem
    ("auto", "tiny", "plain", BARE),
    # auto: a base model without a chat template: the paper's R1-Zero template
    ("auto", "english", "plain", R1_ZERO_TEMPLATE),
    # the user's choice wins over auto's
    ("plain", "tiny+chat", "plain", R1_ZERO_TEMPLATE),
    ("bare", "english+chat", "plain", BARE),
    ("chat", "english+chat", "chat", R1_CHAT_INSTRUCTION),
    ("Q: {prompt} A:", "tiny+chat", "plain", "Q: {prompt} A:"),
])
def test_resolve_format(choice, tokenizer, style, template):
    base, _, chat = tokenizer.partition("+")
    tok = _tiny_tokenizer() if base == "tiny" else _english_tokenizer()
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    assert resolve_format(choice, tok) == PromptFormat(style, template)


@pytest.mark.parametrize("choice, tokenizer, expected", [
    # chat asked for, but the model has no template to render it with
    ("chat", _english_tokenizer, "no chat template"),
    # neither a known choice nor a template with {prompt}
    ("chatml", _english_tokenizer, "must be one of auto, chat, plain, bare"),
    ("Question: {question}", _tiny_tokenizer, "containing {prompt}"),
])
def test_resolve_format_refuses(choice, tokenizer, expected):
    with pytest.raises(ValueError, match=expected.replace("{", r"\{").replace("}", r"\}")):
        resolve_format(choice, tokenizer())


def test_prompt_template_is_checked_when_the_config_is_made():
    from backend.api import ConfigError

    check_template("Solve: {prompt}")
    with pytest.raises(ConfigError, match="prompt_template"):
        STAGE_CONFIGS["grpo"].from_dict({"prompt_template": "chatml"})


# --------------------------------------------------------------------------- using a format
def test_chat_format_is_one_user_turn_rendered_by_the_models_own_template():
    tok = _tiny_tokenizer(CHAT_TEMPLATE)
    fmt = resolve_format("auto", tok)
    turn = fmt.for_trainer("12+34=")
    assert turn == [{"role": "user", "content": R1_CHAT_INSTRUCTION.format(prompt="12+34=")}]
    assert "<think>" in turn[0]["content"] and "<answer>" in turn[0]["content"]
    rendered = fmt.render("12+34=", tok)
    assert rendered == tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("user: 12+34=") and rendered.endswith(";assistant:")


@pytest.mark.parametrize("fmt, expected", [
    (PromptFormat("plain", BARE), "12+34="),
    (PromptFormat("plain", R1_ZERO_TEMPLATE), R1_ZERO_TEMPLATE.replace("{prompt}", "12+34=")),
])
def test_plain_formats_are_text(fmt, expected):
    assert fmt.for_trainer("12+34=") == expected
    assert fmt.render("12+34=", _tiny_tokenizer(CHAT_TEMPLATE)) == expected  # no template used


def test_the_format_travels_with_the_model_artifact():
    fmt = PromptFormat("chat", R1_CHAT_INSTRUCTION)
    artifact = ModelArtifact(path="/m", prompt_format=fmt.to_dict())
    stored = artifact.to_dict()
    assert stored["type"] == "model" and stored["prompt_format"]["style"] == "chat"
    assert ModelArtifact.from_dict(stored).format == fmt
    assert ModelArtifact(path="/m").format == PromptFormat()  # an old artifact: bare plain


def test_saved_model_folder_keeps_its_chat_template(chat_model_dir):
    from backend.models import load_model

    _, tok = load_model(chat_model_dir)
    assert tok.chat_template == CHAT_TEMPLATE
    assert resolve_format("auto", tok).style == "chat"


# --------------------------------------------------------------------------- in a run
@pytest.mark.slow
def test_grpo_and_evaluate_use_the_chat_template(chat_model_dir, db_url):
    from backend.models import load_model

    grpo = STAGE_CONFIGS["grpo"].from_dict({
        "model_path": chat_model_dir, "steps": 1, "batch_size": 8, "num_generations": 4,
        "max_completion_length": 8, "eval_every": 0, "eval_problems": 4,
        "save_steps": 100}).to_dict()
    evaluate = STAGE_CONFIGS["evaluate"].from_dict({"eval_problems": 4, "k": 1,
                                                    "max_new_tokens": 8}).to_dict()
    wb = Workbench(db_url)
    run = wb.store.create_run("chat", "r1-zero", "custom", {}, [
        StageSpec("grpo", "grpo", grpo, "grpo"),
        StageSpec("evaluate", "eval", evaluate, "eval",
                  {"model": "grpo.model", "problems": "grpo.problems"})])
    start_pipeline(wb.store, run.id)
    status = wait_for(lambda: (s := wb.run_status(run.id))["status"] in
                      ("completed", "failed") and s, 600, what="the run to end")
    assert status["status"] == "completed", [s["error"] for s in status["stages"]]
    grpo_stage, eval_stage = status["stages"]

    # Training: conversational prompts, and the trained model says so.
    assert grpo_stage["outputs"]["model"]["prompt_format"] == {"style": "chat",
                                                               "template": R1_CHAT_INSTRUCTION}
    [group, *_] = wb.step_groups(grpo_stage["id"], 1)
    assert "Enclose the reasoning in <think> </think>" in group.prompt
    # Evaluation: the same template, rendered through the tokenizer's chat template.
    _, tok = load_model(chat_model_dir)
    example = eval_stage["summary"]["final"]["examples"][0]
    problem = example["prompt"].removeprefix("user: ").split("\n\n")[0]
    assert example["prompt"] == PromptFormat("chat", R1_CHAT_INSTRUCTION).render(problem, tok)
    assert example["prompt"].endswith(";assistant:")
    assert eval_stage["summary"]["problems"] == 4
