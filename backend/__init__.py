"""R1 Workbench backend: stages, rewards, tasks, the pipeline runner and the API pages call.

Offline by default: no model or data set is ever fetched unless the user opts in with
``R1WB_ALLOW_HUB=1`` (then hub ids work where there is network).
"""
import os

if os.environ.get("R1WB_ALLOW_HUB") != "1":
    # Without these, huggingface_hub retries an unreachable hub for ~20 s before failing.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
