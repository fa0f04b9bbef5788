"""A causal LM behind a KV cache that is prefilled once and then extended, in batches, from any cached prefix.

Every search strategy in this package (MaxEnt-TS and the baselines) talks to the model only through
:class:`CachedLM`, so the forward calls and tokens they spend are counted in one place, the same way.

Layout of a batched extension. The prompt's keys/values are computed once (``prefill``). A batch of rows, each
continuing a different prefix of generated tokens, is laid out as::

    [ prompt (P) | padding (D - d_r) | row r's generated prefix (d_r) | tokens fed in this batch ... ]

with a 2-D attention mask that hides the padding and explicit position ids ``P + d_r + step``. Keys are cached with
their rotary position already applied, so a prefix's keys/values can be cut out of one batch and pasted into
another: a :class:`KVSegment` holds a row's keys/values for its generated tokens (never the prompt's).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.modeling_outputs import BaseModelOutputWithPast

# Keys that HF `generate` puts in `model_kwargs` and that the prefill must not receive from the caller: the cache is
# ours (`cache` from transformers 5.24 on, `past_key_values` before), and positions are recomputed.
_GENERATE_ONLY_KEYS = frozenset(
    {"cache", "past_key_values", "use_cache", "logits_to_keep", "position_ids", "cache_position"}
)
# The keyword the installed transformers takes the KV cache under (`past_key_values` is deprecated from 5.24 on).
_CACHE_KWARG = (
    "cache" if "cache" in {field.name for field in dataclasses.fields(BaseModelOutputWithPast)} else "past_key_values"
)


@dataclass
class KVSegment:
    """Keys/values of a row's generated tokens at every layer, each ``[heads, length, head_dim]``."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]


@dataclass
class BatchState:
    """A batch being extended one token per row per step."""

    cache: DynamicCache
    attention_mask: torch.Tensor  # [rows, cache length]
    next_positions: torch.Tensor  # [rows] position id of the next token to feed
    token_ids: torch.Tensor  # [rows, ...] left-padded prompt + prefix + fed tokens, for the logits processors
    pad_lengths: torch.Tensor  # [rows] padding between prompt and each row's prefix

    @property
    def rows(self) -> int:
        return self.attention_mask.shape[0]


