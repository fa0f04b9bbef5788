"""The recipes' speed settings: `dtype: auto` (bf16 only where the device computes it natively) and padding-free
batches (`padding_free: true`), which train exactly as padded ones."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from test_recipes import SHORT_RUN, assets, parse, run_script, write_config  # noqa: F401 (assets is a fixture)

from recipes import sft
from recipes.sft import auto_dtype, resolve_dtype, validate_arguments

X86_WITHOUT_BF16 = {"fpu", "sse4_2", "avx2", "avx512f", "avx512bw", "avx512_vnni"}


def test_auto_picks_fp32_on_a_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(sft, "cpu_flags", lambda: set(X86_WITHOUT_BF16))
    monkeypatch.setattr(sft, "bf16_matmul_is_fast", lambda: pytest.fail("flags are conclusive: no timing"))
    dtype, reason = auto_dtype("cpu")
    assert dtype == torch.float32 and "no native bf16" in reason


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_auto_picks_bf16_on_a_cpu_with_bf16_units(monkeypatch, flag):
    monkeypatch.setattr(sft, "cpu_flags", lambda: X86_WITHOUT_BF16 | {flag})
    dtype, reason = auto_dtype("cpu")
    assert dtype == torch.bfloat16 and flag in reason


@pytest.mark.parametrize("fast", [True, False])
def test_auto_times_a_matmul_when_the_flags_say_nothing(monkeypatch, fast):
    monkeypatch.setattr(sft, "cpu_flags", lambda: None)
    monkeypatch.setattr(sft, "bf16_matmul_is_fast", lambda: (fast, 0.8 if fast else 9.0))
    dtype, reason = auto_dtype("cpu")
    assert dtype == (torch.bfloat16 if fast else torch.float32) and "matmul" in reason


def test_auto_on_cuda_follows_bf16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "GPU")
    for supported, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert auto_dtype("cuda")[0] == expected


def test_auto_on_this_cpu(caplog):
    flags = sft.cpu_flags() or set()
    with caplog.at_level(logging.INFO, logger="recipes.sft"):
        dtype = resolve_dtype("auto", "cpu")
    if flags & {"avx512_bf16", "amx_bf16"}:
        assert dtype == torch.bfloat16
    elif {"avx2", "sse4_2"} & flags:  # an x86 CPU without bf16 units
        assert dtype == torch.float32
    assert f"dtype auto: {str(dtype).removeprefix('torch.')}, since" in caplog.text
    assert resolve_dtype("float32", "cpu") == torch.float32 and resolve_dtype(None, "cpu") is None


def test_bf16_llm_keeps_encoder_projector_and_lora_in_fp32(tmp_path):
    from tiny import TINY_ENCODER, save_tiny_llm

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor

    llm = save_tiny_llm(tmp_path / "llm")
    model = OpenTSLMForCausalLM.from_llm(
        llm, OpenTSLMProcessor.from_llm(llm), encoder_config=TINY_ENCODER, dtype=torch.bfloat16
    )
    model.add_lora(r=4, lora_alpha=8)
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    assert all(d == torch.float32 for n, d in dtypes.items() if "time_series_encoder" in n or "projector" in n)
    assert all(d == torch.float32 for n, d in dtypes.items() if "lora_" in n)
    assert model.language_model.embed_tokens.weight.dtype == torch.bfloat16


def test_padding_free_is_refused_where_it_does_not_apply(tmp_path):
    base = ["--dataset_name", "offline:tsqa_synthetic", "--model_name_or_path", "x", "--output_dir", str(tmp_path)]
    base += ["--bf16", "false", "--remove_unused_columns", "false", "--padding_free", "true"]
    with pytest.raises(ValueError, match="padding_free works with architecture 'sp' only"):
        validate_arguments(*parse([*base, "--architecture", "flamingo"]))
    with pytest.raises(ValueError, match="Set packing: false"):
        validate_arguments(*parse([*base, "--packing", "true"]))


def logged_losses(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [
        entry.get("loss", entry.get("eval_loss"))
        for entry in state["log_history"]
        if {"loss", "eval_loss"} & set(entry)
    ]


def test_padding_free_recipe_trains_and_evaluates_like_the_padded_one(tmp_path, assets):  # noqa: F811
    losses = {}
    for padding_free in (False, True):
        folder = tmp_path / f"padding_free_{padding_free}"
        run = dict(SHORT_RUN, max_steps=2, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2)
        config = write_config(folder, assets, padding_free=padding_free, dtype="auto", **run)
        result = run_script([sys.executable, "recipes/stage2.py", "--config", str(config)])
        assert "dtype auto: " in result.stderr
        losses[padding_free] = logged_losses(folder / "out" / "checkpoint-2")
    assert len(losses[True]) == 3  # two training steps and one evaluation
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-4)
