"""Remote code under the transformers its users have: folders saved with the pinned transformers load and run the same
under the oldest supported release, 5.24.0 and the newest, in a process that cannot import this package (same
processor outputs, logits within 1e-5, same greedy tokens, a decoding step by hand with the cache); under the release
below the floor, loading stops with the supported range.

Each version gets its own virtual environment that shares everything but transformers (and what that release needs)
with this one (`venv --system-site-packages`). They are built on first use and cached in `OPENTSLM_TF_ENVS` (default
`~/.cache/opentslm/tf-envs`), so a warm run only loads and compares. CI builds them fresh; a build that fails (no
network...) fails the test. A developer without network can skip these tests with `OPENTSLM_SKIP_TF_ENVS=1`, and
check more releases with `OPENTSLM_TF_VERSIONS_EXTRA=5.19.0,5.22.2`.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import TINY_ENCODER, tiny_text_config, tiny_tokenizer

from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM, OpenTSLMProcessor
from modeling_opentslm.compat_opentslm import (
    SUPPORTED_TRANSFORMERS,
    TRANSFORMERS_FLOOR,
    TRANSFORMERS_NEWEST_TESTED,
    check_transformers_version,
)

# Each version: what pip installs on top of this environment, and the environment variables of the load. 5.16.1 (and
# 5.15.1) need huggingface_hub < 2. 5.25.0 requires kernels >= 0.19.1, which PyPI does not have (0.17.2 is its newest), so a plain
# `pip install transformers==5.25.0` fails to resolve; it goes in with --no-deps (the rest of what it requires is
# what this environment has), and since from_pretrained of 5.25.0 refuses to run without kernels unless Hub kernels
# are off, for any model, the load sets USE_HUB_KERNELS=0.
SUPPORTED = {
    TRANSFORMERS_FLOOR: ([f"transformers=={TRANSFORMERS_FLOOR}", "huggingface_hub==1.33.0"], {}),
    "5.24.0": (["transformers==5.24.0"], {}),
    TRANSFORMERS_NEWEST_TESTED: (
        ["--no-deps", f"transformers=={TRANSFORMERS_NEWEST_TESTED}"],
        {"USE_HUB_KERNELS": "0"},
    ),
}
# More versions to check, comma-separated (e.g. OPENTSLM_TF_VERSIONS_EXTRA=5.19.0,5.22.2); pip resolves what each needs.
for _version in filter(None, os.environ.get("OPENTSLM_TF_VERSIONS_EXTRA", "").split(",")):
    SUPPORTED.setdefault(_version.strip(), ([f"transformers=={_version.strip()}"], {}))
BELOW_FLOOR = "5.15.1"
ENVIRONMENTS = {**SUPPORTED, BELOW_FLOOR: ([f"transformers=={BELOW_FLOOR}", "huggingface_hub==1.33.0"], {})}
SKIP_ENVIRONMENTS = pytest.mark.skipif(
    os.environ.get("OPENTSLM_SKIP_TF_ENVS") == "1", reason="OPENTSLM_SKIP_TF_ENVS=1"
)
BLOCKED = ("modeling_opentslm", "opentslm_hub", "hub_datasets", "recipes", "maxent_ts")
PRE = "You are an expert in time series analysis."
POST = "Please generate a detailed caption for this time-series, describing it as accurately as possible."
NEW_TOKENS = 8


def series_batch() -> list[list[np.ndarray]]:
    """Three samples: two series (one of them 2-channel), one short series, two series of different scales."""
    rng = np.random.default_rng(0)
    return [
        [rng.normal(size=37), np.stack([np.sin(np.arange(22) / 3), np.cos(np.arange(22) / 3)])],
        [np.linspace(-3, 8, 9)],
        [rng.normal(size=61) * 50 + 7, rng.normal(size=5)],
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------------------------------
def env_python(version: str) -> Path:
    """The python of a venv with transformers `version` on top of this environment; built once, then reused."""
    spec = ENVIRONMENTS[version][0]
    key = hashlib.sha256(repr((spec, sys.executable, sys.version)).encode()).hexdigest()[:10]
    root = Path(os.environ.get("OPENTSLM_TF_ENVS", Path.home() / ".cache" / "opentslm" / "tf-envs"))
    folder = root / f"transformers-{version}-{key}"
    python = folder / "bin" / "python"
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; a half-built folder has no `complete` mark
        if (folder / "complete").exists():
            return python
        shutil.rmtree(folder, ignore_errors=True)
        steps = [
            [sys.executable, "-m", "venv", "--system-site-packages", str(folder)],
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *spec],
            [str(python), "-c", "import transformers; print(transformers.__version__)"],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if result.returncode:
                pytest.fail(
                    f"Could not build the transformers {version} environment ({' '.join(step)}):\n"
                    f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}\n"
                    "Without network, set OPENTSLM_SKIP_TF_ENVS=1 to skip these tests locally."
                )
        assert result.stdout.strip() == version, result.stdout
        (folder / "complete").write_text(" ".join(spec) + "\n")
    return python


# ---------------------------------------------------------------------------------------------------------------------
# Reference folders, saved and run with the pinned transformers
# ---------------------------------------------------------------------------------------------------------------------
# What is measured: the same code runs here under the pinned transformers and in the load script under the others.
MEASURE = textwrap.dedent(
    """
    def measure(model, processor, series, pre, post, new_tokens):
        import dataclasses

        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPast

        # The KV cache's name under this transformers, as a user's own decoding loop passes it.
        fields = {field.name for field in dataclasses.fields(BaseModelOutputWithPast)}
        cache_name = "cache" if "cache" in fields else "past_key_values"
        texts = [processor.format_prompt(pre, post, num_series=len(sample)) for sample in series]
        inputs = processor(text=texts, time_series=series)
        prompt_length = inputs["input_ids"].shape[1]
        with torch.no_grad():
            logits = model(**inputs).logits
            tokens = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
            # One decoding step by hand: the prefill's cache, the next token, no position_ids.
            prefill = model(**inputs, use_cache=True)
            step_ids = tokens[:, prompt_length : prompt_length + 1]
            mask = torch.cat([inputs["attention_mask"], torch.ones_like(step_ids)], dim=1)
            cache = {cache_name: getattr(prefill, cache_name)}
            if getattr(prefill, "media_cache", None) is not None:  # Flamingo: the series' latents and keys/values
                cache["media_cache"] = prefill.media_cache
            step = model(input_ids=step_ids, attention_mask=mask, use_cache=True, **cache)
        result = {"inputs." + key: value.numpy() for key, value in inputs.items()}
        result["logits"] = logits.float().numpy()
        result["tokens"] = tokens[:, prompt_length:].numpy()
        result["step_logits"] = step.logits[:, -1].float().numpy()
        return result
    """
)
_namespace: dict = {}
exec(MEASURE, _namespace)
measure = _namespace["measure"]


def make_sp(family: str, std: float, lora: bool = False, chat: bool = False):
    """A tiny random OpenTSLM-SP and its processor. `std`: the LLM's init; `lora`: non-zero adapters (so that adapters
    that are not loaded show in the logits); `chat`: the processor prompts with the chat template."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    processor = OpenTSLMProcessor(tokenizer=tokenizer, use_chat_template=chat)
    torch.manual_seed(0)
    config = OpenTSLMConfig(
        text_config=dict(tiny_text_config(family, len(processor.tokenizer)), initializer_range=std),
        encoder_config=dict(TINY_ENCODER, initializer_range=0.5),
        ts_token_id=processor.ts_token_id,
    )
    model = OpenTSLMForCausalLM(config)
    if lora:
        model.add_lora(r=4, lora_alpha=8)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.2)
    return model.eval(), processor