class CachedLM:
    """One prompt of a causal LM, prefilled once, extended in batches from cached prefixes; counts every forward.

    ``prompt_inputs`` are the model's inputs for a single prompt without padding (``input_ids`` plus any extra
    prefill-only keys such as ``time_series``/``time_series_mask``). ``processors`` turn raw next-token logits into
    the proposal p̃ (temperature, nucleus, value guidance...); ``log_probs`` are ``log_softmax`` of their output.
    """

    def __init__(self, model: torch.nn.Module, prompt_inputs: Mapping[str, Any], processors: LogitsProcessorList):
        if "input_ids" not in prompt_inputs or prompt_inputs["input_ids"] is None:
            raise ValueError(
                "The prompt needs `input_ids` (got keys "
                f"{sorted(prompt_inputs)}); pass the tokenizer's or processor's output, not `inputs_embeds`."
            )
        input_ids = prompt_inputs["input_ids"]
        if input_ids.ndim != 2 or input_ids.shape[0] != 1:
            raise ValueError(
                f"CachedLM takes one prompt, input_ids of shape [1, length]; got {tuple(input_ids.shape)}."
            )
        if getattr(getattr(model, "config", None), "architecture", "sp") == "flamingo":
            raise NotImplementedError(
                "MaxEnt-TS does not support OpenTSLM-Flamingo models yet: their decode steps need the series' media "
                "cache, which the search's cache copies do not carry. Use an OpenTSLM-SP model."
            )
        self.model = model
        self.processors = processors
        self.prompt_inputs = {k: v for k, v in prompt_inputs.items() if k not in _GENERATE_ONLY_KEYS}
        self.prompt_ids = input_ids
        self.device = input_ids.device
        self.nfe = 0
        self.tokens_processed = 0
        self.prompt_length = 0
        pad = getattr(getattr(model, "generation_config", None), "pad_token_id", None)
        self.pad_token_id = int(pad[0] if isinstance(pad, list) else pad) if pad is not None else 0
        self._accepts_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._prompt_keys: list[torch.Tensor] = []
        self._prompt_values: list[torch.Tensor] = []

    # ------------------------------------------------------------------------------------------------------------
    def _forward(self, **kwargs: Any) -> torch.Tensor:
        """The only place the model is called: counts the call and the real (unpadded) tokens it processes."""
        self.nfe += 1
        if self._accepts_logits_to_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(**kwargs, use_cache=True)
        return out.logits[:, -1, :]

    def log_probs(self, token_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p̃(· | prefix) in float32 after the proposal's processors; ``token_ids`` is the full prefix."""
        scores = self.processors(token_ids, logits.float()) if len(self.processors) else logits.float()
        return torch.log_softmax(scores, dim=-1)

    @torch.no_grad()
    def prefill(self) -> torch.Tensor:
        """Run the prompt through the model once; returns log p̃ of the first new token, shape ``[vocab]``."""
        cache = DynamicCache(config=self.model.config)
        inputs = dict(self.prompt_inputs)
        mask = inputs.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            raise ValueError("prefill takes an unpadded prompt; strip the padding first (see split_prompts).")
        logits = self._forward(**inputs, **{_CACHE_KWARG: cache})
        self.tokens_processed += int(self.prompt_ids.shape[1])
        self.prompt_length = cache.get_seq_length()
        for index, layer in enumerate(cache.layers):
            if layer.keys is None or layer.keys.shape[-2] != self.prompt_length:
                length = None if layer.keys is None else layer.keys.shape[-2]
                raise NotImplementedError(
                    f"Cache layer {index} holds {length} positions, expected {self.prompt_length}: sliding-window or "
                    "shared-KV layers cannot be cut into prefixes. Use a model with full attention in every layer."
                )
            self._prompt_keys.append(layer.keys)
            self._prompt_values.append(layer.values)
        return self.log_probs(self.prompt_ids, logits)[0]

    # ------------------------------------------------------------------------------------------------------------
    def start_batch(self, prefixes: list[tuple[list[int], KVSegment | None]]) -> BatchState:
        """Lay out a batch of rows; row r continues generated tokens ``prefixes[r][0]`` whose keys/values are the
        first ``len(tokens)`` positions of ``prefixes[r][1]`` (``None`` for an empty prefix). No forward call."""
        if not self._prompt_keys:
            raise RuntimeError("Call prefill() before start_batch().")
        rows = len(prefixes)
        lengths = [len(tokens) for tokens, _ in prefixes]
        for (_, segment), length in zip(prefixes, lengths):
            if length and (segment is None or segment.length < length):
                have = None if segment is None else segment.length
                raise ValueError(f"A prefix of {length} tokens needs a KV segment at least that long, got {have}.")
        longest = max(lengths, default=0)
        total = self.prompt_length + longest
        cache = DynamicCache()
        for layer, (pk, pv) in enumerate(zip(self._prompt_keys, self._prompt_values)):
            heads, dim = pk.shape[1], pk.shape[3]
            keys = pk.new_zeros(rows, heads, total, dim)
            values = pv.new_zeros(rows, heads, total, pv.shape[3])
            keys[:, :, : self.prompt_length] = pk[0]
            values[:, :, : self.prompt_length] = pv[0]
            for r, ((_, segment), length) in enumerate(zip(prefixes, lengths)):
                if length:
                    keys[r, :, total - length :] = segment.keys[layer][:, :length]
                    values[r, :, total - length :] = segment.values[layer][:, :length]
            cache.update(keys, values, layer)
        mask = torch.ones(rows, total, dtype=torch.long, device=self.device)
        # The ids the logits processors see are left-padded instead: [padding | prompt | prefix].
        prompt_ids = self.prompt_ids[0]
        token_ids = torch.full((rows, prompt_ids.shape[0] + longest), self.pad_token_id, device=self.device)
        for r, ((tokens, _), length) in enumerate(zip(prefixes, lengths)):
            mask[r, self.prompt_length : total - length] = 0
            row_ids = torch.cat([prompt_ids, torch.tensor(tokens[:length], dtype=torch.long, device=self.device)])
            token_ids[r, token_ids.shape[1] - row_ids.shape[0] :] = row_ids
        pad_lengths = torch.tensor([longest - length for length in lengths], device=self.device)
        positions = torch.tensor([self.prompt_length + length for length in lengths], device=self.device)
        return BatchState(cache, mask, positions, token_ids, pad_lengths)

    @torch.no_grad()
    def step(self, state: BatchState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (one forward call); returns log p̃ of the next token, ``[rows, vocab]``."""
        tokens = tokens.to(self.device).view(-1, 1)
        state.attention_mask = torch.cat([state.attention_mask, state.attention_mask.new_ones(state.rows, 1)], 1)
        state.token_ids = torch.cat([state.token_ids, tokens], dim=1)
        logits = self._forward(
            input_ids=tokens,
            attention_mask=state.attention_mask,
            position_ids=state.next_positions.view(-1, 1),
            **{_CACHE_KWARG: state.cache},
        )
        self.tokens_processed += state.rows
        state.next_positions = state.next_positions + 1
        return self.log_probs(state.token_ids, logits)

    def select_rows(self, state: BatchState, indices: list[int] | torch.Tensor) -> None:
        """Keep (or repeat, for beam search) the given rows of the batch, in that order."""
        index = torch.as_tensor(indices, dtype=torch.long, device=self.device)
        for layer in state.cache.layers:
            layer.keys = layer.keys.index_select(0, index)
            layer.values = layer.values.index_select(0, index)
        state.attention_mask = state.attention_mask.index_select(0, index)
        state.next_positions = state.next_positions.index_select(0, index)
        state.token_ids = state.token_ids.index_select(0, index)
        state.pad_lengths = state.pad_lengths.index_select(0, index)

    def segment(self, state: BatchState, row: int) -> KVSegment:
        """Keys/values of every generated token row ``row`` holds (its prefix and what this batch fed)."""
        start = self.prompt_length + int(state.pad_lengths[row])
        keys = [layer.keys[row, :, start:].clone() for layer in state.cache.layers]
        values = [layer.values[row, :, start:].clone() for layer in state.cache.layers]
        return KVSegment(keys, values)


def split_prompts(inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Split a (possibly left-padded) batch of model inputs into one unpadded input dict per prompt.

    Tensors and lists whose first dimension is the batch size are sliced; everything else is shared. Padding must be
    on the left (as `generate` requires for decoder-only models).
    """
    input_ids = inputs.get("input_ids")
    if input_ids is None:
        raise ValueError(f"`input_ids` is required, got keys {sorted(inputs)}.")
    if input_ids.ndim == 1:
        input_ids = input_ids.unsqueeze(0)
    batch = input_ids.shape[0]
    mask = inputs.get("attention_mask")
    prompts = []
    for row in range(batch):
        prompt: dict[str, Any] = {}
        for key, value in inputs.items():
            if key in _GENERATE_ONLY_KEYS or value is None:
                continue
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == batch:
                prompt[key] = value[row : row + 1]
            elif isinstance(value, (list, tuple)) and len(value) == batch:
                prompt[key] = [value[row]]
            else:
                prompt[key] = value
        prompt["input_ids"] = input_ids[row : row + 1]
        if mask is not None:
            row_mask = mask[row]
            real = torch.nonzero(row_mask, as_tuple=False)
            if real.numel() == 0:
                raise ValueError(f"Prompt {row} is all padding (attention_mask all zeros); drop it from the batch.")
            start = int(real[0])
            if not bool(row_mask[start:].all()):
                raise ValueError(
                    f"Prompt {row} has padding that is not on the left (attention_mask {row_mask.tolist()}); "
                    "tokenize with padding_side='left'."
                )
            prompt["input_ids"] = prompt["input_ids"][:, start:]
            prompt.pop("attention_mask", None)
            if "token_type_ids" in prompt and isinstance(prompt["token_type_ids"], torch.Tensor):
                prompt["token_type_ids"] = prompt["token_type_ids"][:, start:]
        prompts.append(prompt)
    return prompts
