"""Attention over packed training rows that only computes what the samples see: `attn_implementation="opentslm_varlen"`.

A padding-free batch is one row of samples laid end to end, with `position_ids` restarting at 0 with each sample.
SDPA and eager attention keep the samples apart with a block-diagonal mask, but still compute the whole row's
`T x T` scores; on GPUs, flash attention's variable-length kernel computes only the blocks on the diagonal. This is
that for devices without one (CPUs): each sample's causal attention is computed on its own, so the cost follows the
sum of the squared sample lengths instead of the square of their total, and no `T x T` mask or score matrix is kept
for the backward pass.

Each sample's attention runs on PyTorch's SDPA kernel, except for bf16/fp16 on CPU, where a matmul-softmax-matmul is
faster (PyTorch's CPU flash kernel has a slow half-precision backward); that one keeps the probabilities for the
backward pass only for short samples and recomputes them there for longer ones. Grouped key/value heads are never
repeated.

The same function serves OpenTSLM's two-pass training forward through a frozen LLM (`FrozenPrefix`): the prompt
prefixes without gradients first, then the rest of each sample attending to its own prefix's keys and values.

Everything else (padded batches, decoding with a KV cache, attention dropout, sliding windows, soft-capping) goes to
transformers' SDPA path unchanged, so the model behaves as with `attn_implementation="sdpa"`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

VARLEN_ATTENTION = "opentslm_varlen"


def packed_sample_lengths(position_ids: torch.Tensor | None) -> list[int] | None:
    """The lengths of the samples packed in a single row (positions restart at 0 with each), or None when the batch
    is not one packed row of several samples."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()
    if len(starts) < 2 or starts[0] != 0:
        return None
    bounds = [*starts, position_ids.shape[1]]
    return [end - start for start, end in zip(bounds, bounds[1:])]


def _future(query_length: int, key_length: int, device) -> torch.Tensor:
    """True where a query may not look: the queries are the last `query_length` of the `key_length` positions."""
    return torch.ones(query_length, key_length, dtype=torch.bool, device=device).triu(1 + key_length - query_length)


@lru_cache(maxsize=8)
def _future_bias(groups: int, query_length: int, key_length: int, dtype: torch.dtype, device) -> torch.Tensor:
    """`-inf` where a query may not look, 0 elsewhere, for `groups` query heads laid one after another as rows. Cached,
    so made outside inference mode: a mask first made while generating may later be kept for a backward pass."""
    with torch.inference_mode(False):
        future = _future(query_length, key_length, device)
        bias = torch.zeros(query_length, key_length, dtype=dtype, device=device).masked_fill_(future, float("-inf"))
        return bias.repeat(groups, 1)


class _HalfCausalAttention(torch.autograd.Function):
    """Causal attention by matmul-softmax-matmul. Grouped key/value heads are not repeated: the query heads that share
    a key/value head are laid out as one longer block of rows against it. The scale and the causal mask are applied
    inside the score product (`baddbmm` on an additive mask).

    For the backward pass it keeps query, key and value, and the probabilities only for short samples (at most
    `KEEP_PROBABILITIES_KEYS` keys, where they are at most about twice the size of query, key and value); for longer
    ones it recomputes them there, since the `(heads, length, length)` probabilities would be the largest activations
    of a training step."""

    KEEP_PROBABILITIES_KEYS = 256

    @staticmethod
    def _scores(grouped_query, key, scaling, query_length):
        batch, kv_heads, rows, dim = grouped_query.shape
        key_length = key.shape[-2]
        bias = _future_bias(rows // query_length, query_length, key_length, key.dtype, key.device)
        scores = torch.baddbmm(
            bias,
            grouped_query.reshape(batch * kv_heads, rows, dim),
            key.reshape(batch * kv_heads, key_length, dim).transpose(1, 2),
            alpha=scaling,
        )
        return scores.view(batch, kv_heads, rows, key_length)

    @staticmethod
    def forward(ctx, query, key, value, scaling):
        batch, heads, length, dim = query.shape
        grouped_query = query.reshape(batch, key.shape[1], -1, dim)
        # softmax in fp32 inside the kernel, rounded once to the input's dtype
        probabilities = torch.softmax(_HalfCausalAttention._scores(grouped_query, key, scaling, length), dim=-1)
        keep = key.shape[-2] <= _HalfCausalAttention.KEEP_PROBABILITIES_KEYS
        ctx.save_for_backward(grouped_query, key, value, probabilities if keep else None)
        ctx.scaling, ctx.query_shape = scaling, query.shape
        return torch.matmul(probabilities, value).view(batch, heads, length, dim)

    @staticmethod
    def backward(ctx, grad_output):
        grouped_query, key, value, probabilities = ctx.saved_tensors
        if probabilities is None:
            scores = _HalfCausalAttention._scores(grouped_query, key, ctx.scaling, ctx.query_shape[-2])
            probabilities = torch.softmax(scores, dim=-1)
        grad_output = grad_output.reshape(grouped_query.shape)
        grad_value = torch.matmul(probabilities.transpose(-1, -2), grad_output)
        grad_probabilities = torch.matmul(grad_output, value.transpose(-1, -2)).float()
        # softmax backward in fp32, then the scale (masked entries have probability 0, so their gradient is 0)
        probabilities = probabilities.float()
        grad_scores = grad_probabilities.sub_((grad_probabilities * probabilities).sum(-1, keepdim=True))
        grad_scores = grad_scores.mul_(probabilities).mul_(ctx.scaling).to(grouped_query.dtype)
        grad_query = torch.matmul(grad_scores, key).view(ctx.query_shape)
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), grouped_query)
        return grad_query, grad_key, grad_value, None


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
    """Causal attention, `(batch, heads, length, dim)` in and out; keys and values may have fewer heads, and more
    positions than the queries: the queries are then the last positions of the keys (they continue a prefix)."""
    if query.device.type != "cpu" or query.dtype == torch.float32:
        query_length, key_length = query.shape[-2], key.shape[-2]
        # one additive mask per shape, shared by the layers (SDPA keeps its mask for the backward pass)
        mask = (
            None
            if query_length == key_length
            else _future_bias(1, query_length, key_length, query.dtype, query.device)
        )
        return nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, is_causal=mask is None, scale=scaling, enable_gqa=True
        )
    return _HalfCausalAttention.apply(query, key, value, scaling)


