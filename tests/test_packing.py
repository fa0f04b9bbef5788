"""Padding-free (packed) training batches: the same loss and gradients as padded batches, without the padding."""

from __future__ import annotations

import pytest
import torch
from tiny import prompts, series_batch, tiny_opentslm, tiny_processor

from modeling_opentslm.attention_opentslm import (
    _future_bias,
    _HalfCausalAttention,
    causal_attention,
    packed_sample_lengths,
    varlen_attention_forward,
)
from recipes.collator import IGNORE_INDEX, encode_with_answers

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWERS = ["It rises.", "A flat line with noise", "(b) falls sharply after a peak"]


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def batches(processor):
    batch = series_batch()
    args = (processor, prompts(processor, batch), ANSWERS, batch)
    return encode_with_answers(*args), encode_with_answers(*args, padding_free=True)


def test_packed_layout(processor):
    padded, packed = batches(processor)
    assert set(packed) == {"input_ids", "labels", "position_ids", "time_series", "time_series_mask"}
    assert packed["input_ids"].shape[0] == 1
    real = padded["attention_mask"].bool()
    assert packed["input_ids"].shape[1] == int(real.sum())  # no padding at all
    assert packed["input_ids"][0].tolist() == padded["input_ids"][real].tolist()
    assert packed["labels"][0].tolist() == padded["labels"][real].tolist()
    lengths = real.sum(-1).tolist()
    assert packed["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    starts = torch.tensor([0, *lengths]).cumsum(0)[:-1]
    assert (packed["labels"][0, starts] == IGNORE_INDEX).all()
    torch.testing.assert_close(packed["time_series"], padded["time_series"])


def test_equal_lengths_keep_their_rows(processor):
    text = prompts(processor, [[[1.0] * 8]])[0]
    inputs = encode_with_answers(processor, [text] * 2, ["ab", "ba"], [[[1.0] * 8], [[2.0] * 8]], padding_free=True)
    assert inputs["input_ids"].shape[0] == 2 and inputs["attention_mask"].all() and "position_ids" not in inputs


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "eager", "opentslm_varlen"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_loss_and_gradients_equal_padded(processor, family, attention):
    padded, packed = batches(processor)
    model = tiny_opentslm(processor, family=family).float()
    model.set_attn_implementation(attention)
    results = []
    for inputs, skip_logits in ((padded, False), (packed, False), (packed, True), (padded, True)):
        model.zero_grad(set_to_none=True)
        loss = model(**inputs, skip_logits=skip_logits).loss
        loss.backward()
        results.append((loss.detach(), gradients(model)))
    reference_loss, reference_grads = results[0]
    assert len(reference_grads) > 10
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, reference_loss, atol=1e-5, rtol=1e-5)
        assert grads.keys() == reference_grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(grad, reference_grads[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "opentslm_varlen"])
def test_packed_attention_stays_within_each_sample(processor, attention):
    """Each sample's logits in the packed row equal its logits alone."""
    _, packed = batches(processor)
    model = tiny_opentslm(processor)
    model.set_attn_implementation(attention)
    assert model.model.language_model.config._attn_implementation == attention
    with torch.no_grad():
        logits = model(**{k: v for k, v in packed.items() if k != "labels"}).logits[0]
        start = 0
        for text, sample, answer in zip(prompts(processor, series_batch()), series_batch(), ANSWERS):
            alone = encode_with_answers(processor, [text], [answer], [sample], padding_free=True)
            single = model(
                input_ids=alone["input_ids"],
                time_series=alone["time_series"],
                time_series_mask=alone["time_series_mask"],
            ).logits[0]
            torch.testing.assert_close(logits[start : start + single.shape[0]], single, atol=1e-5, rtol=1e-4)
            start += single.shape[0]
    assert start == logits.shape[0]


def test_skip_logits_returns_the_loss_only(processor):
    padded, _ = batches(processor)
    model = tiny_opentslm(processor)
    out = model(**padded, skip_logits=True)
    assert out.logits is None and out.loss is not None
    with pytest.raises(ValueError, match="skip_logits=True needs labels"):
        model(input_ids=padded["input_ids"], skip_logits=True)


def test_flamingo_rejects_packed_batches():
    processor = tiny_processor(placeholders="per_series")
    _, packed = batches(processor)
    model = tiny_opentslm(processor, architecture="flamingo", cross_attention_every_n_layers=1)
    with pytest.raises(ValueError, match="SP variant only"):
        model(**packed)


