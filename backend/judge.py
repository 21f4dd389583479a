"""The generative judge: a language model shown a question, its reference answer and a candidate
completion, asked whether the candidate's final answer is right.

R1's rejection sampling keeps a sample when the rule check passes *or* when DeepSeek-V3, given
the ground truth and the prediction, judges it correct (answers a rule cannot parse); open
reproductions do the same with an OpenAI-compatible server (open-r1 judged the 12% of its math
traces that math-verify could not verify with Llama-3.3-70B). Two backends, one interface
(:meth:`Judge.judge`, a list of :class:`JudgeItem` in, one :class:`Verdict` each out):

* :class:`LocalJudge`: an HF model folder, run with ``backend.generation.generate`` (greedy);
* :class:`EndpointJudge`: ``POST {endpoint}/v1/chat/completions`` with the standard library's
  ``urllib`` (a ``vllm serve`` of a large model, or any OpenAI-compatible API), with a timeout,
  retries with exponential back-off, then a :class:`JudgeError` that says what to fix. It keeps
  the verdicts obtained before the failure (``JudgeError.done``) so nothing scored is lost.

The prompt is an editable template with ``{question}``, ``{reference}`` and ``{candidate}``
(:func:`render_prompt`; only those three placeholders are replaced, so a template may contain
other braces). Two templates ship:

* :data:`LLM_TEMPLATE` for real models: explain briefly, then a last line ``VERDICT: CORRECT`` or
  ``VERDICT: INCORRECT``;
* :data:`TINY_TEMPLATE` for the embedded character model, whose vocabulary has only digits,
  ``+ - * = ,`` and the four tags: ``{question}{candidate}<answer>{reference}</answer>=``, to
  which the judge writes its rationale, the candidate's final answer and the reference
  compared column by column from the right, each column marked ``=`` (same digit) or ``*``
  (``<think>21*,11=,55=</think>`` for 512 against 511, walking the columns as the base
  model's worked sums do), then the verdict digit ``1`` or ``0``. The question and candidate
  read like the base model's own pre-training texts, and the two answers sit next to each
  other at the end of the prompt. Measured on 300 held-out verdicts after 300 steps of the
  judge stage: reference first with a ``<think>CAND=REF</think>`` rationale, 72% (the judge
  copied the candidate's answer twice); this layout with unmarked ``c=r`` columns, 72% too
  (columns copied right, but the verdict did not follow them); with the marks, 86% at the
  learning rate 1e-3 (every right candidate passed; the errors were ``=`` marks on differing
  digits) and 99% at 3e-3, the judge stage's default (97% after 200 of the 300 steps).
  The ``judge`` stage (``backend/stages/judge.py``) teaches the tiny base model this format.

:func:`parse_verdict` reads either format; a judge text with no verdict in it gives ``None``
(stored as ``unparsed``, never guessed).
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from backend.rewards.extract import THINK_CLOSE, THINK_OPEN, extract_answer

PLACEHOLDERS = ("{question}", "{reference}", "{candidate}")

LLM_TEMPLATE = (
    "You are grading a model's answer to a problem against the reference answer.\n\n"
    "Problem:\n{question}\n\n"
    "Reference answer:\n{reference}\n\n"
    "Model's response:\n{candidate}\n\n"
    "Decide only whether the final answer of the model's response is equivalent to the "
    "reference answer (the same value, however it is written); ignore the style of the "
    "reasoning. Explain your decision in one or two sentences, then write a last line that is "
    "exactly \"VERDICT: CORRECT\" or \"VERDICT: INCORRECT\"."
)
# Only characters of the tiny tokenizer (backend.models.build_tokenizer).
TINY_TEMPLATE = "{question}{candidate}<answer>{reference}</answer>="
TEMPLATE_CHOICES = ("auto", "tiny", "llm")

# Written into a judge model folder by the judge stage: the template and generation budget the
# judge was trained with, so ``judge_template=auto`` prompts it exactly as it learned.
JUDGE_SETTINGS_FILE = "workbench_judge.json"

CORRECT, INCORRECT, UNPARSED = "correct", "incorrect", "unparsed"


class JudgeError(RuntimeError):
    """A judge that cannot be loaded or does not answer; the message says what to fix.
    ``done`` holds the verdicts obtained before the failure, in input order."""

    def __init__(self, message: str, done: Optional[list["Verdict"]] = None):
        super().__init__(message)
        self.done = list(done or [])


@dataclass(frozen=True)
class JudgeItem:
    question: str
    reference: str
    candidate: str


@dataclass(frozen=True)
class Verdict:
    correct: Optional[bool]  # None: the judge's text held no verdict
    rationale: str  # the judge's whole generated text

    @property
    def label(self) -> str:
        return UNPARSED if self.correct is None else (CORRECT if self.correct else INCORRECT)


# ----------------------------------------------------------------------------- templates
def check_template(template: str) -> None:
    """Config-time check of a ``judge_template`` setting (ValueError says how to fix it)."""
    if template in TEMPLATE_CHOICES:
        return
    missing = [p for p in ("{reference}", "{candidate}") if p not in template]
    if missing:
        raise ValueError(f"judge_template must be one of {', '.join(TEMPLATE_CHOICES)} or a "
                         f"template containing {{question}}, {{reference}} and {{candidate}}; "
                         f"this one lacks {' and '.join(missing)}")


_SUMMARY = re.compile(re.escape(THINK_CLOSE) + r".*?(?=<answer>)", re.DOTALL)


def without_summary(candidate: str) -> str:
    """The candidate without the readable summary between ``</think>`` and ``<answer>``.

    The tiny judge learned its verdicts on completions without one (``judge_examples``) and
    only compares the final answer with the reference; shown a cold-start style summary
    (``</think>=122<answer>122</answer>``) it misread the answer's digits and called 95% of
    right answers wrong (run of 2026-12-01: agreement with the rule 27.7% -> 77.7% on the same
    202 candidates once the summary is left out, docs/results_r1.md)."""
    return _SUMMARY.sub(THINK_CLOSE, candidate)


def render_prompt(template: str, item: JudgeItem) -> str:
    """The template with its three placeholders filled (other braces are left alone)."""
    text = template
    for placeholder, value in zip(PLACEHOLDERS, (item.question, item.reference, item.candidate)):
        text = text.replace(placeholder, value)
    return text


def tiny_rationale(candidate: str, reference: str, verdict: bool) -> str:
    """What the tiny judge is taught to write: the candidate's final answer and the reference
    compared digit by digit from the right (the shorter padded with 0s), the way the base
    model's worked sums walk the columns; each column is the candidate's digit, the
    reference's digit, then ``=`` (the same) or ``*`` (different); then ``1`` (right) or ``0``
    (wrong): ``<think>21*,11=,55=</think>0`` for 512 against 511. Each mark compares the two
    tokens just written, and the verdict only asks whether any ``*`` was written. A candidate
    with no final answer gets an empty thought: ``<think></think>0``."""
    answer = extract_answer(candidate) or ""
    if not answer:
        return f"{THINK_OPEN}{THINK_CLOSE}0"
    width = max(len(answer), len(reference))
    columns = zip(answer.rjust(width, "0")[::-1], reference.rjust(width, "0")[::-1])
    return (f"{THINK_OPEN}{','.join(c + r + ('=' if c == r else '*') for c, r in columns)}"
            f"{THINK_CLOSE}{1 if verdict else 0}")


_VERDICT_LINE = re.compile(
    r"verdict\s*[:=]?\s*[*_`\"']*\s*(correct|incorrect|wrong|right|yes|no|true|false|1|0)\b",
    re.IGNORECASE)
_WORDS = {"correct": True, "right": True, "yes": True, "true": True, "1": True,
          "incorrect": False, "wrong": False, "no": False, "false": False, "0": False}


def parse_verdict(text: str) -> Optional[bool]:
    """The judge's verdict, or ``None`` when its text gives none.

    In order: the last ``VERDICT: CORRECT|INCORRECT`` line (yes/no, true/false, 1/0 also read);
    the text after the last ``</think>`` starting with ``1`` or ``0`` (the tiny judge); a whole
    text that is one verdict word. A verdict is never guessed from words inside an explanation.
    """
    matches = _VERDICT_LINE.findall(text or "")
    if matches:
        return _WORDS[matches[-1].lower()]
    text = text or ""
    tail = text.rsplit(THINK_CLOSE, 1)[-1].strip()
    if THINK_CLOSE in text and tail[:1] in ("0", "1") and tail[1:2] not in tuple("0123456789"):
        return tail[0] == "1"
    word = tail.strip(" .!*\"'`").lower()
    return _WORDS.get(word)


def judge_settings(model_path: str) -> dict:
    """What the judge stage recorded in a judge folder (empty for any other model)."""
    path = Path(model_path) / JUDGE_SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def resolve_template(choice: str, model_path: str = "", tokenizer=None) -> str:
    """A ``judge_template`` setting as template text: ``auto`` is the template a judge folder
    was trained with, else the tiny template for a tokenizer that cannot spell English, else
    the LLM template."""
    check_template(choice)
    if choice == "tiny":
        return TINY_TEMPLATE
    if choice == "llm":
        return LLM_TEMPLATE
    if choice != "auto":
        return choice
    recorded = judge_settings(model_path).get("template") if model_path else None
    if recorded:
        return recorded
    if tokenizer is not None and _cannot_spell_english(tokenizer):
        return TINY_TEMPLATE
    return LLM_TEMPLATE


def _cannot_spell_english(tokenizer) -> bool:
    unk = getattr(tokenizer, "unk_token_id", None)
    return unk is not None and unk in tokenizer("Problem", add_special_tokens=False)["input_ids"]


# ----------------------------------------------------------------------------- backends
class Judge:
    """One judge backend. ``name`` says which model judged (stored with every verdict)."""

    name: str = ""
    template: str = LLM_TEMPLATE

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalJudge(Judge):
    """An HF model folder, greedy decoding. A chat model gets the prompt as one user turn.
    ``generation_backend``: ``hf`` (transformers) or ``vllm`` (an engine built from the
    folder, ``backend.generation``; vLLM missing or failing to start raises
    ``GenerationBackendError`` with the hf hint)."""

    def __init__(self, model_path: str, template: str = "auto", max_new_tokens: int = 0,
                 batch_size: int = 256, generation_backend: str = "hf"):
        from backend.generation import (GenerationBackendError, check_backend_name,
                                        open_generator)
        from backend.models import ModelLoadError
        from backend.prompts import PromptFormat

        check_backend_name(generation_backend)
        try:
            self.generator = open_generator(generation_backend, model_path)
        except GenerationBackendError as exc:  # the judge's own setting is the one to change
            raise GenerationBackendError(f"the judge: {exc}".replace(
                "set generation_backend=hf", "set judge_generation_backend=hf")) from exc
        except (ModelLoadError, OSError, ValueError) as exc:
            raise JudgeError(f"the judge model {model_path} cannot be loaded: {exc}. Set "
                             f"judge_model_path to an HF model folder, wire a judge stage's "
                             f"model, or use judge_endpoint.") from exc
        self.tokenizer = self.generator.tokenizer
        self.generation_backend = generation_backend
        self.name = model_path
        self.template = resolve_template(template, model_path, self.tokenizer)
        chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.format = PromptFormat("chat" if chat else "plain", "{prompt}")
        recorded = judge_settings(model_path).get("max_new_tokens")
        # The tiny judge writes up to ~28 tokens (6-digit sums); an LLM that explains itself needs a few hundred.
        self.max_new_tokens = max_new_tokens or recorded or (
            32 if self.template == TINY_TEMPLATE else 512)
        self.batch_size = batch_size

    def prompts(self, items: Sequence[JudgeItem]) -> list[str]:
        if self.template == TINY_TEMPLATE:
            items = [JudgeItem(i.question, i.reference, without_summary(i.candidate))
                     for i in items]
        return [self.format.render(render_prompt(self.template, item), self.tokenizer)
                for item in items]

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        if not items:
            return []
        if self.generator is None:
            raise JudgeError(f"the judge {self.name} was closed")
        if hasattr(self.generator, "batch_size"):
            self.generator.batch_size = self.batch_size
        rows = self.generator.samples(self.prompts(items), max_new_tokens=self.max_new_tokens,
                                      temperature=0.0)
        return [Verdict(parse_verdict(row[0].text), row[0].text) for row in rows]

    def close(self) -> None:
        """Frees a vLLM engine (an HF model goes with the object)."""
        if self.generator is not None:
            self.generator.close()
            self.generator = None


# Worth another try: the server is busy, restarting, or behind a flaky proxy.
RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


def chat_completions_url(endpoint: str) -> str:
    """``http://host:8000``, ``.../v1`` or the full ``.../v1/chat/completions`` -> the full URL."""
    url = endpoint.strip().rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if url.endswith("/v1"):
        return url + "/chat/completions"
    return url + "/v1/chat/completions"