FROZEN_PREFIX_KWARG = "opentslm_frozen_prefix"


@dataclass
class FrozenPrefix:
    """Samples split into a prompt prefix that no trainable parameter reaches and the rest, for a training forward
    through a frozen LLM in two passes (see `OpenTSLMModel`): first the prefixes of all samples, laid end to end and
    without gradients, keeping each layer's keys and values; then the rests, each sample's queries attending to its
    own prefix's keys and values and causally to its own rest. Passed to the attention function as the keyword
    argument `opentslm_frozen_prefix`."""

    prefix_lengths: list[int]
    rest_lengths: list[int]
    keys: dict[int, torch.Tensor] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    attending: bool = False

    def attention(self, module: nn.Module, query, key, value, scaling: float) -> torch.Tensor:
        if not self.attending:  # the prefixes: per-sample causal attention, keeping keys and values
            self.keys[module.layer_idx], self.values[module.layer_idx] = key, value
            return _per_sample(query, key, value, self.prefix_lengths, scaling)
        prefix_keys = self.keys[module.layer_idx].split(self.prefix_lengths, -2)
        prefix_values = self.values[module.layer_idx].split(self.prefix_lengths, -2)
        return _per_sample(query, key, value, self.rest_lengths, scaling, prefix_keys, prefix_values)


def _per_sample(query, key, value, lengths: list[int], scaling: float, prefix_keys=None, prefix_values=None):
    """Each sample's causal attention on its own, for samples of `lengths` laid end to end; with `prefix_keys` and
    `prefix_values` (one per sample), each sample's queries also see its own prefix's."""
    keys, values = key.split(lengths, -2), value.split(lengths, -2)
    if prefix_keys is not None:
        keys = [torch.cat(pair, -2) for pair in zip(prefix_keys, keys)]
        values = [torch.cat(pair, -2) for pair in zip(prefix_values, values)]
    outputs = [
        causal_attention(q, k, v, scaling) for q, k, v in zip(query.split(lengths, -2), keys, values) if q.shape[-2]
    ]
    return torch.cat(outputs, dim=-2)


def varlen_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query `(batch, heads, q_len, dim)`, key and value `(batch,
    kv_heads, kv_len, dim)`; returns `(batch, q_len, heads, dim)` and no attention weights."""
    frozen_prefix = kwargs.get(FROZEN_PREFIX_KWARG)
    special = (
        dropout > 0
        or not getattr(module, "is_causal", True)
        or kwargs.get("sliding_window") is not None
        or getattr(module, "sliding_window", None) is not None
        or kwargs.get("softcap") is not None
        or query.shape[-2] != key.shape[-2]  # decoding with a KV cache
    )
    if special:
        if frozen_prefix is not None:
            raise ValueError(
                f"A frozen-prefix forward needs plain causal attention; layer {getattr(module, 'layer_idx', '?')} "
                "has dropout, a sliding window, soft-capping or a KV cache."
            )
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    if frozen_prefix is not None:  # the mask transformers built says nothing the sample lengths do not
        return frozen_prefix.attention(module, query, key, value, scaling).transpose(1, 2).contiguous(), None
    lengths = packed_sample_lengths(kwargs.get("position_ids"))
    if lengths is not None and sum(lengths) == query.shape[-2]:
        # The block-diagonal mask built for this row says nothing the sample lengths do not.
        return _per_sample(query, key, value, lengths, scaling).transpose(1, 2).contiguous(), None
    if attention_mask is not None:  # padding
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    return causal_attention(query, key, value, scaling).transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_ATTENTION, sdpa_mask)