def test_varlen_sample_lengths():
    assert packed_sample_lengths(torch.tensor([[0, 1, 2, 0, 1, 0]])) == [3, 2, 1]
    assert packed_sample_lengths(torch.tensor([[0, 1, 2, 3]])) is None  # one sample: nothing to split
    assert packed_sample_lengths(torch.tensor([[0, 1], [0, 1]])) is None  # rows of a padded batch
    assert packed_sample_lengths(torch.tensor([[4, 5, 0, 1]])) is None  # a continuation, not a packed row
    assert packed_sample_lengths(None) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_varlen_attention_equals_sdpa(dtype):
    """Per sample, in both kernels (SDPA for fp32, matmul-softmax for bf16 on CPU), with grouped key/value heads."""
    torch.manual_seed(0)
    lengths = [5, 9, 3]
    query = torch.randn(1, 4, sum(lengths), 8, dtype=dtype, requires_grad=True)
    key, value = (torch.randn(1, 2, sum(lengths), 8, dtype=dtype, requires_grad=True) for _ in range(2))
    position_ids = torch.cat([torch.arange(n) for n in lengths])[None]
    module = torch.nn.Module()
    out, weights = varlen_attention_forward(module, query, key, value, None, scaling=0.3, position_ids=position_ids)
    assert weights is None and out.shape == (1, sum(lengths), 4, 8)
    exact = [t.detach().double().requires_grad_() for t in (query, key, value)]  # the reference, in fp64
    expected, start = [], 0
    for n in lengths:
        q, k, v = (t[:, :, start : start + n] for t in exact)
        k, v = (t.repeat_interleave(2, dim=1) for t in (k, v))
        expected.append(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3))
        start += n
    expected = torch.cat(expected, dim=-2).transpose(1, 2)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(out.double(), expected, **tolerance)
    grads = torch.autograd.grad(out.double().square().sum(), (query, key, value))
    expected_grads = torch.autograd.grad(expected.square().sum(), exact)
    for grad, reference in zip(grads, expected_grads):
        torch.testing.assert_close(grad.double(), reference, **tolerance)


def test_half_attention_keeps_or_recomputes_probabilities_alike(monkeypatch):
    """Short samples keep their bf16 probabilities for the backward pass, longer ones recompute them: the same
    gradients either way, also for queries that continue a prefix of keys."""
    torch.manual_seed(0)
    query = torch.randn(1, 4, 6, 8, dtype=torch.bfloat16)
    key, value = (torch.randn(1, 2, 10, 8, dtype=torch.bfloat16) for _ in range(2))
    grad_output = torch.randn(1, 4, 6, 8, dtype=torch.bfloat16)
    results = []
    for keep in (0, 10):
        monkeypatch.setattr(_HalfCausalAttention, "KEEP_PROBABILITIES_KEYS", keep)
        inputs = [t.clone().requires_grad_() for t in (query, key, value)]
        out = _HalfCausalAttention.apply(*inputs, 0.3)
        results.append((out, *torch.autograd.grad(out, inputs, grad_output)))
    for kept, recomputed in zip(*results):
        assert torch.equal(kept, recomputed)


def test_cached_attention_mask_made_while_generating_serves_training():
    """The additive masks are cached; one first made under inference mode is still usable in a backward pass."""
    _future_bias.cache_clear()
    with torch.inference_mode():
        assert not _future_bias(1, 3, 7, torch.float32, torch.device("cpu")).is_inference()
    query = torch.randn(1, 2, 3, 4, requires_grad=True)
    key, value = torch.randn(1, 2, 7, 4), torch.randn(1, 2, 7, 4)
    causal_attention(query, key, value, 0.5).sum().backward()
    assert query.grad is not None


def test_varlen_model_generates_as_sdpa(processor):
    """Prefill (one sample, causal) and decoding with a KV cache (SDPA's path) give the same tokens."""
    batch = series_batch()[:1]
    inputs = processor(text=prompts(processor, batch), time_series=batch, return_tensors="pt")
    model = tiny_opentslm(processor)
    tokens = {}
    for attention in ("sdpa", "opentslm_varlen"):
        model.set_attn_implementation(attention)
        tokens[attention] = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert tokens["sdpa"].tolist() == tokens["opentslm_varlen"].tolist()
