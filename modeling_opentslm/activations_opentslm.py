"""Leaner backward passes for the LLM's RMSNorm and SwiGLU MLP: the same outputs, fewer activations kept.

Training OpenTSLM mostly backpropagates through a frozen LLM, whose linear layers then keep nothing for the backward
pass. What is left are the element-wise parts, and two of them keep more than their gradients need:

- RMSNorm (Llama-style: `weight * (x.float() * rsqrt(mean(x.float()**2) + eps)).to(x.dtype)`) keeps an fp32 copy of
  its input. Here it keeps the input in its own dtype and the fp32 reciprocal root, and recomputes the rest.
- The SwiGLU MLP (`down(silu(gate(x)) * up(x))`) keeps `gate(x)`, `silu(gate(x))` and `up(x)`. Here it keeps the
  first and the last and recomputes the SiLU.

In bf16 that is about a third of a frozen LLM's activations. The forward passes run the very same operations as the
modules they stand in for, so outputs are bit for bit the same; the backward passes use the same formulas as
autograd's. `use_lean_activations` swaps the forward of the modules of those kinds it recognises (by class, for the
architectures whose modules compute exactly the formulas above) and leaves every other module alone. The swapped
forward only takes over when gradients are wanted, and only after checking once per class, on the first such input,
that the module's own forward gives exactly the same output.
"""

from __future__ import annotations

import math
from types import MethodType

import torch
from torch import nn
from torch.nn import functional as F

# Modules whose forward computes exactly the formulas above (checked by the tests against the modules themselves).
RMS_NORM_CLASSES = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm")
SWIGLU_MLP_CLASSES = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP")


