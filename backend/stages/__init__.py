"""One module per stage kind. ``STAGE_RUNNERS`` maps a kind to ``run(ctx) -> outputs`` and
``STAGE_CONFIGS`` to its config dataclass (used to validate forms and ``--set`` values before a
run is created)."""
from __future__ import annotations

from typing import Callable

from backend.stages import evaluate, grpo, pretrain

STAGE_CONFIGS = {
    "pretrain": pretrain.PretrainConfig,
    "grpo": grpo.GRPOStageConfig,
    "evaluate": evaluate.EvaluateConfig,
}

STAGE_RUNNERS: dict[str, Callable] = {
    "pretrain": pretrain.run,
    "grpo": grpo.run,
    "evaluate": evaluate.run,
}
