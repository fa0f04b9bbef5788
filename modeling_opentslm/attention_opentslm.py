"""Attention over packed training rows that only computes what the samples see: `attn_implementation="opentslm_varlen"`.

A padding-free batch is one row of samples laid end to end, with `position_ids` restarting at 0 with each sample.
SDPA and eager attention keep the samples apart with a block-diagonal mask, but still compute the whole row's
`T x T` scores; on GPUs, flash attention's variable-length kernel computes only the blocks on the diagonal. This is
that for devices without one (CPUs): each sample's causal attention is computed on its own, so the cost follows the
sum of the squared sample lengths instead of the square of their total, and no `T x T` mask or score matrix is kept
for the backward pass.

Each sample's attention runs on PyTorch's SDPA kernel, except for bf16/fp16 on CPU, where a matmul-softmax-matmul is
faster (PyTorch's CPU flash kernel has a slow half-precision backward). Everything else (padded batches, decoding
with a KV cache, attention dropout, sliding windows, soft-capping) goes to transformers' SDPA path unchanged, so the
model behaves as with `attn_implementation="sdpa"`.
"""

from __future__ import annotations

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


def _repeat_kv(states: torch.Tensor, heads: int) -> torch.Tensor:
    batch, kv_heads, length, dim = states.shape
    if kv_heads == heads:
        return states
    return (
        states[:, :, None].expand(batch, kv_heads, heads // kv_heads, length, dim).reshape(batch, heads, length, dim)
    )


def causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float) -> torch.Tensor:
    """Causal self-attention, `(batch, heads, length, dim)` in and out; keys and values may have fewer heads."""
    key, value = _repeat_kv(key, query.shape[1]), _repeat_kv(value, query.shape[1])
    if query.device.type != "cpu" or query.dtype == torch.float32:
        return nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
    length = query.shape[-2]
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    future = torch.ones(length, length, dtype=torch.bool, device=query.device).triu(1)
    scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    return torch.matmul(weights, value)


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
    special = (
        dropout > 0
        or not getattr(module, "is_causal", True)
        or kwargs.get("sliding_window") is not None
        or getattr(module, "sliding_window", None) is not None
        or kwargs.get("softcap") is not None
        or query.shape[-2] != key.shape[-2]  # decoding with a KV cache
    )
    if special:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    lengths = packed_sample_lengths(kwargs.get("position_ids"))
    if lengths is not None and sum(lengths) == query.shape[-2]:
        # The block-diagonal mask built for this row says nothing the sample lengths do not.
        outputs = [
            causal_attention(q, k, v, scaling)
            for q, k, v in zip(query.split(lengths, -2), key.split(lengths, -2), value.split(lengths, -2))
        ]
        return torch.cat(outputs, dim=-2).transpose(1, 2).contiguous(), None
    if attention_mask is not None:  # padding
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    return causal_attention(query, key, value, scaling).transpose(1, 2).contiguous(), None


AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_ATTENTION, sdpa_mask)
