"""OpenTSLM-Flamingo: perceiver resampler + gated cross-attention, tested like SP (tiny random configs of several
LLM families, built in the test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from remote_code import run_without_the_package
from tiny import (
    assert_batched_equals_unbatched,
    prompts,
    series_batch,
    tiny_flamingo,
    tiny_opentslm,
    tiny_processor,
    tiny_text_config,
    tiny_tokenizer,
)
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM, OpenTSLMProcessor
from modeling_opentslm.modeling_opentslm import OpenTSLMMediaCache, OpenTSLMMediaContext
from recipes.collator import encode_with_answers

FAMILIES = ["llama", "qwen2", "gemma3"]


def make_processor() -> OpenTSLMProcessor:
    return tiny_processor(placeholders="per_series")


@pytest.fixture(scope="module")
def processor():
    return make_processor()


def test_processor_writes_one_marker_per_series(processor):
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    markers = (inputs["input_ids"] == processor.ts_token_id).sum(-1).tolist()
    assert markers == [3, 1, 2]  # one per channel entry: the 2-channel series is two
    text = processor.tokenizer.decode(inputs["input_ids"][1], skip_special_tokens=False)
    assert "it has mean 2.5000 and std 3.5502:<ts>\n" in text.replace("<|endoftext|>", "")


@pytest.mark.parametrize("family", FAMILIES)
def test_closed_gates_give_the_bare_llms_logits(family, processor):
    model = tiny_flamingo(processor, family, open_gates=False)
    bare = AutoModelForCausalLM.from_config(AutoConfig.for_model(**tiny_text_config(family, len(processor.tokenizer))))
    weights = {
        key.replace("model.language_model.", "model."): value
        for key, value in model.state_dict().items()
        if key.startswith("model.language_model.")
    }
    bare.load_state_dict({**weights, "lm_head.weight": model.lm_head.weight}, strict=True)
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(**inputs).logits
        theirs = bare(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], position_ids=positions)
    keep = torch.arange(ours.shape[-1]) != processor.ts_token_id
    torch.testing.assert_close(ours[..., keep], theirs.logits[..., keep], rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_unbatched(family, processor):
    assert_batched_equals_unbatched(tiny_flamingo(processor, family), processor, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_generation_equals_one_by_one_and_reuses_the_media(family, processor):
    model = tiny_flamingo(processor, family)
    batch = series_batch()
    texts = prompts(processor, batch)
    inputs = processor(text=texts, time_series=batch)
    calls = []
    handles = [b.kv_proj.register_forward_hook(lambda *a: calls.append(1)) for b in model.cross_attention_layers]
    resampled = []
    handles.append(model.resampler.register_forward_hook(lambda *a: resampled.append(1)))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    # The series are resampled once, and each block projects its keys/values once, at prefill.
    assert len(resampled) == 1 and len(calls) == len(model.cross_attention_layers)
    for handle in handles:
        handle.remove()
    with torch.no_grad():
        recomputed = model.generate(**inputs, max_new_tokens=6, do_sample=False, use_cache=False)
        assert torch.equal(out, recomputed)
        for i, (text, sample) in enumerate(zip(texts, batch)):
            one = model.generate(**processor(text=text, time_series=sample), max_new_tokens=6, do_sample=False)
            assert one[0, -6:].tolist() == out[i, -6:].tolist()
        # Beam search and sampling carry the media cache too (beams of one sample share its series).
        beams = model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False)
        beams_recomputed = model.generate(**inputs, max_new_tokens=4, num_beams=3, do_sample=False, use_cache=False)
        assert torch.equal(beams, beams_recomputed)
        torch.manual_seed(0)
        sampled = model.generate(**inputs, max_new_tokens=4, do_sample=True, top_p=0.9)
        torch.manual_seed(0)
        assert torch.equal(
            sampled, model.generate(**inputs, max_new_tokens=4, do_sample=True, top_p=0.9, use_cache=False)
        )


def test_series_reach_only_the_text_after_their_marker(processor):
    model = tiny_flamingo(processor, "llama")
    text = "Before the series. <ts> between them <ts> after both."
    first, second = np.sin(np.arange(24) / 3), np.linspace(0, 1, 16)
    markers = processor(text=text, time_series=[first, second])["input_ids"][0] == processor.ts_token_id
    first_marker, second_marker = [int(i) for i in torch.nonzero(markers)]
    with torch.no_grad():
        base = model(**processor(text=text, time_series=[first, second])).logits[0]
        # Reversed series: the same mean and std, so the same text, but other values.
        other_second = model(**processor(text=text, time_series=[first, second[::-1]])).logits[0]
        other_first = model(**processor(text=text, time_series=[first[::-1], second])).logits[0]
    # Changing the second series changes nothing before its marker, and does change what follows it.
    torch.testing.assert_close(base[:second_marker], other_second[:second_marker], rtol=0, atol=0)
    assert (base[second_marker:] - other_second[second_marker:]).abs().max() > 1e-4
    # Text before the first marker never sees a series; after it, the first series matters everywhere.
    torch.testing.assert_close(base[:first_marker], other_first[:first_marker], rtol=0, atol=0)
    assert (base[first_marker:] - other_first[first_marker:]).abs().max() > 1e-4


def test_original_media_attention_mode_is_a_flag():
    """The original's masks: one media item per sample, tokens after a second marker see every latent equally."""
    key_media = torch.tensor([[0, 0, 0]])
    text_time = torch.tensor([[0, 1, 1, 2, 3]])
    cache = OpenTSLMMediaCache(torch.zeros(1, 3, 4), key_media, torch.zeros(1, dtype=torch.long), "original")
    additive, blind = OpenTSLMMediaContext(cache, text_time).attention_mask(torch.float32)
    assert blind[0, 0, :, 0].tolist() == [True, False, False, False, False]
    allowed = additive[0, 0] == 0
    assert allowed.tolist() == [[False] * 3, [True] * 3, [True] * 3, [False] * 3, [False] * 3]
    per_series = OpenTSLMMediaCache(
        torch.zeros(1, 4, 4), torch.tensor([[0, 0, 1, 1]]), cache.markers_seen, "per_series"
    )
    additive, blind = OpenTSLMMediaContext(per_series, text_time).attention_mask(torch.float32)
    assert (additive[0, 0] == 0).tolist() == [[False] * 4, [True, True, False, False], [True, True, False, False]] + [
        [True] * 4
    ] * 2
    assert blind[0, 0, :, 0].tolist() == [True, False, False, False, False]
    # The whole model runs in that mode too (all series of a sample resampled together).
    processor = make_processor()
    model = tiny_flamingo(processor, "llama", media_attention="original")
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_loss_only_on_answers_and_training_moves_the_gates(processor):
    model = tiny_flamingo(processor, "llama", open_gates=False).train()
    model.set_trainable(encoder=True, projector=True, llm=False)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(
        n.startswith(("model.time_series_encoder.", "model.resampler.", "model.cross_")) for n in trainable
    )
    batch = series_batch()
    inputs = encode_with_answers(processor, prompts(processor, batch), ["up", "down then up", "flat"], batch)
    labelled = inputs["labels"] != -100
    assert (inputs["input_ids"][labelled] != processor.ts_token_id).all()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    assert any(block.attention_gate.abs().item() > 0 for block in model.cross_attention_layers)
    model.set_trainable(encoder=False, projector=False, llm=False, embeddings=True)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"model.language_model.embed_tokens.weight"}


@pytest.mark.parametrize("architecture", ["sp", "flamingo"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(architecture):
    flamingo = architecture == "flamingo"
    processor = make_processor() if flamingo else tiny_processor()
    batch = series_batch()
    inputs = encode_with_answers(processor, prompts(processor, batch), ["a", "b c", "d"], batch)
    results = []
    for checkpointing in (False, True):
        model = (tiny_flamingo(processor, "qwen2") if flamingo else tiny_opentslm(processor, "qwen2")).train()
        model.set_trainable(encoder=True, projector=True, llm=True)
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert any(getattr(module, "gradient_checkpointing", False) for module in model.language_model.modules())
        loss = model(**inputs).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_a, loss_b)
    bridge = "cross_attention" if flamingo else "projector"
    assert grads_a.keys() == grads_b.keys() and any(bridge in n for n in grads_a)
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-6, rtol=1e-5)


def test_trainable_parts_stay_fp32_under_a_bf16_llm(tmp_path, processor):
    tiny_flamingo(processor, "llama").save_pretrained(tmp_path)
    model = OpenTSLMForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    for part in (model.time_series_encoder, model.resampler, model.cross_attention_layers):
        assert all(p.dtype == torch.float32 for p in part.parameters())
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


def test_bad_inputs_give_clear_errors(processor):
    model = tiny_flamingo(processor, "llama")
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    with pytest.raises(ValueError, match=r"\[3, 1, 2\] series markers per sample but the series give \[2, 1, 2\]"):
        model(**{**inputs, "time_series_mask": inputs["time_series_mask"] * torch.tensor([1, 1, 0])[None, :, None]})
    with pytest.raises(ValueError, match="markers but no time_series"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with pytest.raises(ValueError, match="needs input_ids"):
        model(inputs_embeds=torch.zeros(1, 3, 32))
    sp_processor = OpenTSLMProcessor(tokenizer=processor.tokenizer)
    sp_inputs = sp_processor(text=prompts(sp_processor, batch), time_series=batch)
    with pytest.raises(ValueError, match="one marker per series"):
        model(**sp_inputs)
    with pytest.raises(StrictDataclassError, match="architecture must be one of"):
        OpenTSLMConfig(architecture="perceiver")
    with pytest.raises(StrictDataclassError, match="leaves no gated cross-attention block in a decoder of 2 layers"):
        OpenTSLMConfig(text_config=tiny_text_config("llama", 401), architecture="flamingo")  # every 4th by default


def test_text_only_forward_and_generate(processor):
    model = tiny_flamingo(processor, "gemma3")
    inputs = processor(text=["just text", "more text here"])
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
        assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 2


def test_from_llm_builds_flamingo_around_a_saved_llm(tmp_path):
    llm_dir = tmp_path / "llm"
    config = LlamaConfig(**{k: v for k, v in tiny_text_config("llama", 400).items() if k != "model_type"})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(llm_dir)
    tiny_tokenizer().save_pretrained(llm_dir)
    with pytest.raises(ValueError, match="placeholders='per_series'"):
        OpenTSLMForCausalLM.from_llm(str(llm_dir), OpenTSLMProcessor.from_llm(str(llm_dir)), architecture="flamingo")
    processor = OpenTSLMProcessor.from_llm(str(llm_dir), placeholders="per_series")
    model = OpenTSLMForCausalLM.from_llm(
        str(llm_dir), processor, architecture="flamingo", config_overrides={"cross_attention_every_n_layers": 2}
    )
    assert model.config.encoder_config.num_hidden_layers == 0 and model.time_series_encoder.encoder is None
    assert len(model.cross_attention_layers) == 1  # 2 decoder layers, a block before every second one
    assert not any(p.device.type == "meta" for p in model.parameters())
    assert all(block.attention_gate.item() == 0 for block in model.cross_attention_layers)
    # The new marker row starts at the mean of the other embeddings, not at random.
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[400], embeddings[:400].mean(0), atol=0.05, rtol=0)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"time_series_encoder", "resampler", "cross_attention_layers"}
    inputs = processor(text=prompts(processor, series_batch()), time_series=series_batch())
    assert model.generate(**inputs, max_new_tokens=2, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 2


def test_save_load_and_trust_remote_code_without_the_package(tmp_path, processor):
    model = tiny_flamingo(processor, "qwen2")
    folder = tmp_path / "opentslm-flamingo-tiny"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    with torch.no_grad():
        expected = model(**inputs).logits[:, -1]
        expected_tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)[:, -4:].tolist()
        reloaded = OpenTSLMForCausalLM.from_pretrained(folder).eval()
        torch.testing.assert_close(reloaded(**inputs).logits[:, -1], expected, rtol=0, atol=0)
    out = run_without_the_package(folder, cwd=tmp_path)
    assert out["architecture"] == "flamingo" and out["placeholders"] == "per_series"
    np.testing.assert_allclose(out["logits"], expected.tolist(), atol=1e-5)
    assert out["tokens"] == expected_tokens


def test_maxent_ts_refuses_flamingo_clearly(processor):
    from maxent_ts import maxent_ts_generate

    model = tiny_flamingo(processor, "llama")
    inputs = processor(text=prompts(processor, series_batch()[:1]), time_series=series_batch()[:1])
    with pytest.raises(NotImplementedError, match="does not support OpenTSLM-Flamingo"):
        maxent_ts_generate(model, inputs, lambda texts, context: [0.0] * len(texts), max_new_tokens=2)
