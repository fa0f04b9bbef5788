"""Load a saved OpenTSLM folder the way a user without this project does: `trust_remote_code=True` in a fresh
process that cannot import the project's packages, then run the processor and the model on `tiny.series_batch()`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tiny import POST, PRE

BLOCKED = ("modeling_opentslm", "opentslm_hub", "hub_datasets", "recipes", "maxent_ts")


BLOCK_THE_PACKAGE = f"""
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError("blocked: " + name)

sys.meta_path.insert(0, Block())
sys.path = [p for p in sys.path if p not in ("", {str(os.getcwd())!r})]
"""


def run_python_without_the_package(code: str, cwd: str | Path, args: tuple[str, ...] = ()) -> dict:
    """Run `code` (after `BLOCK_THE_PACKAGE`) offline in a fresh process; it prints one JSON line last, returned."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_THE_PACKAGE + code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_without_the_package(folder: str | Path, cwd: str | Path, new_tokens: int = 4) -> dict:
    """Returns the last-position logits, greedy tokens, model class, architecture and processor placeholders."""
    script = textwrap.dedent(
        f"""
        import json
        import numpy as np, torch
        from transformers import AutoModelForCausalLM, AutoProcessor

        folder = {str(folder)!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert "modeling_opentslm" not in sys.modules
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        rng = np.random.default_rng(0)
        batch = [
            [rng.normal(size=37), np.stack([np.sin(np.arange(22) / 3), np.cos(np.arange(22) / 3)])],
            [np.linspace(-3, 8, 9)],
            [rng.normal(size=61) * 50 + 7, rng.normal(size=5)],
        ]
        texts = [processor.format_prompt({PRE!r}, {POST!r}, num_series=len(s)) for s in batch]
        inputs = processor(text=texts, time_series=batch)
        with torch.no_grad():
            logits = model(**inputs).logits[:, -1].tolist()
            tokens = model.generate(**inputs, max_new_tokens={new_tokens}, do_sample=False)[:, -{new_tokens}:].tolist()
        print(json.dumps({{
            "logits": logits,
            "tokens": tokens,
            "cls": type(model).__name__,
            "architecture": model.config.architecture,
            "placeholders": processor.placeholders,
        }}))
        """
    )
    return run_python_without_the_package(script, cwd)
