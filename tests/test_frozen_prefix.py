"""Training through a frozen LLM runs the prompt prefixes (before each sample's first series) without gradients: the
same loss and gradients as one ordinary pass, for padded, equal-length and packed batches."""

from __future__ import annotations

import pytest
import torch
from tiny import prompts, series_batch, tiny_opentslm, tiny_processor

from modeling_opentslm import modeling_opentslm
from recipes.collator import encode_with_answers

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWERS = ["It rises.", "A flat line with noise", "(b) falls sharply after a peak"]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


@pytest.fixture
def frozen_prefix_runs(monkeypatch):
    """Counts the forwards that took the two-pass path and ran both passes."""
    runs = []
    original = modeling_opentslm.OpenTSLMModel._forward_frozen_prefix

    def counting(self, *args, **kwargs):
        states = original(self, *args, **kwargs)
        runs.append(states is not None)
        return states

    monkeypatch.setattr(modeling_opentslm.OpenTSLMModel, "_forward_frozen_prefix", counting)
    return runs


def batch_inputs(processor, layout: str):
    batch, answers = series_batch(), ANSWERS
    texts = prompts(processor, batch)
    if layout == "equal":  # same text and answer lengths: one row per sample, no padding and no mask needed
        batch, answers, texts = [batch[1], [batch[1][0][::-1] + 1]], ["It rises."] * 2, [texts[1]] * 2
    if layout == "text_only":  # a sample without a series takes no part in the backward pass at all
        texts = [texts[0], processor.format_prompt("Is 3 more than 2?", "Answer:", num_series=0)]
        batch, answers = [batch[0], []], ["yes", "yes"]
    inputs = encode_with_answers(processor, texts, answers, batch, padding_free=layout == "packed")
    if layout == "equal":
        assert "attention_mask" not in inputs or inputs["attention_mask"].all()
        inputs.pop("attention_mask", None)
    return inputs


def loss_and_gradients(model, inputs, **kwargs):
    model.zero_grad(set_to_none=True)
    loss = model(**inputs, **kwargs).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["padded", "packed", "equal", "text_only"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_same_loss_and_gradients_as_one_pass(processor, family, layout, frozen_prefix_runs):
    inputs = batch_inputs(processor, layout)
    model = tiny_opentslm(processor, family=family).float()
    model.set_trainable(encoder=True, projector=True, llm=False)
    model.set_attn_implementation("sdpa")
    reference_loss, reference_grads = loss_and_gradients(model, inputs)
    assert not frozen_prefix_runs
    model.set_attn_implementation("opentslm_varlen")
    for skip_logits in (False, True):
        loss, grads = loss_and_gradients(model, inputs, skip_logits=skip_logits)
        torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=1e-5)
        assert grads.keys() == reference_grads.keys() and len(grads) > 5
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert frozen_prefix_runs == [True, True]


def test_bf16_close_to_one_pass(processor, frozen_prefix_runs):
    inputs = batch_inputs(processor, "packed")
    model = tiny_opentslm(processor).to(torch.bfloat16)
    model.set_trainable(encoder=True, projector=True, llm=False)
    model.model.time_series_encoder.float()
    model.model.projector.float()
    results = {}
    for attention in ("sdpa", "opentslm_varlen"):
        model.set_attn_implementation(attention)
        results[attention] = loss_and_gradients(model, inputs, skip_logits=True)
    assert frozen_prefix_runs == [True]
    (loss, grads), (reference_loss, reference_grads) = results["opentslm_varlen"], results["sdpa"]
    torch.testing.assert_close(loss, reference_loss, atol=2e-2, rtol=2e-2)
    for name, grad in grads.items():
        scale = reference_grads[name].abs().max()
        assert (grad - reference_grads[name]).abs().max() <= 0.05 * scale + 1e-6, name


def test_hidden_states_of_real_tokens_equal_one_pass(processor):
    inputs = batch_inputs(processor, "padded")
    inputs.pop("labels")
    model = tiny_opentslm(processor).float()
    model.set_trainable(encoder=True, projector=True, llm=False)
    model.set_attn_implementation("opentslm_varlen")
    two_pass = model.model(**inputs).last_hidden_state
    with torch.no_grad():  # no gradients wanted: one ordinary pass
        one_pass = model.model(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(two_pass[real], one_pass[real], atol=1e-5, rtol=1e-5)
    assert not two_pass[~real].any()


def test_not_used_when_the_llm_trains_or_outputs_are_asked_for(processor, frozen_prefix_runs):
    inputs = batch_inputs(processor, "padded")
    model = tiny_opentslm(processor).float()
    model.set_attn_implementation("opentslm_varlen")
    model.set_trainable(encoder=True, projector=True, llm=True)
    model(**inputs).loss.backward()
    model.set_trainable(encoder=True, projector=True, llm=False)
    out = model(**inputs, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.text_config.num_hidden_layers + 1
    assert frozen_prefix_runs == []


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_with_gradient_checkpointing(processor, frozen_prefix_runs, use_reentrant, recwarn):
    inputs = batch_inputs(processor, "packed")
    model = tiny_opentslm(processor).float().train()
    model.set_trainable(encoder=True, projector=True, llm=False)
    model.set_attn_implementation("sdpa")
    reference_loss, reference_grads = loss_and_gradients(model, inputs)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    model.set_attn_implementation("opentslm_varlen")
    loss, grads = loss_and_gradients(model, inputs)
    assert frozen_prefix_runs == [True]
    torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]