def make_flamingo(family: str, std: float):
    """A tiny random OpenTSLM-Flamingo with open gates (so the series reach the text) and its processor."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    processor = OpenTSLMProcessor(tokenizer=tokenizer, placeholders="per_series")
    torch.manual_seed(0)
    config = OpenTSLMConfig(
        text_config=dict(tiny_text_config(family, len(processor.tokenizer)), initializer_range=std),
        encoder_config=dict(TINY_ENCODER, num_hidden_layers=0, initializer_range=0.5),
        ts_token_id=processor.ts_token_id,
        architecture="flamingo",
        num_latents=4,
        resampler_num_layers=1,
        resampler_num_heads=2,
        resampler_head_dim=8,
        cross_attention_every_n_layers=1,
        cross_attention_num_heads=2,
        cross_attention_head_dim=8,
    )
    model = OpenTSLMForCausalLM(config)
    with torch.no_grad():
        for block in model.model.cross_attention_layers:
            block.attention_gate.fill_(0.8)
            block.feed_forward_gate.fill_(0.5)
    return model.eval(), processor


# name: a function that builds (model, processor), saved with `save_pretrained` and checked under each version. A wide
# init, so that greedy decoding picks varied tokens (the default one repeats one token); gemma3 (embeddings scaled by
# sqrt(hidden)) collapses above 0.1.
FOLDERS = {
    "sp-qwen2": functools.partial(make_sp, "qwen2", 0.5),
    "sp-gemma3": functools.partial(make_sp, "gemma3", 0.1),
    "sp-lora-llama": functools.partial(make_sp, "llama", 0.5, lora=True, chat=True),
    "flamingo-llama": functools.partial(make_flamingo, "llama", 0.5),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Folders saved by `save_pretrained` under the pinned transformers, and what they give under it."""
    root = tmp_path_factory.mktemp("saved")
    series = series_batch()
    expected = {}
    for name, build in FOLDERS.items():
        model, processor = build()
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        expected[name] = measure(model, processor, series, PRE, POST, NEW_TOKENS)
        assert len(np.unique(expected[name]["tokens"])) > 1, f"{name}: greedy decoding repeats one token"
        # The hand-made decoding step is right: it gives the logits of the prompt extended by that token (up to
        # 1e-4: incremental and full attention add up in another order, on logits up to ~10).
        inputs = processor(text=[processor.format_prompt(PRE, POST, len(s)) for s in series], time_series=series)
        step_ids = torch.tensor(expected[name]["tokens"][:, :1])
        inputs["input_ids"] = torch.cat([inputs["input_ids"], step_ids], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(step_ids)], dim=1)
        with torch.no_grad():
            extended = model(**inputs).logits[:, -1].numpy()
        np.testing.assert_allclose(expected[name]["step_logits"], extended, rtol=0, atol=1e-4)
    with open(root / "series.pkl", "wb") as file:
        pickle.dump(series, file)
    return root, expected


