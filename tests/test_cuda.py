"""On a CUDA GPU: the SP and Flamingo models, packed training and MaxEnt-TS give the CPU's numbers, bf16 runs, and
`dtype: auto` picks bf16. Tiny random configs; skipped on machines without a GPU (the recipe tests in
`test_recipes.py` train on the GPU by themselves where there is one)."""

from __future__ import annotations

import os

import pytest
import torch
from tiny import prompts, series_batch, tiny_flamingo, tiny_opentslm, tiny_processor

# cuBLAS needs this before its first call to run under torch.use_deterministic_algorithms (pytest imports every test
# module before the first test runs).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ANSWERS = ["It rises.", "A flat line with noise", "(b) falls sharply after a peak"]


@pytest.fixture(autouse=True)
def exact_fp32():
    """fp32 on the GPU as on the CPU: no TF32 in matmuls or convolutions (cuDNN allows it by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def model_and_processor(variant: str, family: str):
    if variant == "sp":
        processor = tiny_processor()
        return tiny_opentslm(processor, family), processor
    processor = tiny_processor(placeholders="per_series")
    return tiny_flamingo(processor, family), processor


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
@pytest.mark.parametrize("variant", ["sp", "flamingo"])
def test_logits_and_greedy_tokens_equal_the_cpus(variant, family):
    model, processor = model_and_processor(variant, family)
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    with torch.no_grad():
        cpu_logits = model(**inputs).logits
    cpu_tokens = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    model.to("cuda")
    on_gpu = inputs.to("cuda")
    with torch.no_grad():
        gpu_logits = model(**on_gpu).logits
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, atol=1e-4, rtol=1e-4)
    gpu_tokens = model.generate(**on_gpu, max_new_tokens=8, do_sample=False)
    assert gpu_tokens.device.type == "cuda"
    assert gpu_tokens.cpu().tolist() == cpu_tokens.tolist()


@pytest.mark.parametrize("variant", ["sp", "flamingo"])
def test_bf16_llm_on_the_gpu_keeps_trained_parts_fp32_and_follows_fp32(tmp_path, variant):
    from modeling_opentslm import OpenTSLMForCausalLM
    from recipes.sft import auto_dtype

    assert auto_dtype("cuda")[0] == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    model, processor = model_and_processor(variant, "llama")
    model.save_pretrained(tmp_path)
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch()).to("cuda")
    reference = OpenTSLMForCausalLM.from_pretrained(tmp_path).to("cuda").eval()
    half = OpenTSLMForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).to("cuda").eval()
    assert half.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in half.time_series_encoder.parameters())
    with torch.no_grad():
        expected = torch.softmax(reference(**inputs).logits.float(), -1)
        got = torch.softmax(half(**inputs).logits.float(), -1)
    assert torch.isfinite(got).all()
    assert (got - expected).abs().max().item() < 2e-2
    out = half.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4


def test_packed_varlen_training_step_equals_padded_sdpa_deterministically():
    """Loss and gradients of a packed batch through `opentslm_varlen` equal the padded batch through SDPA, on the GPU
    under torch.use_deterministic_algorithms, and the CPU's loss."""
    from recipes.collator import encode_with_answers

    processor = tiny_processor()
    batch = series_batch()
    args = (processor, prompts(processor, batch), ANSWERS, batch)
    padded, packed = encode_with_answers(*args), encode_with_answers(*args, padding_free=True)
    model = tiny_opentslm(processor, "llama").float().train()
    model.set_attn_implementation("sdpa")
    cpu_loss = model(**padded).loss.detach()
    model.to("cuda")
    results = {}
    torch.use_deterministic_algorithms(True)
    try:
        for attention, inputs in (("sdpa", padded), ("opentslm_varlen", packed)):
            model.set_attn_implementation(attention)
            model.zero_grad(set_to_none=True)
            loss = model(**inputs.to("cuda")).loss
            loss.backward()
            grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
            results[attention] = loss.detach(), grads
    finally:
        torch.use_deterministic_algorithms(False)
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results["sdpa"], results["opentslm_varlen"]
    torch.testing.assert_close(padded_loss.cpu(), cpu_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed_loss, padded_loss, atol=1e-5, rtol=1e-5)
    assert len(padded_grads) > 10 and packed_grads.keys() == padded_grads.keys()
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_maxent_ts_on_the_gpu_makes_the_cpus_choices():
    from maxent_ts import MaxEntTSConfig, SpectralReward, maxent_ts_generate

    processor = tiny_processor()
    model = tiny_opentslm(processor, "llama")
    text = processor.format_prompt("You are an expert in time series analysis.", "Continue.", num_series=1)
    series = torch.sin(torch.arange(48) / 3.0).numpy()
    inputs = processor(text=text, time_series=[[series]])
    search = MaxEntTSConfig(num_rollouts=12, max_depth=3, rollout_batch_size=4)

    def run(inputs):
        return model.generate(
            **inputs,
            custom_generate=maxent_ts_generate,
            reward=SpectralReward(history=series, horizon=8),
            search_config=search,
            seed=0,
            max_new_tokens=10,
            tokenizer=processor,
        )

    on_cpu = run(inputs)
    model.to("cuda")
    on_gpu = run(inputs.to("cuda"))
    assert on_gpu.sequences.device.type == "cuda"
    assert on_gpu.sequences.cpu().tolist() == on_cpu.sequences.tolist()
    assert [s.nfe for s in on_gpu.stats] == [s.nfe for s in on_cpu.stats]


def test_stage_script_trains_on_the_gpu_with_the_default_models_settings(tmp_path):
    """A stage script on the GPU as the default model's configs run it: `dtype: auto` (bf16 here), packed rows through
    `opentslm_varlen`, per-sample loss weights, LoRA on a frozen LLM; run_test generates on the GPU too."""
    import json
    import sys

    from safetensors.torch import load_file
    from test_recipes import SHORT_RUN, run_script, write_config
    from tiny import save_tiny_llm, save_toy_records

    assets = {"llm": save_tiny_llm(tmp_path / "llm"), "data": save_toy_records(tmp_path / "data")}
    config = write_config(
        tmp_path / "run",
        assets,
        **{**SHORT_RUN, "max_steps": 12},
        dtype="auto",
        padding_free=True,
        attn_implementation="opentslm_varlen",
        loss_weighting="sample",
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        run_test=True,
        eval_max_new_tokens=6,
        max_test_samples=4,
    )
    result = run_script([sys.executable, "recipes/stage2.py", "--config", str(config)])
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    assert f"dtype auto: {expected}" in result.stdout + result.stderr
    out = tmp_path / "run" / "out"
    metrics = json.loads((out / "stage_metrics.json").read_text())
    assert metrics["completed"] is True and metrics["train"]["train_loss"] > 0
    assert metrics["test_generation"]["num_samples"] == 4
    weights = load_file(str(out / "best" / "model.safetensors"))
    lora_b = [k for k in weights if "lora_B" in k]
    assert lora_b and max(weights[k].abs().max().item() for k in lora_b) > 0, "the adapters trained"


def test_demo_serves_a_loaded_model_on_the_gpu(tmp_path):
    import numpy as np

    import app

    model, processor = model_and_processor("sp", "llama")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    app.load_model.cache_clear()
    try:
        loaded = app.load_model(str(tmp_path), None)
        assert loaded.model.device.type == "cuda"
        values = np.sin(np.arange(40) / 3.0)[None, :]
        inputs = app.make_inputs(loaded.processor, app.PRE_PROMPT, app.CAPTION_PROMPT, ["x"], values)
        texts = list(app.stream_answer(loaded.model, loaded.processor, inputs.to(loaded.model.device), 6, False))
        assert texts and isinstance(texts[-1], str)
    finally:
        app.load_model.cache_clear()
