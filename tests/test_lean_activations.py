"""The LLM's RMSNorm and SwiGLU MLP with lean backward passes: same outputs and gradients, fewer activations kept."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny import prompts, series_batch, tiny_opentslm, tiny_processor
from transformers import AutoConfig, AutoModel

from modeling_opentslm.activations_opentslm import _FORMULA_HOLDS, use_lean_activations
from recipes.collator import encode_with_answers

pytestmark = pytest.mark.usefixtures("one_thread")

FAMILIES = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"head_dim": 8},  # also has RMSNorm on queries and keys
    "smollm3": {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
    "gemma3_text": {"head_dim": 8},  # (1 + weight) RMSNorm and a GELU MLP: nothing to swap
}


def tiny_decoder(family: str, dtype: torch.dtype) -> torch.nn.Module:
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        family,
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        **FAMILIES[family],
    )
    model = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa").eval()
    for parameter in model.parameters():  # non-trivial norm weights
        parameter.data += 0.1 * torch.randn_like(parameter)
    return model


def run(model, inputs, train_weights: bool):
    model.requires_grad_(train_weights)
    embeds = inputs.clone().requires_grad_()
    out = model(inputs_embeds=embeds).last_hidden_state
    out.float().square().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    return out.detach(), embeds.grad, grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_same_outputs_and_gradients(family, dtype):
    reference = tiny_decoder(family, dtype)
    lean = copy.deepcopy(reference)
    swapped = use_lean_activations(lean)
    layers = len(lean.layers)
    expected = {"gemma3_text": 0, "qwen3": layers * 5 + 1}.get(family, layers * 3 + 1)  # 2 norms + MLP per layer
    assert swapped == expected
    assert use_lean_activations(lean) == 0  # idempotent
    inputs = torch.randn(2, 7, 32, dtype=dtype)
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    for train_weights in (False, True):
        out, grad_input, grads = run(reference, inputs, train_weights)
        lean_out, lean_grad_input, lean_grads = run(lean, inputs, train_weights)
        assert torch.equal(out, lean_out)  # the very same forward operations
        torch.testing.assert_close(lean_grad_input, grad_input, **tolerance)
        assert lean_grads.keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(lean_grads[name], grad, **tolerance, msg=name)
        reference.zero_grad(set_to_none=True)
        lean.zero_grad(set_to_none=True)
    swapped_classes = {type(m) for m in lean.modules() if "forward" in vars(m)}
    assert all(_FORMULA_HOLDS[cls] for cls in swapped_classes)  # the lean path did run


def saved_activation_shapes(model, inputs) -> list[tuple[torch.dtype, tuple[int, ...]]]:
    saved = {}

    def pack(tensor):
        saved.setdefault(tensor.untyped_storage().data_ptr(), (tensor.dtype, tuple(tensor.shape)))
        return tensor

    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(inputs_embeds=inputs.clone().requires_grad_())
    return [shape for pointer, shape in saved.items() if pointer not in parameters]


def test_frozen_bf16_llm_keeps_no_fp32_copies_and_no_silu_outputs():
    reference = tiny_decoder("llama", torch.bfloat16).requires_grad_(False)
    lean = copy.deepcopy(reference)
    use_lean_activations(lean)
    inputs = torch.randn(2, 7, 32, dtype=torch.bfloat16)
    before, after = saved_activation_shapes(reference, inputs), saved_activation_shapes(lean, inputs)
    hidden, intermediate = (torch.float32, (2, 7, 32)), (torch.bfloat16, (2, 7, 48))
    layers = len(lean.layers)
    assert before.count(hidden) == 2 * layers + 1 and before.count(intermediate) == 3 * layers
    assert after.count(hidden) == 0 and after.count(intermediate) == 2 * layers  # gate and up only
    assert after.count((torch.bfloat16, (2, 7, 32))) == 2 * layers + 1  # each norm's input, in its own dtype


def test_a_module_that_computes_something_else_keeps_its_forward():
    model = tiny_decoder("llama", torch.float32)
    use_lean_activations(model)
    norm = model.norm
    cls = type(norm)
    changed = type(cls.__name__, (cls,), {"forward": lambda self, x: cls.forward(self, x) * 2})
    norm.__class__ = changed
    x = torch.randn(3, 32, requires_grad=True)
    torch.testing.assert_close(norm(x), cls.forward(norm, x) * 2)


def test_opentslm_models_use_lean_activations():
    processor = tiny_processor()
    model = tiny_opentslm(processor)
    assert "forward" in vars(model.model.language_model.norm)
    assert all("forward" in vars(layer.mlp) for layer in model.model.language_model.layers)
    batch = series_batch()
    inputs = encode_with_answers(processor, prompts(processor, batch), ["up", "down", "flat"], batch)
    reference = copy.deepcopy(model)
    for module in reference.modules():
        vars(module).pop("forward", None)
    model.set_trainable(encoder=True, projector=True, llm=False)
    reference.set_trainable(encoder=True, projector=True, llm=False)
    losses = [m(**inputs).loss for m in (reference, model)]
    assert torch.equal(losses[0], losses[1])
    for loss in losses:
        loss.backward()
    for (name, p), q in zip(reference.named_parameters(), model.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("num_items_in_batch", [None, 7, torch.tensor(9)])
def test_linear_cross_entropy_equals_the_causal_lm_loss(dtype, num_items_in_batch):
    from transformers.loss.loss_utils import ForCausalLMLoss

    from modeling_opentslm.activations_opentslm import linear_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(11, 16, dtype=dtype, requires_grad=True)
    weight = (torch.randn(40, 16) / 4).to(dtype).requires_grad_()
    labels = torch.randint(0, 40, (11,))
    labels[3] = 5  # the masked token as a label: its overwritten logit takes no gradient
    expected = ForCausalLMLoss(
        _masked(torch.nn.functional.linear(hidden, weight), 5),
        None,
        vocab_size=40,
        shift_labels=labels,
        num_items_in_batch=num_items_in_batch,
    )
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    loss = linear_cross_entropy(
        hidden, weight, labels, masked_token=5, num_items_in_batch=num_items_in_batch, block_bytes=4 * 40 * 4
    )  # blocks of 4 rows
    grads = torch.autograd.grad(loss, (hidden, weight))
    tolerance = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-2, rtol=2e-2)
    torch.testing.assert_close(loss, expected, **tolerance)
    for grad, reference in zip(grads, expected_grads):
        assert grad.dtype == reference.dtype
        torch.testing.assert_close(grad, reference, **tolerance)


def _masked(logits, token):
    logits = logits.clone()
    logits[:, token] = torch.finfo(logits.dtype).min
    return logits


def test_linear_cross_entropy_keeps_no_logits():
    from modeling_opentslm.activations_opentslm import linear_cross_entropy

    hidden = torch.randn(64, 16, requires_grad=True)
    weight = torch.randn(1000, 16)
    shapes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(tuple(t.shape)) or t, lambda t: t):
        loss = linear_cross_entropy(hidden, weight, torch.randint(0, 1000, (64,)))
    assert shapes == [(64, 16)]  # the gradient of the rows, nothing vocabulary-sized
    loss.backward()
    assert hidden.grad.shape == (64, 16)


def test_linear_cross_entropy_with_row_weights():
    from modeling_opentslm.activations_opentslm import linear_cross_entropy

    torch.manual_seed(0)
    hidden = torch.randn(9, 16, requires_grad=True)
    weight = torch.randn(30, 16) / 4
    labels, row_weights = torch.randint(0, 30, (9,)), torch.rand(9)
    expected = (torch.nn.functional.cross_entropy(hidden @ weight.T, labels, reduction="none") * row_weights).sum()
    loss = linear_cross_entropy(hidden, weight, labels, row_weights=row_weights, block_bytes=2 * 30 * 4)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(torch.autograd.grad(loss, hidden)[0], torch.autograd.grad(expected, hidden)[0])