# The script run under the other transformers. It cannot import this package: a finder refuses its names, and neither
# the checkout nor PYTHONPATH is on the path. Warnings are all shown, so the test sees deprecations.
LOAD_SCRIPT = MEASURE + textwrap.dedent(
    """
    import importlib.abc, json, pickle, sys, warnings

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError("blocked: " + name)

    BLOCKED, checkout, root, names, out = set(sys.argv[1].split(",")), *sys.argv[2:6]
    pre, post, new_tokens = json.loads(sys.argv[6])
    sys.meta_path.insert(0, Block())
    sys.path = [p for p in sys.path if p not in ("", ".", checkout)]
    warnings.simplefilter("always")

    import numpy as np, transformers
    from transformers import AutoModelForCausalLM, AutoProcessor

    with open(root + "/series.pkl", "rb") as file:
        series = pickle.load(file)
    for name in names.split(","):
        folder = root + "/" + name
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        for obj in (model, model.config, processor, processor.feature_extractor):
            assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
        np.savez(out + "/" + name + ".npz", **measure(model, processor, series, pre, post, new_tokens))
    assert not any(name.split(".")[0] in BLOCKED for name in sys.modules)
    print(transformers.__version__)
    """
)


# ---------------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------------
def load_env(version: str, tmp_path: Path) -> dict[str, str]:
    """Environment variables of a load: offline, without PYTHONPATH, remote code cached apart."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TOKENIZERS_PARALLELISM="false")
    env.update(ENVIRONMENTS[version][1])
    return env


@pytest.mark.slow
@SKIP_ENVIRONMENTS
@pytest.mark.parametrize("version", list(SUPPORTED))
def test_saved_folders_run_the_same(version, reference, tmp_path):
    python = env_python(version)
    root, expected = reference
    env = load_env(version, tmp_path)
    checkout = str(Path(__file__).resolve().parents[1])
    args = [
        ",".join(BLOCKED),
        checkout,
        str(root),
        ",".join(expected),
        str(tmp_path),
        json.dumps([PRE, POST, NEW_TOKENS]),
    ]
    result = subprocess.run(
        [str(python), "-c", LOAD_SCRIPT, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stdout.strip().splitlines()[-1] == version
    # Nothing deprecated is used: what a newer release warns about is what a later one removes.
    deprecations = [line for line in result.stderr.splitlines() if "deprecat" in line.lower()]
    assert not deprecations, deprecations
    for name, reference_outputs in expected.items():
        found = dict(np.load(tmp_path / f"{name}.npz"))
        assert sorted(found) == sorted(reference_outputs), name
        for key, value in reference_outputs.items():
            if key == "logits":
                np.testing.assert_allclose(found[key], value, rtol=0, atol=1e-5, err_msg=f"{name}: {key}")
            elif key == "step_logits":  # the decoding step's float sums differ by version (1.1e-5 seen under 5.16.1)
                np.testing.assert_allclose(found[key], value, rtol=0, atol=1e-4, err_msg=f"{name}: {key}")
            else:
                np.testing.assert_array_equal(found[key], value, err_msg=f"{name}: {key}")


@pytest.mark.slow
@SKIP_ENVIRONMENTS
def test_below_the_floor_stops_with_the_range(reference, tmp_path):
    """Under an older transformers, loading stops at once with the range, not deep inside transformers."""
    python = env_python(BELOW_FLOOR)
    root, expected = reference
    script = textwrap.dedent(
        """
        import json, sys, traceback
        from transformers import AutoModelForCausalLM, AutoProcessor

        errors = []
        for auto in (AutoModelForCausalLM, AutoProcessor):
            try:
                auto.from_pretrained(sys.argv[1], trust_remote_code=True)
            except Exception as error:
                where = traceback.extract_tb(error.__traceback__)[-1].filename
                errors.append([type(error).__name__, str(error), where])
        print(json.dumps(errors))
        """
    )
    folder = str(root / next(iter(expected)))
    result = subprocess.run(
        [str(python), "-c", script, folder],
        cwd=tmp_path,
        env=load_env(BELOW_FLOOR, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    errors = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(errors) == 2, errors
    for kind, message, where in errors:
        assert kind == "ImportError", (kind, message, where)
        assert "transformers_modules" in where and where.endswith("compat_opentslm.py"), where  # the folder's copy
        assert f"needs transformers >= {TRANSFORMERS_FLOOR}" in message and f"found {BELOW_FLOOR}" in message
        assert TRANSFORMERS_NEWEST_TESTED in message


@pytest.mark.parametrize("version", ["5.16.1", "5.16.1.dev0", "5.24.0", "6.0.0"])
def test_version_check_passes(version):
    check_transformers_version(version)


@pytest.mark.parametrize("version", ["4.57.6", "5.15.1", "5.16.0"])
def test_version_check_stops_older(version):
    with pytest.raises(
        ImportError, match=rf"needs transformers >= 5\.16\.1 \(tested 5\.16\.1 to 5\.25\.0\); found {version}"
    ):
        check_transformers_version(version)


def test_readme_and_model_cards_state_the_range():
    from opentslm_hub.publish import COMPATIBILITY_CARD_SECTION

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"### Compatibility: transformers {TRANSFORMERS_FLOOR} to {TRANSFORMERS_NEWEST_TESTED}" in readme
    assert f'SUPPORTED_TRANSFORMERS = "{SUPPORTED_TRANSFORMERS}"' in readme
    assert f"`{SUPPORTED_TRANSFORMERS}`" in COMPATIBILITY_CARD_SECTION
    # The range is the tested one: its ends are environments of test_saved_folders_run_the_same.
    assert {TRANSFORMERS_FLOOR, TRANSFORMERS_NEWEST_TESTED} <= set(SUPPORTED)


@pytest.mark.parametrize(
    "text_config",
    [None, {"hidden_size": 32, "num_attention_heads": 4}, tiny_text_config("qwen2", 401), "instance"],
    ids=["none", "dict-without-model-type", "dict", "instance"],
)
def test_sub_config_fallback_builds_what_sub_config_spec_builds(monkeypatch, text_config):
    """Under a transformers without SubConfigSpec (< 5.20) the config builds its sub-configs itself; the same ones."""
    from modeling_opentslm import configuration_opentslm

    if text_config == "instance":
        text_config = OpenTSLMConfig(text_config=tiny_text_config("llama", 401)).text_config
    encoder_config = None if text_config is None else dict(TINY_ENCODER)
    expected = OpenTSLMConfig(text_config=text_config, encoder_config=encoder_config, ts_token_id=400)
    monkeypatch.setattr(configuration_opentslm, "SubConfigSpec", None)
    monkeypatch.setattr(OpenTSLMConfig, "sub_configs_defaults", {})
    fallback = OpenTSLMConfig(text_config=text_config, encoder_config=encoder_config, ts_token_id=400)
    assert type(fallback.text_config) is type(expected.text_config)
    assert type(fallback.encoder_config) is type(expected.encoder_config)
    assert fallback.to_dict() == expected.to_dict()