class EndpointJudge(Judge):
    """An OpenAI-compatible chat-completions server (``vllm serve MODEL``, ...)."""

    def __init__(self, endpoint: str, api_model: str, template: str = "auto", *,
                 max_new_tokens: int = 0, timeout: float = 60.0, retries: int = 3,
                 backoff: float = 1.0, concurrency: int = 4, api_key_env: str = ""):
        if not endpoint.startswith(("http://", "https://")):
            raise JudgeError(f"judge_endpoint {endpoint!r} must start with http:// or https://")
        self.url = chat_completions_url(endpoint)
        self.api_model = api_model
        self.name = f"{api_model} @ {self.url}"
        self.template = resolve_template(template)  # auto: the LLM template
        self.max_new_tokens = max_new_tokens or 512
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self.concurrency = max(1, concurrency)
        # The key is read from the environment, never stored in a config or the database.
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""

    def _request(self, prompt: str) -> urllib.request.Request:
        body = json.dumps({
            "model": self.api_model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.max_new_tokens,
        }).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def complete(self, prompt: str) -> str:
        """One judge text; retries transient failures, then raises :class:`JudgeError`."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(self._request(prompt), timeout=self.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:300].decode("utf-8", "replace").strip()
                if exc.code not in RETRY_STATUS:
                    raise JudgeError(
                        f"the judge endpoint {self.url} refused the request with HTTP "
                        f"{exc.code} ({detail or exc.reason}); check judge_api_model "
                        f"({self.api_model!r}) and the API key") from None
                last = f"HTTP {exc.code} {detail or exc.reason}"
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                name = type(reason).__name__
                last = f"{name}: {reason}" if str(reason) else name
                continue
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                last = f"an answer that is not JSON ({exc})"
                continue
            try:
                content = payload["choices"][0]["message"]["content"]
            except (KeyError, IndexError, TypeError):
                raise JudgeError(f"the judge endpoint {self.url} answered without "
                                 f"choices[0].message.content: {str(payload)[:300]}") from None
            return content if isinstance(content, str) else ""
        raise JudgeError(
            f"the judge endpoint {self.url} did not answer after {self.retries + 1} tries "
            f"(timeout {self.timeout:g} s each): {last}. Check that the server is running "
            f"(e.g. vllm serve {self.api_model}) and reachable, or raise judge_timeout / "
            f"judge_retries")

    def judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        """Verdicts in input order, ``concurrency`` requests at a time. On a failure the
        verdicts of every item before the first failed one are in ``JudgeError.done``."""
        prompts = [render_prompt(self.template, item) for item in items]
        done: list[Verdict] = []
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            for text in pool.map(self.complete, prompts):
                done.append(Verdict(parse_verdict(text), text))
        except JudgeError as exc:
            raise JudgeError(str(exc), done) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return done


def build_judge(*, model_path: str = "", endpoint: str = "", api_model: str = "",
                template: str = "auto", max_new_tokens: int = 0, timeout: float = 60.0,
                retries: int = 3, backoff: float = 1.0, concurrency: int = 4,
                api_key_env: str = "", generation_backend: str = "hf") -> Optional[Judge]:
    """The configured judge: an endpoint when one is given, else a local model folder
    (generating with ``generation_backend``), else ``None`` (no judge)."""
    if endpoint:
        return EndpointJudge(endpoint, api_model, template, max_new_tokens=max_new_tokens,
                             timeout=timeout, retries=retries, backoff=backoff,
                             concurrency=concurrency, api_key_env=api_key_env)
    if model_path:
        return LocalJudge(model_path, template, max_new_tokens,
                          generation_backend=generation_backend)
    return None
