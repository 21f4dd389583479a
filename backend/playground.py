"""Playground: talk to any checkpoint. A prompt goes in (through the model's own prompt format,
or raw), the answer streams back token by token; "sample k" draws k answers and votes on their
extracted answers, as cons@k does.

Generation never runs in the Streamlit process (its pages never import torch): each checkpoint
in use gets one persistent model process,

    python -m backend.playground --model PATH [--backend hf|vllm] [--idle 600]

which loads the model once, reads one JSON request per line on stdin and answers in JSON lines
on stdout (``ready``, then per request ``start``, ``chunk`` ..., ``done`` or ``error``). The
client side (:func:`stream`, :func:`sample`) starts it on first use and keeps it while the same
checkpoint is asked with the same backend; asking another checkpoint or backend replaces it
(one model in memory at a time: a real model is gigabytes), and it exits by itself after
``--idle`` seconds without a request or when its parent goes away (stdin closes).

Backends (``backend.generation``): ``hf`` (transformers ``generate``, the default) or ``vllm``
(the process holds one vLLM engine built from the folder). Both stream token by token: vLLM's
engine is stepped directly (``VLLMGenerator.stream``), one decoded token per step; k samples
go through the same ``Generator.samples`` the stages use.
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import random
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from backend.rewards.extract import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from storage import records as r

REPO_ROOT = Path(__file__).resolve().parent.parent
IDLE_SECONDS = 600.0  # a model process nobody asked for this long exits (frees its memory)
LOAD_SECONDS = 300.0  # loading a real model from disk on a loaded CPU machine
REPLY_SECONDS = 600.0  # longest wait for the next line of an answer (k samples of a big model)
# R1 paper's evaluation settings, the playground's defaults.
DEFAULT_TEMPERATURE, DEFAULT_TOP_P, DEFAULT_MAX_TOKENS = 0.6, 0.95, 256


class PlaygroundError(RuntimeError):
    """A checkpoint that cannot be loaded or a model process that failed; says which and why."""


# -- which checkpoints there are -----------------------------------------------------------------
@dataclass(frozen=True)
class ModelCheckpoint:
    """A model folder a stage wrote: its final model, or a checkpoint saved during training."""

    run_id: int
    run_name: str
    stage_id: int
    stage_name: str
    stage_kind: str
    step: int
    path: str
    kind: str  # "final" (the stage's model) | "checkpoint" (saved during training)
    # How the model expects its prompts (``ModelArtifact.prompt_format``); None until the stage
    # finished: the model process then picks one from the tokenizer (prompts.resolve_format).
    prompt_format: Optional[dict[str, str]] = None

    @property
    def label(self) -> str:
        what = "final model" if self.kind == "final" else f"checkpoint at step {self.step}"
        return f"#{self.run_id} {self.run_name} · {self.stage_name} · {what}"


def _is_causal_lm(folder: Path) -> bool:
    """A model folder a causal LM can be loaded from (a reward model's classifier cannot
    generate; a rejection stage's resume notes are not models)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    architectures = config.get("architectures") or []
    return not architectures or any(a.endswith("ForCausalLM") for a in architectures)


def list_checkpoints(runs: Iterable[r.Run],
                     checkpoints_of: Callable[[int], list[r.Checkpoint]]) -> list[ModelCheckpoint]:
    """Every model folder that still exists on disk, newest run first, in stage order: each
    stage's model output, then its saved checkpoints by step. A folder two stages share (the
    cached base model) is listed once, under the stage that wrote it first."""
    found: list[ModelCheckpoint] = []
    seen: set[str] = set()

    def add(run: r.Run, stage: r.Stage, path: str, step: int, kind: str,
            fmt: Optional[dict]) -> None:
        folder = Path(path)
        key = str(folder.resolve())
        if key in seen or not folder.is_dir() or not _is_causal_lm(folder):
            return
        seen.add(key)
        found.append(ModelCheckpoint(run.id, run.name, stage.id, stage.name, stage.kind, step,
                                     str(folder), kind, fmt))

    for run in runs:
        for stage in run.stages:
            model = (stage.outputs or {}).get("model")
            fmt = model.get("prompt_format") if isinstance(model, dict) else None
            if isinstance(model, dict) and model.get("type") == "model" and model.get("path"):
                add(run, stage, model["path"], stage.step, "final", fmt)
            for ckpt in checkpoints_of(stage.id):
                add(run, stage, ckpt.path, ckpt.step,
                    "final" if ckpt.kind == "final" else "checkpoint", fmt)
    return found


# -- reading an answer -------------------------------------------------------------------------
@dataclass(frozen=True)
class ThinkParts:
    """A completion cut at its reasoning: ``before`` ``<think>`` ``think`` ``</think>`` ``rest``.
    ``think`` is None when there is no reasoning part; ``closed`` is False while (or when) the
    ``</think>`` is not written yet."""

    before: str
    think: Optional[str]
    closed: bool
    rest: str


def split_think(text: str) -> ThinkParts:
    """Cut ``text`` at its ``<think>`` block. A chat template may open ``<think>`` in the prompt:
    a ``</think>`` with no ``<think>`` before it closes reasoning that started the text."""
    open_at, close_at = text.find(THINK_OPEN), text.find(THINK_CLOSE)
    if open_at >= 0 and (close_at < 0 or open_at < close_at):
        start = open_at + len(THINK_OPEN)
        close_at = text.find(THINK_CLOSE, start)
        if close_at < 0:
            return ThinkParts(text[:open_at], text[start:], False, "")
        return ThinkParts(text[:open_at], text[start:close_at], True,
                          text[close_at + len(THINK_CLOSE):])
    if close_at >= 0:
        return ThinkParts("", text[:close_at], True, text[close_at + len(THINK_CLOSE):])
    return ThinkParts(text, None, False, "")


@dataclass
class SampleAnswer:
    text: str
    extracted: Optional[str]  # the answer as the accuracy reward reads it
    tokens: int
    finish_reason: str  # stop | length
    thinks: bool  # a closed <think> block
    correct: Optional[bool] = None  # against the reference, when one was given


@dataclass
class SampleResult:
    """k answers to one prompt and how they voted (equivalent answers one vote)."""

    prompt_text: str
    samples: list[SampleAnswer]
    votes: list[dict[str, Any]]  # {"answer", "count", "samples": [indices], "correct"?}
    majority: Optional[str]
    agreement: float  # the majority's share of the k answers (0 when none has an answer)
    seconds: float = 0.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SampleResult":
        return cls(**{**values, "samples": [SampleAnswer(**s) for s in values["samples"]]})


def summarise_samples(texts: list[str], tokens: list[int], finish_reasons: list[str],
                      reference: Optional[str] = None, prompt_text: str = "") -> SampleResult:
    """Extract each answer (``extract_answer``), vote (``backend.evaluation.vote``: the
    clusters cons@k counts) and, given a reference, mark each answer and cluster correct."""
    from backend.evaluation import vote
    from backend.rewards.accuracy import answers_match
    from backend.rewards.extract import extract_answer

    extracted = [extract_answer(text) for text in texts]
    answers = [SampleAnswer(text, answer, n, finish, split_think(text).closed)
               for text, answer, n, finish in zip(texts, extracted, tokens, finish_reasons)]
    votes = vote(extracted)
    if reference is not None and reference.strip():
        for answer in answers:
            answer.correct = (answer.extracted is not None
                              and answers_match(answer.extracted, reference.strip()))
        for cluster in votes:
            cluster["correct"] = answers[cluster["samples"][0]].correct
    majority = votes[0]["answer"] if votes else None
    agreement = votes[0]["count"] / len(texts) if votes and texts else 0.0
    return SampleResult(prompt_text, answers, votes, majority, agreement)


# -- the model process ---------------------------------------------------------------------------
def _token_streamer(tokenizer: Any):
    """transformers' ``TextIteratorStreamer`` releases text only at spaces and newlines (whole
    words); a character-level model writes ``<think>12+34=46</think>`` without either, which
    would arrive in one piece at the end. This one releases whatever decodes to whole
    characters after every token, holding back only a half-written UTF-8 character."""
    from transformers import TextIteratorStreamer

    class TokenStreamer(TextIteratorStreamer):
        def put(self, value):
            if len(value.shape) > 1:
                value = value[0]  # batch of one (generate's streaming needs it)
            if self.skip_prompt and self.next_tokens_are_prompt:
                self.next_tokens_are_prompt = False
                return
            self.token_cache.extend(value.tolist())
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            if text.endswith("\ufffd"):
                return
            printable = text[self.print_len:]
            self.print_len += len(printable)
            if printable:
                self.on_finalized_text(printable)

    return TokenStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _prompt_text(request: dict[str, Any], tokenizer: Any, auto_format: Any) -> str:
    from backend.prompts import PromptFormat

    prompt = str(request.get("prompt") or "")
    if request.get("raw"):
        return prompt
    fmt = (PromptFormat.from_dict(request["prompt_format"]) if request.get("prompt_format")
           else auto_format)
    return fmt.render(prompt, tokenizer)


def _parameters_on_disk(model_path: str) -> int:
    """Parameters of the model folder's safetensors files, read from their headers (a vLLM
    engine keeps its weights to itself)."""
    from safetensors import safe_open

    total = 0
    for file in sorted(Path(model_path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():
                n = 1
                for size in weights.get_slice(name).get_shape():
                    n *= size
                total += n
    return total


def _load(model_path: str, backend: str) -> tuple[Any, Any, int]:
    """The generator, its tokenizer and the parameter count of ``model_path`` on ``backend``."""
    from backend.generation import HFGenerator, VLLMGenerator, check_backend_name

    check_backend_name(backend)
    if backend == "vllm":
        generator = VLLMGenerator(model_path)  # GenerationBackendError says what to do
        return generator, generator.tokenizer, _parameters_on_disk(model_path)
    from backend.models import count_parameters, load_model

    model, tokenizer = load_model(model_path)
    model.eval()
    return HFGenerator(model, tokenizer), tokenizer, count_parameters(model)


def serve(model_path: str, idle_seconds: float, backend: str = "hf") -> int:
    """The model process: load, say ``ready``, answer requests until stdin closes or nobody
    asked for ``idle_seconds``."""
    # Protocol lines go to the real stdout; anything a library prints goes to stderr (the log).
    out = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(message) + "\n")
            out.flush()

    try:
        from backend.prompts import resolve_format

        generator, tokenizer, parameters = _load(model_path, backend)
        auto_format = resolve_format("auto", tokenizer)
    except Exception as exc:  # noqa: BLE001 - any failure to load is reported, then we exit
        send({"event": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    send({"event": "ready", "parameters": parameters, "backend": backend,
          "prompt_format": auto_format.to_dict()})

    last_request = [time.monotonic()]
    busy = threading.Event()

    def watchdog() -> None:
        while True:
            time.sleep(min(5.0, idle_seconds))
            if not busy.is_set() and time.monotonic() - last_request[0] > idle_seconds:
                out.close()
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    while True:
        line = sys.stdin.readline()
        if not line:
            return 0  # the client closed the pipe (or died)
        if not line.strip():
            continue
        busy.set()
        request: dict[str, Any] = {}
        try:
            request = json.loads(line)
            _answer(request, generator, tokenizer, auto_format, send)
        except Exception as exc:  # noqa: BLE001 - one bad request must not end the process
            send({"id": request.get("id"), "event": "error",
                  "message": f"{type(exc).__name__}: {exc}"})
        finally:
            last_request[0] = time.monotonic()
            busy.clear()


def _answer(request: dict[str, Any], generator: Any, tokenizer: Any, auto_format: Any,
            send: Callable[[dict[str, Any]], None]) -> None:
    from backend.generation import generate_samples

    rid = request.get("id")
    text = _prompt_text(request, tokenizer, auto_format)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    if enc["input_ids"].shape[1] == 0:
        raise ValueError("the prompt is empty")
    temperature = float(request.get("temperature", DEFAULT_TEMPERATURE))
    top_p = float(request.get("top_p", DEFAULT_TOP_P))
    max_new_tokens = int(request.get("max_new_tokens", DEFAULT_MAX_TOKENS))
    seed = request.get("seed")
    seed = int(seed) if seed is not None else random.randrange(2**31)
    started = time.monotonic()
    send({"id": rid, "event": "start", "prompt_text": text})

    if request.get("op") == "sample":
        k = max(1, int(request.get("k", 1)))
        samples = generate_samples(generator, tokenizer, [text], max_new_tokens=max_new_tokens,
                                   temperature=temperature, top_p=top_p, num_samples=k,
                                   seed=seed)[0]
        result = summarise_samples([s.text for s in samples], [s.tokens for s in samples],
                                   [s.finish_reason for s in samples],
                                   request.get("reference"), text)
        result.seconds = time.monotonic() - started
        send({"id": rid, "event": "done", "result": asdict(result)})
        return

    eos = tokenizer.eos_token_id
    if generator.backend == "vllm":
        new = _stream_vllm(generator, tokenizer, text, rid, send, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_p=top_p, seed=seed)
    else:
        new = _stream_hf(generator.model, tokenizer, enc, rid, send,
                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                         seed=seed)
    stop = new.index(eos) + 1 if eos is not None and eos in new else None
    send({"id": rid, "event": "done",
          "text": tokenizer.decode(new, skip_special_tokens=True),
          "tokens": stop or len(new), "finish_reason": "stop" if stop else "length",
          "seconds": time.monotonic() - started})


def _stream_vllm(generator: Any, tokenizer: Any, text: str, rid: Any,
                 send: Callable[[dict[str, Any]], None], **sampling: Any) -> list[int]:
    """Send the new text after each engine step (whole characters only, as the HF streamer
    does); return the generated ids."""
    ids: list[int] = []
    shown = 0
    for new in generator.stream(text, **sampling):
        ids.extend(new)
        decoded = tokenizer.decode(ids, skip_special_tokens=True)
        if decoded.endswith("\ufffd"):
            continue  # half a UTF-8 character: wait for the rest
        if len(decoded) > shown:
            send({"id": rid, "event": "chunk", "text": decoded[shown:]})
            shown = len(decoded)
    return ids


def _stream_hf(model: Any, tokenizer: Any, enc: Any, rid: Any,
               send: Callable[[dict[str, Any]], None], *, max_new_tokens: int,
               temperature: float, top_p: float, seed: int) -> list[int]:
    import torch

    torch.manual_seed(seed)
    streamer = _token_streamer(tokenizer)
    eos = tokenizer.eos_token_id
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, streamer=streamer,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(do_sample=False)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            with torch.no_grad():
                outcome["ids"] = model.generate(**enc, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc
            streamer.end()  # generate did not: let the loop below finish

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    for chunk in streamer:
        if chunk:
            send({"id": rid, "event": "chunk", "text": chunk})
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["ids"][0, enc["input_ids"].shape[1]:].tolist()


# -- the client side (in the Streamlit process or the CLI) ---------------------------------------
@dataclass
class StreamEvent:
    """One piece of a streamed answer: ``start`` (with the exact prompt text the model saw),
    ``chunk`` (new text), then ``done`` (the full answer, its token count, why it ended)."""

    kind: str  # start | chunk | done
    text: str = ""
    prompt_text: str = ""
    tokens: int = 0
    finish_reason: str = ""
    seconds: float = 0.0


def _log_path() -> Path:
    from storage import data_home

    folder = data_home() / "playground"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "model_process.log"


class ModelServer:
    """One model process and the pipes to it. Requests go one at a time (a lock); replies are
    read by a thread into a queue, so every wait has a timeout."""

    def __init__(self, path: str, idle_seconds: Optional[float] = None,
                 load_seconds: float = LOAD_SECONDS, backend: str = "hf"):
        self.path, self.backend = path, backend
        idle_seconds = IDLE_SECONDS if idle_seconds is None else idle_seconds
        self._lock = threading.Lock()
        self._next_id = 0
        self._replies: queue.Queue[Optional[dict[str, Any]]] = queue.Queue()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
        # As for stage workers (backend/runner.py): passive OpenMP waits, so a model process
        # waiting between tokens does not take a core from a training.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"]
                                              if env.get("PYTHONPATH") else "")
        self._log = open(_log_path(), "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backend.playground", "--model", path,
             "--backend", backend, "--idle", str(idle_seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd=str(REPO_ROOT),
            env=env, text=True, encoding="utf-8", bufsize=1)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            ready = self._reply(load_seconds)
        except PlaygroundError as exc:
            self.close()
            raise PlaygroundError(f"Cannot load the checkpoint {path}: {exc}") from None
        if ready.get("event") != "ready":
            self.close()
            raise PlaygroundError(f"Cannot load the checkpoint {path}: "
                                  f"{ready.get('message', ready)}")
        self.parameters = int(ready.get("parameters", 0))
        self.prompt_format = ready.get("prompt_format")
        self.last_used = time.monotonic()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue  # not ours (a library printing before the redirect)
            if isinstance(message, dict):
                self._replies.put(message)
        self._replies.put(None)  # the process ended

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            message = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise PlaygroundError(f"the model process gave no answer for {timeout:.0f} s") from None
        if message is None:
            self._replies.put(None)  # every later wait sees the end too
            code = self.proc.wait()
            raise PlaygroundError(f"the model process exited (code {code}); see {_log_path()}")
        return message

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Send one request; yield its replies up to its ``done`` (an ``error`` raises). A
        request abandoned half-way is finished by the process meanwhile; its late replies are
        skipped by id."""
        with self._lock:
            self._next_id += 1
            rid = self._next_id
            self.last_used = time.monotonic()
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({**payload, "id": rid}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                raise PlaygroundError("the model process has ended; ask again to restart it") from None
            while True:
                message = self._reply(REPLY_SECONDS)
                if message.get("id") != rid:
                    continue
                if message.get("event") == "error":
                    raise PlaygroundError(message.get("message", "generation failed"))
                yield message
                if message.get("event") == "done":
                    self.last_used = time.monotonic()
                    return

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()  # the process exits at the end of its input
            self.proc.wait(timeout=2)  # then killed: it holds nothing worth a clean exit
        except (subprocess.TimeoutExpired, OSError, ValueError):
            self.proc.kill()
            self.proc.wait()
        self._log.close()


_live: dict[str, ModelServer] = {}
_live_lock = threading.Lock()


def check_model_folder(path: str) -> Path:
    """The folder of a checkpoint, or a PlaygroundError saying why it cannot be one."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise PlaygroundError(f"The checkpoint {folder} does not exist (deleted with its run?).")
    if not (folder / "config.json").is_file():
        raise PlaygroundError(f"{folder} is not a model folder: it has no config.json.")
    return folder.resolve()


def check_backend(backend: str, folder: Path) -> None:
    """A PlaygroundError unless ``backend`` can generate for ``folder`` here (an unknown name,
    vLLM not installed, a head size vLLM's CPU kernels cannot run): said before a model
    process starts. Reads package metadata and config.json only."""
    from backend.generation import (GenerationBackendError, check_generation_backend,
                                    require_vllm)

    try:
        check_generation_backend(backend, str(folder))
        if backend == "vllm":
            require_vllm()
    except (ValueError, GenerationBackendError) as exc:
        raise PlaygroundError(str(exc).replace("set generation_backend=hf",
                                               "choose the hf backend")) from None


def server_for(path: str, backend: str = "hf") -> ModelServer:
    """The live model process of ``path`` on ``backend``, started if needed. Another
    checkpoint's (or backend's) process is ended first: one model in memory at a time."""
    folder = check_model_folder(path)
    check_backend(backend, folder)
    key = str(folder)
    with _live_lock:
        server = _live.get(key)
        if server is not None and server.alive() and server.backend == backend:
            return server
        for other in list(_live):
            _live.pop(other).close()
        server = ModelServer(key, backend=backend)
        _live[key] = server
        return server


def live_models() -> list[str]:
    """Folders of the model processes running now."""
    with _live_lock:
        return [path for path, server in _live.items() if server.alive()]


def close_all() -> None:
    """End every model process (tests; a server shutting down)."""
    with _live_lock:
        for path in list(_live):
            _live.pop(path).close()


def _payload(prompt: str, raw: bool, prompt_format: Optional[dict], temperature: float,
             top_p: float, max_new_tokens: int, seed: Optional[int]) -> dict[str, Any]:
    if not prompt.strip():
        raise PlaygroundError("Type a prompt first.")
    if temperature < 0 or not 0 < top_p <= 1 or max_new_tokens < 1:
        raise PlaygroundError("temperature must be >= 0, top-p in (0, 1], max tokens >= 1")
    return {"prompt": prompt, "raw": raw, "prompt_format": prompt_format,
            "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
            "seed": seed}


def stream(path: str, prompt: str, *, raw: bool = False, prompt_format: Optional[dict] = None,
           temperature: float = DEFAULT_TEMPERATURE, top_p: float = DEFAULT_TOP_P,
           max_new_tokens: int = DEFAULT_MAX_TOKENS, seed: Optional[int] = None,
           backend: str = "hf") -> Iterator[StreamEvent]:
    """The answer of the checkpoint at ``path`` to ``prompt``, as it is generated (greedy at
    temperature 0). ``raw``: the prompt goes in as typed; else through ``prompt_format`` (the
    stage's recorded one), or the format the tokenizer implies. ``backend``: hf | vllm."""
    payload = _payload(prompt, raw, prompt_format, temperature, top_p, max_new_tokens, seed)
    for message in server_for(path, backend).request({"op": "generate", **payload}):
        if message["event"] == "start":
            yield StreamEvent("start", prompt_text=message.get("prompt_text", ""))
        elif message["event"] == "chunk":
            yield StreamEvent("chunk", text=message.get("text", ""))
        elif message["event"] == "done":
            yield StreamEvent("done", text=message.get("text", ""),
                              tokens=int(message.get("tokens", 0)),
                              finish_reason=message.get("finish_reason", ""),
                              seconds=float(message.get("seconds", 0.0)))


def sample(path: str, prompt: str, k: int, *, raw: bool = False,
           prompt_format: Optional[dict] = None, temperature: float = DEFAULT_TEMPERATURE,
           top_p: float = DEFAULT_TOP_P, max_new_tokens: int = DEFAULT_MAX_TOKENS,
           reference: Optional[str] = None, seed: Optional[int] = None,
           backend: str = "hf") -> SampleResult:
    """``k`` sampled answers to ``prompt`` with their extracted answers, the majority vote and
    the agreement (see :func:`summarise_samples`), from ``backend`` (hf | vllm)."""
    if k < 1:
        raise PlaygroundError("k must be at least 1")
    if temperature <= 0 and k > 1:
        raise PlaygroundError("k greedy answers would all be the same: set a temperature > 0")
    payload = _payload(prompt, raw, prompt_format, temperature, top_p, max_new_tokens, seed)
    for message in server_for(path, backend).request({"op": "sample", "k": k,
                                                      "reference": reference, **payload}):
        if message["event"] == "done":
            return SampleResult.from_dict(message["result"])
    raise PlaygroundError("the model process ended the request without an answer")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="A model process for the playground: JSON "
                                             "requests on stdin, JSON lines on stdout.")
    ap.add_argument("--model", required=True, help="an HF model folder")
    ap.add_argument("--backend", default="hf", choices=["hf", "vllm"],
                    help="what generates: transformers (hf) or a vLLM engine (vllm)")
    ap.add_argument("--idle", type=float, default=IDLE_SECONDS,
                    help="exit after this many seconds without a request")
    args = ap.parse_args(argv)
    return serve(args.model, args.idle, args.backend)


if __name__ == "__main__":
    sys.exit(main())