def _rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The Llama-style RMSNorm, and the fp32 reciprocal root it divided by."""
    upcast = hidden_states.to(torch.float32)
    rstd = torch.rsqrt(upcast.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (upcast * rstd).to(hidden_states.dtype), rstd


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_states, weight, eps):
        output, rstd = _rms_norm(hidden_states, weight, eps)
        ctx.save_for_backward(hidden_states, rstd, weight)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        hidden_states, rstd, weight = ctx.saved_tensors
        upcast = hidden_states.to(torch.float32)
        grad_weight = None
        if ctx.needs_input_grad[1]:
            normed = (upcast * rstd).to(hidden_states.dtype)
            grad_weight = (grad_output * normed).sum_to_size(weight.shape)
        grad_normed = (grad_output * weight).to(torch.float32)
        # d/dx of x * rsqrt(mean(x^2) + eps): through the product, then through the mean of squares
        grad_rstd = (grad_normed * upcast).sum(-1, keepdim=True)
        grad_mean = grad_rstd * (-0.5 * rstd.pow(3)) / upcast.shape[-1]
        grad_input = grad_normed * rstd + grad_mean * 2.0 * upcast
        return grad_input.to(hidden_states.dtype), grad_weight, None


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_output):
        gate, up = ctx.saved_tensors
        grad_gate = torch.ops.aten.silu_backward(grad_output * up, gate) if ctx.needs_input_grad[0] else None
        grad_up = grad_output * F.silu(gate) if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up


def _swiglu(module: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    return module.down_proj(F.silu(module.gate_proj(hidden_states)) * module.up_proj(hidden_states))


_FORMULA_HOLDS: dict[type, bool] = {}


def _formula_holds(module: nn.Module, hidden_states: torch.Tensor, formula) -> bool:
    """Whether the module's own forward computes `formula`, checked once per class on a few rows of its first
    training input; where it does not (another transformers version may change a module), the module keeps its own
    forward."""
    cls = type(module)
    if cls not in _FORMULA_HOLDS:
        rows = hidden_states.detach().reshape(-1, hidden_states.shape[-1])[:4]
        with torch.no_grad():
            _FORMULA_HOLDS[cls] = torch.equal(cls.forward(module, rows), formula(rows))
    return _FORMULA_HOLDS[cls]


def _lean_rms_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    wants_grad = torch.is_grad_enabled() and (hidden_states.requires_grad or self.weight.requires_grad)
    if not wants_grad or not _formula_holds(
        self, hidden_states, lambda x: _rms_norm(x, self.weight, self.variance_epsilon)[0]
    ):
        return type(self).forward(self, hidden_states)
    return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


def _lean_swiglu_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not torch.is_grad_enabled() or not _formula_holds(self, hidden_states, lambda x: _swiglu(self, x)):
        return type(self).forward(self, hidden_states)
    gate, up = self.gate_proj(hidden_states), self.up_proj(hidden_states)
    if not (gate.requires_grad or up.requires_grad):
        return self.down_proj(F.silu(gate) * up)
    return self.down_proj(_SwiGLU.apply(gate, up))


def _is_silu(module: nn.Module) -> bool:
    return isinstance(module, nn.SiLU) or type(module).__name__ == "SiLUActivation"


def use_lean_activations(language_model: nn.Module) -> int:
    """Give the recognised RMSNorm and SwiGLU MLP modules of `language_model` their lean backward; returns how many
    modules were changed. Calling it again changes nothing more."""
    changed = 0
    for module in language_model.modules():
        name = type(module).__name__
        if "forward" in vars(module):  # already swapped (or wrapped by someone else: leave it)
            continue
        if name in RMS_NORM_CLASSES and hasattr(module, "variance_epsilon"):
            module.forward = MethodType(_lean_rms_norm_forward, module)
            changed += 1
        elif name in SWIGLU_MLP_CLASSES and _is_silu(getattr(module, "act_fn", None)):
            module.forward = MethodType(_lean_swiglu_forward, module)
            changed += 1
    return changed


class _LinearCrossEntropy(torch.autograd.Function):
    """The summed cross-entropy of `hidden @ weight.T` against `labels`, a block of rows at a time: each block's
    logits are made, scored and differentiated in the forward pass and dropped, so neither the full-vocabulary
    logits nor their log-softmax are kept; the backward pass only scales the gradients found there."""

    @staticmethod
    def forward(ctx, hidden, weight, labels, row_weights, masked_token, block_rows):
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], block_rows):
            rows, targets = hidden[start : start + block_rows], labels[start : start + block_rows]
            logits = F.linear(rows, weight)
            if masked_token is not None:
                logits[:, masked_token] = torch.finfo(logits.dtype).min
            # log-sum-exp and softmax in place of the fp32 logits: shifted by the row maximum, exponentiated, summed
            logits = logits.float()
            logits.sub_(logits.amax(dim=-1, keepdim=True))
            target_logit = logits.gather(-1, targets[:, None]).squeeze(-1)
            total = logits.exp_().sum(dim=-1, keepdim=True)
            row_loss = total.log().squeeze(-1) - target_logit
            scale = None if row_weights is None else row_weights[start : start + block_rows].float()
            loss += (row_loss if scale is None else row_loss * scale).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            grad_logits = logits.div_(total)  # the softmax
            grad_logits[torch.arange(len(targets), device=targets.device), targets] -= 1
            if masked_token is not None:  # overwritten, so it takes no gradient
                grad_logits[:, masked_token] = 0
            if scale is not None:
                grad_logits.mul_(scale[:, None])
            grad_logits = grad_logits.to(rows.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + block_rows] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += (grad_logits.t() @ rows).float()
        ctx.save_for_backward(*(g for g in (grad_hidden, grad_weight) if g is not None))
        ctx.has, ctx.weight_dtype = (grad_hidden is not None, grad_weight is not None), weight.dtype
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        saved = iter(ctx.saved_tensors)
        grad_hidden = next(saved) * grad_loss if ctx.has[0] else None
        grad_weight = (next(saved) * grad_loss).to(ctx.weight_dtype) if ctx.has[1] else None
        return grad_hidden, grad_weight, None, None, None, None


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    masked_token: int | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    row_weights: torch.Tensor | None = None,
    block_bytes: int = 24 * 2**20,
) -> torch.Tensor:
    """transformers' causal-LM loss (`ForCausalLMLoss`: fp32 cross-entropy, summed and divided by
    `num_items_in_batch`, or the mean) of the logits `hidden @ weight.T`, where `hidden` holds only rows with a label
    and `masked_token`'s logit is set to the lowest value first, computed without keeping the logits. With
    `row_weights` (one per row) the loss is the weighted sum of the rows' losses instead."""
    # blocks of equal size, each at most `block_bytes` of fp32 logits (matrix products of fewer than about 100 rows
    # against the vocabulary run well below the CPU's peak)
    rows_per_block = max(1, block_bytes // (4 * weight.shape[0]))
    blocks = max(1, math.ceil(hidden.shape[0] / rows_per_block))
    block_rows = max(1, math.ceil(hidden.shape[0] / blocks))
    loss = _LinearCrossEntropy.apply(hidden, weight, labels, row_weights, masked_token, block_rows)
    if row_weights is not None:
        return loss
    if num_items_in_batch is None:
        return loss / labels.numel()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch
