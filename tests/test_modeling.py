"""Model tests in the transformers tester style: tiny random configs of several LLM families, built in the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from remote_code import run_without_the_package
from tiny import (
    POST,
    PRE,
    TINY_ENCODER,
    assert_batched_equals_unbatched,
    prompts,
    series_batch,
    tiny_opentslm,
    tiny_processor,
    tiny_text_config,
    tiny_tokenizer,
)
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor, LlamaConfig, LlamaForCausalLM

from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM, OpenTSLMModel, OpenTSLMProcessor
from recipes.collator import encode_with_answers

FAMILIES = ["llama", "qwen2", "gemma3"]


def make_processor() -> OpenTSLMProcessor:
    return tiny_processor()


def make_model(family: str, processor: OpenTSLMProcessor, seed: int = 0) -> OpenTSLMForCausalLM:
    return tiny_opentslm(processor, family, seed)


@pytest.fixture(scope="module")
def processor():
    return make_processor()


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------
def test_config_round_trip(tmp_path, processor):
    config = OpenTSLMConfig(
        text_config=tiny_text_config("qwen2", 401),
        encoder_config=dict(TINY_ENCODER, dropout=0.1),
        ts_token_id=400,
        projector_dropout=0.2,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "opentslm"
    assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_opentslm.OpenTSLMForCausalLM"
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, OpenTSLMConfig)
    assert reloaded.text_config.model_type == "qwen2"
    assert reloaded.text_config.hidden_size == 32
    assert reloaded.encoder_config.to_dict() == config.encoder_config.to_dict()
    assert reloaded.encoder_config.max_series_length == 64 * 4
    assert reloaded.ts_token_id == 400 and reloaded.projector_dropout == 0.2
    assert reloaded.tie_word_embeddings  # inherited from the tied qwen2 text config
    assert OpenTSLMConfig.from_dict(config.to_dict()).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("encoder_config", "message"),
    [
        (dict(hidden_size=30, num_attention_heads=4), "divisible"),
        (dict(patch_size=0), "patch_size"),
        (dict(hidden_act="swish"), "hidden_act"),
    ],
)
def test_config_rejects_bad_encoder_values(encoder_config, message):
    # transformers' strict configs wrap the ValueError of a validator; the message is kept.
    with pytest.raises((ValueError, StrictDataclassError), match=message):
        OpenTSLMConfig(text_config=tiny_text_config("llama", 401), encoder_config=encoder_config)


def test_config_rejects_encoder_decoder_llm():
    with pytest.raises((ValueError, StrictDataclassError), match="decoder-only"):
        OpenTSLMConfig(text_config=dict(model_type="t5", vocab_size=100, d_model=32, num_layers=1, num_heads=2))


# ---------------------------------------------------------------------------------------------------------------------
# Forward, loss, save/load
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_unbatched(family, processor):
    assert_batched_equals_unbatched(make_model(family, processor), processor, atol=1e-4, rtol=0)


def test_series_change_the_output(processor):
    model = make_model("llama", processor)
    text = processor.format_prompt(PRE, POST, 1)
    with torch.no_grad():
        a = model(**processor(text=text, time_series=[np.sin(np.arange(40) / 4)])).logits[0, -1]
        b = model(**processor(text=text, time_series=[np.cos(np.arange(40) / 4)])).logits[0, -1]
    assert (a - b).abs().max() > 1e-3


def test_loss_only_on_answer_tokens(processor):
    model = make_model("llama", processor)
    text = processor.format_prompt(PRE, POST, 1)
    answer = "The series rises steadily"
    inputs = encode_with_answers(
        processor, [text, text + " Answer:"], [answer, "falls"], [[np.arange(10.0)], [np.arange(30.0)]]
    )
    tokenizer = processor.tokenizer
    for row, target in enumerate([answer, "falls"]):
        answer_ids = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labelled = inputs["labels"][row][inputs["labels"][row] != -100].tolist()
        assert labelled == answer_ids  # exactly the answer and its EOS, counted by hand
        # ... at the end of the row (left padding), and never on padding or placeholder positions.
        assert inputs["labels"][row, -len(answer_ids) :].tolist() == answer_ids
        assert (inputs["labels"][row][inputs["attention_mask"][row] == 0] == -100).all()
        assert (inputs["labels"][row][inputs["input_ids"][row] == processor.ts_token_id] == -100).all()

    with torch.no_grad():
        out = model(**inputs)
    logits = out.logits[:, :-1].float()
    labels = inputs["labels"][:, 1:]
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_identical_logits(tmp_path, family, processor):
    model = make_model(family, processor)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    assert (tmp_path / "modeling_opentslm.py").exists() and (tmp_path / "configuration_opentslm.py").exists()
    assert (tmp_path / "processing_opentslm.py").exists()

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, OpenTSLMForCausalLM) and isinstance(reloaded_processor, OpenTSLMProcessor)
    assert reloaded_processor.ts_token_id == processor.ts_token_id
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    again = reloaded_processor(text=prompts(reloaded_processor, batch), time_series=batch)
    for key in inputs:
        torch.testing.assert_close(inputs[key], again[key], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reloaded(**inputs).logits, rtol=0, atol=0)
    assert isinstance(AutoModel.from_pretrained(tmp_path), OpenTSLMModel)


def test_trust_remote_code_without_the_package(tmp_path, processor):
    """A folder written by save_pretrained loads with trust_remote_code in a process that cannot import us."""
    model = make_model("qwen2", processor)
    folder = tmp_path / "opentslm-tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    with torch.no_grad():
        expected = model(**inputs).logits[:, -1].tolist()
        expected_tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, -4:].tolist()
    out = run_without_the_package(folder, cwd=tmp_path)
    assert out["cls"] == "OpenTSLMForCausalLM"
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)
    assert out["tokens"] == expected_tokens


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "mode", [dict(do_sample=False), dict(do_sample=True, top_p=0.9, temperature=0.8), dict(num_beams=3)]
)
def test_generate_modes(family, mode, processor):
    model = make_model(family, processor)
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, **mode)
    assert out.shape == (len(batch), inputs["input_ids"].shape[1] + 6)
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])
    assert not (out[:, inputs["input_ids"].shape[1] :] == processor.ts_token_id).any()


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_one_by_one(family, processor):
    model = make_model(family, processor)
    batch = series_batch()
    texts = prompts(processor, batch)
    inputs = processor(text=texts, time_series=batch)
    batched = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)[:, -8:]
    for i, (text, sample) in enumerate(zip(texts, batch)):
        single = model.generate(
            **processor(text=text, time_series=sample), max_new_tokens=8, min_new_tokens=8, do_sample=False
        )[:, -8:]
        assert batched[i].tolist() == single[0].tolist()


def test_series_are_encoded_at_prefill_only(processor):
    model = make_model("llama", processor)
    calls = []
    encode = model.model.get_time_series_features  # one call encodes the batch (one encoder run per series length)
    model.model.get_time_series_features = lambda *args: (calls.append(1), encode(*args))[1]
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    model.generate(**inputs, max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert len(calls) == 1
    calls.clear()
    model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, num_beams=2)
    assert len(calls) == 1


def test_kv_cache_matches_full_recompute(processor):
    model = make_model("gemma3", processor)
    text = processor.format_prompt(PRE, POST, 1)
    inputs = processor(text=text, time_series=[np.sin(np.arange(50) / 5)])
    with torch.no_grad():
        prefill = model(**inputs, use_cache=True)
        next_token = prefill.logits[:, -1].argmax(-1, keepdim=True)
        attention_mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_token)], dim=1)
        step = model(input_ids=next_token, attention_mask=attention_mask, past_key_values=prefill.past_key_values)
        full = model(
            input_ids=torch.cat([inputs["input_ids"], next_token], dim=1),
            attention_mask=attention_mask,
            time_series=inputs["time_series"],
            time_series_mask=inputs["time_series_mask"],
        )
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Checks at the model boundary, dtype, trainable parts
# ---------------------------------------------------------------------------------------------------------------------
def test_placeholder_count_mismatch_names_both_counts(processor):
    model = make_model("llama", processor)
    inputs = processor(text=processor.format_prompt(PRE, POST, 1), time_series=[np.arange(16.0)])
    inputs["input_ids"][0, -1] = processor.ts_token_id  # one placeholder too many
    with pytest.raises(ValueError, match=r"5 time-series placeholder tokens but the series give 4"):
        model(**inputs)
    del inputs["time_series"], inputs["time_series_mask"]
    with pytest.raises(ValueError, match="no time_series was given"):
        model(**inputs)


def test_bad_time_series_shape_is_rejected(processor):
    model = make_model("llama", processor)
    inputs = processor(text=processor.format_prompt(PRE, POST, 1), time_series=[np.arange(16.0)])
    with pytest.raises(ValueError, match=r"\(batch, max_series, length\)"):
        model(
            input_ids=inputs["input_ids"],
            time_series=inputs["time_series"][0],
            time_series_mask=inputs["time_series_mask"][0],
        )
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(
            input_ids=inputs["input_ids"],
            time_series=inputs["time_series"][..., :-1],
            time_series_mask=inputs["time_series_mask"][..., :-1],
        )


def test_encoder_stays_fp32_when_llm_is_bf16(tmp_path, processor):
    make_model("llama", processor).save_pretrained(tmp_path)
    model = OpenTSLMForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.time_series_encoder.patch_embedding.weight.dtype == torch.float32
    assert model.projector.linear.weight.dtype == torch.float32
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_lora_adapters_stay_fp32_when_llm_is_bf16(tmp_path, processor):
    """Adapters are trained: bf16 adapters under AdamW lose most small updates, so they stay fp32 (as PEFT's
    get_peft_model keeps them), whether added to a bf16 model or loaded with dtype=bfloat16."""
    model = make_model("llama", processor).to(torch.bfloat16)
    model.add_lora(r=4, lora_alpha=8)
    lora = {name: p for name, p in model.named_parameters() if "lora_" in name}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())
    assert model.language_model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    assert model(**inputs).logits.dtype == torch.bfloat16  # PEFT casts the adapter's output back
    model.save_pretrained(tmp_path)
    reloaded = OpenTSLMForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert all(p.dtype == torch.float32 for name, p in reloaded.named_parameters() if "lora_" in name)
    assert reloaded.language_model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    reloaded.train()
    reloaded(
        **encode_with_answers(processor, prompts(processor, series_batch()), ["a", "b", "c"], series_batch())
    ).loss.backward()
    grads = [p.grad for name, p in reloaded.named_parameters() if "lora_B" in name]
    assert grads and all(g is not None and g.dtype == torch.float32 for g in grads)


def test_config_without_placeholder_id(processor):
    """Without ts_token_id the model is a plain LLM: text works, series get an error that says what to set."""
    torch.manual_seed(0)
    config = OpenTSLMConfig(
        text_config=tiny_text_config("llama", len(processor.tokenizer)), encoder_config=TINY_ENCODER
    )
    model = OpenTSLMForCausalLM(config).eval()
    text = processor(text="plain text only")
    with torch.no_grad():
        assert model(**text).logits.shape[:2] == text["input_ids"].shape
        assert model.generate(**text, max_new_tokens=2, do_sample=False).shape[1] == text["input_ids"].shape[1] + 2
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    with pytest.raises(ValueError, match="config.ts_token_id is None"):
        model(**inputs)


def test_from_llm_freezes_the_llm_and_lora_targets_it_only(tmp_path, processor):
    torch.manual_seed(0)
    llm_dir = tmp_path / "llm"
    config = LlamaConfig(**{k: v for k, v in tiny_text_config("llama", 400).items() if k != "model_type"})
    LlamaForCausalLM(config).save_pretrained(llm_dir)
    tiny_tokenizer().save_pretrained(llm_dir)

    llm_processor = OpenTSLMProcessor.from_llm(str(llm_dir))
    assert llm_processor.ts_token_id == 400 and llm_processor.tokenizer.padding_side == "left"
    model = OpenTSLMForCausalLM.from_llm(str(llm_dir), llm_processor, encoder_config=TINY_ENCODER)
    assert model.get_input_embeddings().num_embeddings == 401
    assert model.config.ts_token_id == 400
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("model.time_series_encoder.", "model.projector.")) for name in trainable)
    reference = LlamaForCausalLM.from_pretrained(llm_dir)
    torch.testing.assert_close(
        model.language_model.layers[0].self_attn.q_proj.weight, reference.model.layers[0].self_attn.q_proj.weight
    )
    assert model.time_series_encoder.position_embedding.abs().sum() > 0  # initialised, not left empty
    assert not any(p.device.type == "meta" for p in model.parameters())

    model.add_lora(r=4, lora_alpha=8)
    model.set_trainable(encoder=True, projector=True, llm=False)
    with torch.no_grad():  # LoRA B starts at zero: make the adapters matter for the round trip below
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.1)
    lora = [name for name, p in model.named_parameters() if "lora_" in name]
    assert lora and all(name.startswith("model.language_model.") for name in lora)
    assert all(p.requires_grad for name, p in model.named_parameters() if "lora_" in name)
    assert not any(
        p.requires_grad
        for name, p in model.named_parameters()
        if name.startswith("model.language_model.") and "lora_" not in name
    )

    batch = series_batch()
    inputs = encode_with_answers(llm_processor, prompts(llm_processor, batch), ["a", "b", "c"], batch)
    model.eval()
    with torch.no_grad():
        expected = model(**inputs).logits
    model.save_pretrained(tmp_path / "with-lora")
    assert json.loads((tmp_path / "with-lora" / "config.json").read_text())["lora"]["r"] == 4
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "with-lora").eval()
    assert reloaded.config.lora == model.config.lora
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="already has LoRA"):
        reloaded.add_lora()

    model.train()
    model(**inputs).loss.backward()
    assert model.time_series_encoder.patch_embedding.weight.grad is not None


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_from_llm_keeps_the_attention_the_llm_was_loaded_with(tmp_path, processor, attention):
    from tiny import save_tiny_llm

    model = OpenTSLMForCausalLM.from_llm(save_tiny_llm(tmp_path / "llm"), processor, attn_implementation=attention)
    assert {layer.self_attn.config._attn_implementation for layer in model.model.language_model.layers} == {attention}
    model.save_pretrained(tmp_path / "saved")
    other = "sdpa" if attention == "eager" else "eager"
    reloaded = OpenTSLMForCausalLM.from_pretrained(tmp_path / "saved", attn_implementation=other)
    assert {layer.self_attn.config._attn_implementation for layer in reloaded.model.language_model.layers} == {other}
