"""OpenTSLM-SP: time-series patches encoded, projected and spliced into the token sequence of a decoder-only LLM.

Layout follows LLaVA: `OpenTSLMModel` (encoder + projector + LLM body) and `OpenTSLMForCausalLM` (adds `lm_head`,
the loss and `generate`). The processor writes one placeholder token per series patch; the model checks the counts
and scatters the projected patch embeddings over the placeholders.
"""

from __future__ import annotations

from .compat_opentslm import CACHE_NAME  # first: stops a too-old transformers clearly

# isort: split
import os
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .activations_opentslm import linear_cross_entropy, use_lean_activations
from .attention_opentslm import (  # registers attn_implementation="opentslm_varlen"
    FROZEN_PREFIX_KWARG,
    VARLEN_ATTENTION,
    FrozenPrefix,
    packed_sample_lengths,
)
from .configuration_opentslm import OpenTSLMConfig, OpenTSLMEncoderConfig

# Inputs that only the prefill needs: decode steps carry new text tokens only, so the series cost nothing there.
TIME_SERIES_INPUTS = ("time_series", "time_series_mask")
# Checkpoints with llm_weights="base": the added tokens' embedding rows, and what from_pretrained passes on.
ADDED_INPUT_ROWS = "added_tokens.input_embeddings"
ADDED_OUTPUT_ROWS = "added_tokens.output_embeddings"
HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")
BASE_LLM_KWARGS = ("dtype", "torch_dtype", "attn_implementation", "device_map", "low_cpu_mem_usage")


@dataclass
class OpenTSLMModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    time_series_hidden_states (`torch.FloatTensor`, *optional*):
        SP: the projected patch embeddings that replaced the placeholder tokens, `(num_patches, hidden_size)` (valid
        patches only, in text order). Flamingo: the resampled latents, `(batch, series * num_latents, hidden)`.
    media_cache (`OpenTSLMMediaCache`, *optional*):
        Flamingo: the series' latents and the cross-attention keys/values computed from them, which the decode steps
        of `generate` reuse.
    """

    time_series_hidden_states: torch.FloatTensor | None = None
    media_cache: OpenTSLMMediaCache | None = None


@dataclass
class OpenTSLMCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    time_series_hidden_states (`torch.FloatTensor`, *optional*):
        SP: the projected patch embeddings that replaced the placeholder tokens, `(num_patches, hidden_size)` (valid
        patches only, in text order). Flamingo: the resampled latents, `(batch, series * num_latents, hidden)`.
    media_cache (`OpenTSLMMediaCache`, *optional*):
        Flamingo: the series' latents and the cross-attention keys/values computed from them, which the decode steps
        of `generate` reuse.
    """

    time_series_hidden_states: torch.FloatTensor | None = None
    media_cache: OpenTSLMMediaCache | None = None


DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def inject_lora(language_model: nn.Module, settings: dict) -> None:
    """Add PEFT LoRA layers to the language model in place (the encoder and projector never get adapters).

    The adapters are kept in fp32 whatever the LLM's dtype, as PEFT's `get_peft_model` does: bf16 adapters trained
    with AdamW lose most small updates. PEFT casts their input to their dtype and the result back to the layer's.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as error:
        raise ImportError("This OpenTSLM checkpoint has LoRA adapters; install `peft` to load it.") from error
    inject_adapter_in_model(LoraConfig(**settings), language_model)
    for name, parameter in language_model.named_parameters():
        if "lora_" in name and parameter.dtype != torch.float32 and parameter.device.type != "meta":
            parameter.data = parameter.data.float()


class OpenTSLMTimeSeriesEncoder(nn.Module):
    """Conv1D patch embedding → learned positions → LayerNorm/dropout → post-norm transformer encoder.

    Unlike the original, the transformer gets a key-padding mask, so padding patches never influence real ones and a
    series encodes the same alone or in a batch with longer series.
    """

    def __init__(self, config: OpenTSLMEncoderConfig):
        super().__init__()
        self.config = config
        self.patch_embedding = nn.Conv1d(
            1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size, bias=False
        )
        self.position_embedding = nn.Parameter(torch.zeros(1, config.max_patches, config.hidden_size))
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=config.hidden_size,
            nhead=config.num_attention_heads,
            dim_feedforward=config.intermediate_size,
            dropout=config.dropout,
            activation=config.hidden_act,
            layer_norm_eps=config.layer_norm_eps,
            batch_first=True,
            norm_first=False,
        )
        self.encoder = (
            nn.TransformerEncoder(layer, num_layers=config.num_hidden_layers, enable_nested_tensor=False)
            if config.num_hidden_layers > 0
            else None  # the patch tokenizer alone (the original OpenTSLM-Flamingo encoder)
        )

    def forward(self, series: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
        """Encode `series` `(num_series, length)` (length a multiple of the patch size) with `patch_mask`
        `(num_series, length // patch_size)`, True for patches that hold data. Returns `(num_series, patches, hidden)`.
        """
        num_patches = series.shape[-1] // self.config.patch_size
        if num_patches > self.config.max_patches:
            raise ValueError(
                f"A series of {series.shape[-1]} samples has {num_patches} patches, more than the encoder's "
                f"max_patches={self.config.max_patches}; shorten or downsample it."
            )
        series = series.to(self.patch_embedding.weight.dtype)
        hidden = self.patch_embedding(series.unsqueeze(1)).transpose(1, 2)
        hidden = hidden + self.position_embedding[:, :num_patches]
        hidden = self.dropout(self.layer_norm(hidden))
        if self.encoder is None:
            return hidden
        return self.encoder(hidden, src_key_padding_mask=~patch_mask)


class OpenTSLMProjector(nn.Module):
    """LayerNorm → Linear(d_enc → d_llm) → GELU → Dropout."""

    def __init__(self, config: OpenTSLMConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.encoder_config.hidden_size, eps=config.encoder_config.layer_norm_eps)
        self.linear = nn.Linear(config.encoder_config.hidden_size, config.text_config.hidden_size)
        self.act = nn.GELU()
        self.dropout = nn.Dropout(config.projector_dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.act(self.linear(self.layer_norm(hidden))))


# ---------------------------------------------------------------------------------------------------------------------
# Flamingo: perceiver resampler and gated cross-attention
# ---------------------------------------------------------------------------------------------------------------------
class OpenTSLMFeedForward(nn.Module):
    """LayerNorm → Linear(dim → mult·dim) → GELU → Linear(mult·dim → dim), without biases."""

    def __init__(self, dim: int, mult: int, eps: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, dim * mult, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mult, dim, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(self.layer_norm(hidden))))


class OpenTSLMPerceiverAttention(nn.Module):
    """The latents attend to the series' patches and to themselves; padding patches are masked out."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.media_norm = nn.LayerNorm(dim, eps=eps)
        self.latents_norm = nn.LayerNorm(dim, eps=eps)
        self.q_proj = nn.Linear(dim, num_heads * head_dim, bias=False)
        self.kv_proj = nn.Linear(dim, 2 * num_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(num_heads * head_dim, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        media, latents = self.media_norm(media), self.latents_norm(latents)
        query = _split_heads(self.q_proj(latents), self.num_heads)
        key, value = (
            _split_heads(t, self.num_heads) for t in self.kv_proj(torch.cat([media, latents], 1)).chunk(2, -1)
        )
        keep = torch.cat([media_mask, media_mask.new_ones(latents.shape[:2])], 1)[:, None, None, :]
        out = nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=keep)
        return self.o_proj(_merge_heads(out))


class OpenTSLMPerceiverLayer(nn.Module):
    def __init__(self, config: OpenTSLMConfig):
        super().__init__()
        dim, eps = config.encoder_config.hidden_size, config.encoder_config.layer_norm_eps
        self.attention = OpenTSLMPerceiverAttention(dim, config.resampler_num_heads, config.resampler_head_dim, eps)
        self.feed_forward = OpenTSLMFeedForward(dim, config.resampler_ff_mult, eps)

    def forward(self, media: torch.Tensor, latents: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        latents = self.attention(media, latents, media_mask) + latents
        return self.feed_forward(latents) + latents


class OpenTSLMPerceiverResampler(nn.Module):
    """Turns the patch embeddings of a series (any length) into `num_latents` vectors: learned latents that attend
    to the patches, `resampler_num_layers` times, then a LayerNorm."""

    def __init__(self, config: OpenTSLMConfig):
        super().__init__()
        dim = config.encoder_config.hidden_size
        self.latents = nn.Parameter(torch.zeros(config.num_latents, dim))
        self.layers = nn.ModuleList(OpenTSLMPerceiverLayer(config) for _ in range(config.resampler_num_layers))
        self.layer_norm = nn.LayerNorm(dim, eps=config.encoder_config.layer_norm_eps)

    def forward(self, media: torch.Tensor, media_mask: torch.Tensor) -> torch.Tensor:
        """`media` `(num_series, patches, dim)` with `media_mask` `(num_series, patches)` (True: a real patch) →
        `(num_series, num_latents, dim)`."""
        media = media.to(self.latents.dtype)
        latents = self.latents.unsqueeze(0).expand(media.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(media, latents, media_mask)
        return self.layer_norm(latents)


class OpenTSLMMediaCache:
    """What the gated cross-attention blocks read: the latents of every series of the batch and, once computed, the
    keys and values each block projects from them (the decode steps of `generate` reuse them).

    `latents` is `(batch, max_series * num_latents, dim)`; `key_media` gives each latent's series ordinal within its
    sample (-1 where the sample has fewer series); `markers_seen` counts, per sample, the series markers in the text
    processed so far, so a decode step knows which series its new tokens may see.
    """

    def __init__(self, latents: torch.Tensor, key_media: torch.Tensor, markers_seen: torch.Tensor, mode: str):
        self.latents = latents
        self.key_media = key_media
        self.markers_seen = markers_seen
        self.mode = mode
        self.key_values: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def advanced(self, markers_seen: torch.Tensor) -> OpenTSLMMediaCache:
        """The same media after more text: shares latents and keys/values, counts the markers anew."""
        moved = OpenTSLMMediaCache(self.latents, self.key_media, markers_seen, self.mode)
        moved.key_values = self.key_values
        return moved


class OpenTSLMMediaContext:
    """One forward's view of the media: the cache plus, per query token, how many markers precede it (inclusive)."""

    def __init__(
        self,
        cache: OpenTSLMMediaCache,
        text_time: torch.Tensor,
        blocks: nn.ModuleList | None = None,
        block_of_layer: dict[int, int] | None = None,
    ):
        self.cache = cache
        self.text_time = text_time
        self.blocks = blocks
        self.block_of_layer = block_of_layer or {}
        self.blocks_run = 0
        self._masks: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]] = {}

    def attention_mask(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """An additive mask `(batch, 1, queries, keys)`, and `(batch, 1, queries, 1)` True where a token must get no
        cross-attention at all. Built once per forward and shared by every block."""
        if dtype not in self._masks:
            text_time, key_media = self.text_time, self.cache.key_media
            if self.cache.mode == "original":
                # One media item per sample: tokens after exactly one marker see it; after two or more every key is
                # masked alike, so the softmax is uniform (the original's behaviour); before the first, nothing.
                allowed = (text_time == 1)[:, :, None] & (key_media >= 0)[:, None, :]
                blind = text_time == 0
            else:
                allowed = (key_media[:, None, :] >= 0) & (key_media[:, None, :] < text_time[:, :, None])
                blind = ~allowed.any(-1)
            additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            additive = additive.masked_fill(~allowed, torch.finfo(dtype).min)
            self._masks[dtype] = (additive[:, None], blind[:, None, :, None])
        return self._masks[dtype]


class OpenTSLMGatedCrossAttention(nn.Module):
    """Text queries attend to the series' latents; tanh-gated residual attention and feed-forward. The gates start
    at 0, so a fresh block leaves the LLM's computation unchanged."""

    def __init__(self, config: OpenTSLMConfig):
        super().__init__()
        dim, media_dim = config.text_config.hidden_size, config.encoder_config.hidden_size
        heads, head_dim = config.cross_attention_num_heads, config.cross_attention_head_dim
        eps = config.encoder_config.layer_norm_eps
        self.num_heads = heads
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.q_proj = nn.Linear(dim, heads * head_dim, bias=False)
        self.kv_proj = nn.Linear(media_dim, 2 * heads * head_dim, bias=False)
        self.o_proj = nn.Linear(heads * head_dim, dim, bias=False)
        self.attention_gate = nn.Parameter(torch.zeros(1))
        self.feed_forward = OpenTSLMFeedForward(dim, config.cross_attention_ff_mult, eps)
        self.feed_forward_gate = nn.Parameter(torch.zeros(1))

    def forward(self, hidden_states: torch.Tensor, media: OpenTSLMMediaContext, index: int) -> torch.Tensor:
        media.blocks_run += 1
        dtype = self.q_proj.weight.dtype
        key_values = media.cache.key_values.get(index)
        if key_values is None:
            key, value = self.kv_proj(media.cache.latents.to(dtype)).chunk(2, -1)
            key_values = (_split_heads(key, self.num_heads), _split_heads(value, self.num_heads))
            media.cache.key_values[index] = key_values
        hidden = hidden_states.to(dtype)
        if key_values[0].shape[-2] == 0:  # no sample has a series: nothing to attend to
            update = torch.zeros_like(hidden)
        else:
            query = _split_heads(self.q_proj(self.layer_norm(hidden)), self.num_heads)
            additive, blind = media.attention_mask(query.dtype)
            attended = nn.functional.scaled_dot_product_attention(query, *key_values, attn_mask=additive)
            update = self.o_proj(_merge_heads(attended.masked_fill(blind, 0.0))) * self.attention_gate.tanh()
        update = update + self.feed_forward(hidden + update) * self.feed_forward_gate.tanh()
        # Only the block's contribution is cast, so a bf16 LLM's residual stream is not rounded twice.
        return hidden_states + update.to(hidden_states.dtype)


def _split_heads(hidden: torch.Tensor, num_heads: int) -> torch.Tensor:
    return hidden.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def _merge_heads(hidden: torch.Tensor) -> torch.Tensor:
    return hidden.transpose(1, 2).flatten(2)


MEDIA_KWARG = "opentslm_media"


def find_decoder_layers(language_model: nn.Module, num_layers: int) -> nn.ModuleList:
    """The decoder's list of layers, found by shape rather than by name, so any decoder-only LLM works."""
    for module in language_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    raise ValueError(
        f"Could not find the {num_layers} decoder layers of {type(language_model).__name__}: no nn.ModuleList of that "
        "length. The Flamingo variant needs a decoder whose layers are one ModuleList."
    )


def _media_hook(layer_index: int):
    """A forward pre-hook for a decoder layer: takes the media context out of the layer's keyword arguments (so the
    attention functions never see it) and, when a gated block sits in front of the layer, runs it first."""

    def hook(module, args, kwargs):
        media = kwargs.pop(MEDIA_KWARG, None)
        block_index = None if media is None else media.block_of_layer.get(layer_index)
        if block_index is None:
            return args, kwargs
        block = media.blocks[block_index]
        if args:
            args = (block(args[0], media, block_index), *args[1:])
        else:
            kwargs["hidden_states"] = block(kwargs["hidden_states"], media, block_index)
        return args, kwargs

    return hook


class OpenTSLMPreTrainedModel(PreTrainedModel):
    config: OpenTSLMConfig
    config_class = OpenTSLMConfig
    base_model_prefix = "model"
    input_modalities = ("time", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]  # the KV cache's name before and from 5.24
    _no_split_modules = ["OpenTSLMTimeSeriesEncoder"]
    # The encoder, projector and LoRA adapters are small and numerically touchy (and trained): keep them in fp32
    # whatever the LLM's dtype.
    _keep_in_fp32_modules_strict = [
        "time_series_encoder",
        "projector",
        "resampler",
        "cross_attention_layers",
        "lora_A",
        "lora_B",
    ]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, OpenTSLMTimeSeriesEncoder):
            init.normal_(module.position_embedding, mean=0.0, std=module.config.initializer_range)
        elif isinstance(module, OpenTSLMPerceiverResampler):
            init.normal_(module.latents, mean=0.0, std=1.0)
        elif isinstance(module, OpenTSLMGatedCrossAttention):
            # Closed gates: a fresh model computes exactly what its LLM computes.
            init.zeros_(module.attention_gate)
            init.zeros_(module.feed_forward_gate)


class OpenTSLMModel(OpenTSLMPreTrainedModel):
    """The time-series encoder, the bridge into the LLM and the LLM body (without its head).

    SP: a projector maps patch embeddings to the LLM's width and they replace the placeholder tokens. Flamingo: a
    perceiver resampler turns each series into latents, and gated cross-attention blocks, run by forward pre-hooks in
    front of the LLM's decoder layers, let the text attend to them; the LLM's own modules are untouched.
    """

    def __init__(self, config: OpenTSLMConfig):
        super().__init__(config)
        self.time_series_encoder = OpenTSLMTimeSeriesEncoder(config.encoder_config)
        if config.architecture == "flamingo":
            self.resampler = OpenTSLMPerceiverResampler(config)
            num_blocks = config.text_config.num_hidden_layers // config.cross_attention_every_n_layers
            self.cross_attention_layers = nn.ModuleList(OpenTSLMGatedCrossAttention(config) for _ in range(num_blocks))
        else:
            self.projector = OpenTSLMProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        if config.lora is not None:
            inject_lora(self.language_model, config.lora)
        use_lean_activations(self.language_model)
        self.attach_cross_attention()
        self.post_init()

    @property
    def is_flamingo(self) -> bool:
        return self.config.architecture == "flamingo"

    def attach_cross_attention(self) -> None:
        """Flamingo: hook the gated blocks in front of every `cross_attention_every_n_layers`-th decoder layer of the
        current `language_model` (call again after replacing it)."""
        for handle in getattr(self, "_media_hook_handles", []):
            handle.remove()
        self._media_hook_handles = []
        if not self.is_flamingo:
            return
        layers = find_decoder_layers(self.language_model, self.config.text_config.num_hidden_layers)
        every = self.config.cross_attention_every_n_layers
        self._block_of_layer = {layer: block for block, layer in enumerate(range(every - 1, len(layers), every))}
        self._media_hook_handles = [
            layer.register_forward_pre_hook(_media_hook(index), with_kwargs=True) for index, layer in enumerate(layers)
        ]

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def _check_time_series(self, time_series: torch.Tensor, time_series_mask: torch.Tensor) -> None:
        if time_series.ndim != 3 or time_series_mask.shape != time_series.shape:
            raise ValueError(
                "time_series must have shape (batch, max_series, length) with a time_series_mask of the same shape; "
                f"got time_series {tuple(time_series.shape)} and time_series_mask {tuple(time_series_mask.shape)}. "
                "Use OpenTSLMProcessor to build them."
            )
        patch_size = self.config.encoder_config.patch_size
        if time_series.shape[-1] % patch_size:
            raise ValueError(
                f"time_series length {time_series.shape[-1]} is not a multiple of the patch size {patch_size}; "
                "pad it (the processor does) and mark the padding in time_series_mask."
            )

    def encode_time_series(
        self, time_series: torch.Tensor, time_series_mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """Run the encoder on every present series of the batch.

        Returns the patch embeddings `(num_present, patches, encoder_hidden)` (None when no sample has a series),
        their patch mask `(num_present, patches)` and which `(batch, max_series)` rows are present.
        """
        self._check_time_series(time_series, time_series_mask)
        patch_size = self.config.encoder_config.patch_size
        mask = time_series_mask.bool()
        present = mask.any(dim=-1)
        patch_mask = mask[present].unflatten(-1, (-1, patch_size)).any(dim=-1)
        if not present.any():
            return None, patch_mask, present
        return self.time_series_encoder(time_series[present], patch_mask), patch_mask, present

    def get_time_series_features(self, time_series: torch.Tensor, time_series_mask: torch.Tensor) -> torch.Tensor:
        """SP: encode and project a batch of series.

        Args:
            time_series: `(batch, max_series, length)` z-normalised values, zero where padded.
            time_series_mask: same shape, 1 where a value is real. A row of zeros is an absent series.

        Returns:
            `(num_valid_patches, text_hidden_size)`: the projected embeddings of every patch that holds data, ordered
            sample by sample, series by series, patch by patch — the order of the placeholder tokens in the text.
        """
        patch_size = self.config.encoder_config.patch_size
        self._check_time_series(time_series, time_series_mask)
        mask = time_series_mask.bool()
        present = mask.any(dim=-1)
        if not present.any():
            return time_series.new_zeros(0, self.config.text_config.hidden_size)
        series = time_series[present]
        patch_mask = mask[present].unflatten(-1, (-1, patch_size)).any(dim=-1)
        # Each series is encoded up to its last real patch only: series of one extent share an encoder call, so
        # a short series next to a long one costs its own length, not the longest one's.
        extent = patch_mask.shape[-1] - patch_mask.flip(-1).int().argmax(dim=-1)
        extents = extent.unique().tolist()
        if len(extents) == 1:
            width = extents[0]
            encoded = self.time_series_encoder(series[:, : width * patch_size], patch_mask[:, :width])
            return self.projector(encoded)[patch_mask[:, :width]]
        pieces: list[torch.Tensor | None] = [None] * series.shape[0]
        for width in extents:
            rows = (extent == width).nonzero().flatten()
            rows_mask = patch_mask[rows, :width]
            projected = self.projector(self.time_series_encoder(series[rows, : width * patch_size], rows_mask))
            for position, row in enumerate(rows.tolist()):
                pieces[row] = projected[position][rows_mask[position]]
        return torch.cat(pieces)

    def get_time_series_latents(
        self, time_series: torch.Tensor, time_series_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flamingo: encode and resample a batch of series.

        Returns the latents `(batch, media * num_latents, encoder_hidden)`, each latent's series ordinal within its
        sample `(batch, media * num_latents)` (-1 for padding), and the number of series per sample.
        """
        encoded, patch_mask, present = self.encode_time_series(time_series, time_series_mask)
        batch, max_series = present.shape
        num_latents, dim = self.config.num_latents, self.config.encoder_config.hidden_size
        dtype = self.resampler.latents.dtype
        counts = present.sum(-1)
        if encoded is None:
            empty = time_series.new_zeros(batch, 0, dim, dtype=dtype)
            return empty, torch.zeros(batch, 0, dtype=torch.long, device=time_series.device), counts
        if self.config.media_attention == "original":
            # All series of a sample form one media item, their patches resampled together.
            patches = encoded.new_zeros(batch, max_series, *encoded.shape[1:])
            patches[present] = encoded
            full_mask = patch_mask.new_zeros(batch, max_series, patch_mask.shape[-1])
            full_mask[present] = patch_mask
            latents = self.resampler(patches.flatten(1, 2), full_mask.flatten(1, 2))
            key_media = torch.where(counts > 0, 0, -1)[:, None].expand(-1, num_latents)
            return latents, key_media, counts
        resampled = self.resampler(encoded, patch_mask)
        latents = resampled.new_zeros(batch, max_series, num_latents, dim)
        latents[present] = resampled
        ordinal = torch.where(present, present.long().cumsum(-1) - 1, -1)
        key_media = ordinal[:, :, None].expand(-1, -1, num_latents).flatten(1)
        return latents.flatten(1, 2), key_media, counts

    def get_placeholder_mask(self, input_ids: torch.LongTensor, num_features: int) -> torch.Tensor:
        placeholder_mask = input_ids == self.config.ts_token_id
        num_placeholders = int(placeholder_mask.sum())
        if num_placeholders != num_features:
            raise ValueError(
                f"The text holds {num_placeholders} time-series placeholder tokens but the series give {num_features} "
                "patch embeddings; they must be equal (one placeholder per patch). Build inputs with "
                "OpenTSLMProcessor, which writes the right number for each series."
            )
        return placeholder_mask

    def _media_context(
        self,
        input_ids: torch.LongTensor,
        time_series: torch.Tensor | None,
        time_series_mask: torch.Tensor | None,
        media_cache: OpenTSLMMediaCache | None,
    ) -> tuple[OpenTSLMMediaContext, torch.Tensor | None]:
        """Flamingo: the media the gated blocks read in this forward, from fresh series or the previous step's cache."""
        markers = input_ids == self.config.ts_token_id
        batch = input_ids.shape[0]
        latents = None
        if time_series is not None:
            latents, key_media, counts = self.get_time_series_latents(time_series, time_series_mask)
            found = markers.sum(-1)
            if not torch.equal(found, counts.to(found.device)):
                raise ValueError(
                    f"The text holds {found.tolist()} series markers per sample but the series give {counts.tolist()}; "
                    "a Flamingo prompt needs one marker per series. Build inputs with OpenTSLMProcessor("
                    "placeholders='per_series'), which writes one for each series."
                )
            cache = OpenTSLMMediaCache(
                latents, key_media, markers.new_zeros(batch, dtype=torch.long), self.config.media_attention
            )
        elif media_cache is not None:
            cache = media_cache
        else:
            if bool(markers.any()):
                raise ValueError(
                    "input_ids contain time-series markers but no time_series was given; pass the processor's "
                    "time_series and time_series_mask."
                )
            dim = self.config.encoder_config.hidden_size
            cache = OpenTSLMMediaCache(
                input_ids.new_zeros(batch, 0, dim, dtype=self.resampler.latents.dtype),
                input_ids.new_zeros(batch, 0),
                input_ids.new_zeros(batch),
                self.config.media_attention,
            )
        text_time = cache.markers_seen[:, None] + markers.long().cumsum(-1)
        context = OpenTSLMMediaContext(
            cache.advanced(text_time[:, -1]), text_time, self.cross_attention_layers, self._block_of_layer
        )
        return context, latents

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        time_series: torch.FloatTensor | None = None,
        time_series_mask: torch.Tensor | None = None,
        media_cache: OpenTSLMMediaCache | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> OpenTSLMModelOutputWithPast:
        r"""
        media_cache (`OpenTSLMMediaCache`, *optional*):
            Flamingo: the media of the previous forward (`outputs.media_cache`), for decode steps that continue a
            prompt from `past_key_values` without passing its series again. `generate` hands it on by itself.
        """
        if (cache := kwargs.pop("cache", None)) is not None:  # the KV cache's name from transformers 5.24 on
            past_key_values = cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        ts_token_id = self.config.ts_token_id
        if time_series is not None:
            if ts_token_id is None:
                raise ValueError(
                    "time_series was given but config.ts_token_id is None, so the text cannot say where the series "
                    "go; set ts_token_id to the processor's placeholder id (OpenTSLMProcessor.ts_token_id)."
                )
            if time_series_mask is None:
                raise ValueError("time_series was given without time_series_mask; build both with the processor.")
            if inputs_embeds is not None:
                raise ValueError("time_series cannot be combined with inputs_embeds; pass input_ids instead.")

        features = None
        media = None
        packed = (
            attention_mask is None
            and position_ids is not None
            and past_key_values is None
            and bool((position_ids[..., 1:] - position_ids[..., :-1] != 1).any())
        )
        if packed:
            # Several samples in one row (positions restart at each): transformers keeps attention within each
            # sample only when it builds the mask without a cache, and a cache of a packed row is of no use anyway.
            if self.is_flamingo:
                raise ValueError(
                    "Packed (padding-free) batches are supported by the SP variant only: Flamingo's cross-attention "
                    "reads the series of one sample per row. Use padded batches "
                    "(OpenTSLMDataCollator(padding_free=False))."
                )
            use_cache = False
        if self.is_flamingo:
            if input_ids is None:
                raise ValueError("The Flamingo variant needs input_ids (its markers say which series the text sees).")
            media, features = self._media_context(input_ids, time_series, time_series_mask, media_cache)
            kwargs[MEDIA_KWARG] = media
            inputs_embeds = self.get_input_embeddings()(input_ids)
        elif inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if time_series is not None:
                features = self.get_time_series_features(time_series, time_series_mask)
                placeholder_mask = self.get_placeholder_mask(input_ids, features.shape[0])
                inputs_embeds = inputs_embeds.masked_scatter(
                    placeholder_mask.unsqueeze(-1), features.to(inputs_embeds.dtype)
                )
            elif ts_token_id is not None and bool((input_ids == ts_token_id).any()):
                raise ValueError(
                    "input_ids contain time-series placeholder tokens but no time_series was given; pass the "
                    "processor's time_series and time_series_mask."
                )

        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            # Left padding: count positions from each sample's first real token, as generate() does, so a sample
            # gets the same positions alone or in a padded batch. Masked tokens get position 1, as generate() gives
            # them: a converted original OpenTSLM-SP with a left-padding tokenizer predicts from such a token.
            past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
            mask = attention_mask.long()
            position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
            position_ids = position_ids[:, past_length : past_length + inputs_embeds.shape[1]]

        if self._frozen_prefix_applies(
            input_ids, inputs_embeds, attention_mask, position_ids, past_key_values, kwargs
        ):
            hidden_states = self._forward_frozen_prefix(input_ids, inputs_embeds, attention_mask, position_ids, kwargs)
            if hidden_states is not None:
                return OpenTSLMModelOutputWithPast(last_hidden_state=hidden_states, time_series_hidden_states=features)
        kwargs[CACHE_NAME] = past_key_values
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        if media is not None and media.blocks_run != len(self.cross_attention_layers):
            raise RuntimeError(
                f"Only {media.blocks_run} of {len(self.cross_attention_layers)} gated cross-attention blocks ran: "
                f"{type(self.language_model).__name__} does not pass keyword arguments on to its decoder layers, "
                "which the Flamingo variant needs."
            )
        return OpenTSLMModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            time_series_hidden_states=features,
            media_cache=media.cache if media is not None else None,
        )

    def _frozen_prefix_applies(self, input_ids, inputs_embeds, attention_mask, position_ids, past_key_values, kwargs):
        """Whether this forward can run the prompt prefixes (everything before each sample's first series) without
        gradients: SP, training a part before the LLM through a frozen LLM, with `opentslm_varlen` attention on
        plain causal layers, and nothing asked for that the two-pass forward does not give (cache, hidden states,
        attention weights)."""
        text_config = self.config.text_config
        return (
            not self.is_flamingo
            and input_ids is not None
            and torch.is_grad_enabled()
            and inputs_embeds.requires_grad
            and past_key_values is None
            and (attention_mask is None or attention_mask.ndim == 2)
            and self.language_model.config._attn_implementation == VARLEN_ATTENTION
            and not (kwargs.get("output_hidden_states") or kwargs.get("output_attentions"))
            and not getattr(text_config, "attention_dropout", 0.0)
            and getattr(text_config, "attn_logit_softcapping", None) is None
            and all(kind == "full_attention" for kind in getattr(text_config, "layer_types", None) or ())
            and (
                getattr(text_config, "sliding_window", None) is None
                or not getattr(text_config, "use_sliding_window", True)
            )
            and not any(parameter.requires_grad for parameter in self.language_model.parameters())
        )

    def _forward_frozen_prefix(self, input_ids, inputs_embeds, attention_mask, position_ids, kwargs):
        """The LLM's last hidden states, computed in two passes: the prompt prefixes of all samples without
        gradients (no trainable parameter reaches them: the LLM is frozen and the series come later), then the rest
        of each sample, attending to its prefix's keys and values. Same values as one pass; the prefixes keep no
        activations for the backward pass and take no part in it. Padding positions get zeros. None when no sample
        has a prefix."""
        batch, length, width = inputs_embeds.shape
        if position_ids is None:
            position_ids = torch.arange(length, device=inputs_embeds.device).expand(batch, length)
        rows = torch.arange(batch * length, device=inputs_embeds.device).view(batch, length)
        if attention_mask is not None:
            samples = [row[mask.bool()] for row, mask in zip(rows, attention_mask)]
        elif (lengths := packed_sample_lengths(position_ids)) is not None:
            samples = list(rows[0].split(lengths))
        else:
            samples = list(rows)
        is_series = (input_ids == self.config.ts_token_id).flatten()
        prefixes, rests = [], []
        for sample in samples:
            series = is_series[sample].nonzero()
            cut = int(series[0]) if len(series) else len(sample)
            prefixes.append(sample[:cut])
            rests.append(sample[cut:])
        plan = FrozenPrefix([len(p) for p in prefixes], [len(r) for r in rests])
        if not sum(plan.prefix_lengths):
            return None
        embeds, positions = inputs_embeds.reshape(batch * length, width), position_ids.reshape(batch * length)
        prefix, rest = torch.cat(prefixes), torch.cat(rests)
        kwargs = {**kwargs, FROZEN_PREFIX_KWARG: plan, CACHE_NAME: None}
        with torch.no_grad(), warnings.catch_warnings():
            # reentrant gradient checkpointing would warn that this pass has no inputs requiring grad: none should
            warnings.filterwarnings("ignore", message="None of the inputs have requires_grad")
            prefix_states = self.language_model(
                inputs_embeds=embeds[prefix][None], position_ids=positions[prefix][None], use_cache=False, **kwargs
            ).last_hidden_state
        layers = self.config.text_config.num_hidden_layers
        if len(plan.keys) != layers:
            raise RuntimeError(
                f"Only {len(plan.keys)} of {layers} layers of {type(self.language_model).__name__} saw the frozen "
                "prefix: it does not pass keyword arguments on to its attention. Train with "
                "attn_implementation='sdpa' instead."
            )
        plan.attending = True
        rest_states = self.language_model(
            inputs_embeds=embeds[rest][None], position_ids=positions[rest][None], use_cache=False, **kwargs
        ).last_hidden_state
        states = rest_states.new_zeros(batch * length, rest_states.shape[-1])
        states = states.index_copy(0, torch.cat([prefix, rest]), torch.cat([prefix_states[0], rest_states[0]]))
        return states.view(batch, length, -1)


class OpenTSLMForCausalLM(OpenTSLMPreTrainedModel, GenerationMixin):
    """OpenTSLM with the LLM's language-modelling head: loss on labelled tokens and `generate` with a KV cache."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: OpenTSLMConfig):
        super().__init__(config)
        self.model = OpenTSLMModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module):
        self.lm_head = new_embeddings

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    @property
    def time_series_encoder(self) -> OpenTSLMTimeSeriesEncoder:
        return self.model.time_series_encoder

    @property
    def projector(self) -> OpenTSLMProjector:
        return self.model.projector

    @property
    def resampler(self) -> OpenTSLMPerceiverResampler:
        return self.model.resampler

    @property
    def cross_attention_layers(self) -> nn.ModuleList:
        return self.model.cross_attention_layers

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        time_series: torch.FloatTensor | None = None,
        time_series_mask: torch.Tensor | None = None,
        media_cache: OpenTSLMMediaCache | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool = False,
        label_weights: torch.Tensor | None = None,
        **kwargs,
    ) -> OpenTSLMCausalLMOutputWithPast:
        r"""
        time_series (`torch.FloatTensor` of shape `(batch, max_series, length)`, *optional*):
            z-normalised series, zero-padded to a multiple of the patch size; needed at prefill only.
        time_series_mask (`torch.Tensor` of the same shape, *optional*):
            1 where `time_series` holds data.
        labels (`torch.LongTensor` of shape `(batch, sequence_length)`, *optional*):
            Token ids to predict, -100 where no loss is taken (prompt, series, padding).
        skip_logits (`bool`, *optional*, defaults to `False`):
            With `labels`: run the LM head only on the positions that predict a label and return the loss without
            `logits`. The loss is the same; training saves the full-vocabulary logits of every prompt and series
            position (the recipes' trainer sets it).
        label_weights (`torch.FloatTensor` of the shape of `labels`, *optional*):
            With `skip_logits`: the loss is the sum over labels of each label's weight times its token loss, instead
            of their mean (the recipes' `loss_weighting: sample` weighs every sample's answer alike with it).
        """
        if skip_logits and labels is None:
            raise ValueError("skip_logits=True needs labels: without them there is nothing to compute.")
        if label_weights is not None and (not skip_logits or label_weights.shape != labels.shape):
            raise ValueError("label_weights needs skip_logits=True and the shape of labels.")
        if (cache := kwargs.pop("cache", None)) is not None:  # the KV cache's name from transformers 5.24 on
            past_key_values = cache
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            time_series=time_series,
            time_series_mask=time_series_mask,
            media_cache=media_cache,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if skip_logits:
            # Position t predicts labels[t + 1]; only those with a label go through the head.
            shift_labels = nn.functional.pad(labels, (0, 1), value=-100)[..., 1:].to(hidden_states.device)
            labelled = shift_labels != -100
            weights = None
            if label_weights is not None:
                weights = nn.functional.pad(label_weights, (0, 1))[..., 1:].to(hidden_states.device)[labelled]
            if self._loss_without_logits():
                # The same loss without keeping the labelled rows' full-vocabulary logits for the backward pass.
                loss = linear_cross_entropy(
                    hidden_states[labelled],
                    self.lm_head.weight,
                    shift_labels[labelled],
                    masked_token=self._masked_token(self.lm_head.weight.shape[0]),
                    num_items_in_batch=kwargs.get("num_items_in_batch"),
                    row_weights=weights,
                )
            elif weights is not None:
                logits = self._mask_placeholder(self.lm_head(hidden_states[labelled])).float()
                token_loss = nn.functional.cross_entropy(logits, shift_labels[labelled], reduction="none")
                loss = (token_loss * weights.float()).sum()
            else:
                logits = self._mask_placeholder(self.lm_head(hidden_states[labelled]))
                loss = self.loss_function(
                    logits=logits,
                    labels=None,
                    shift_labels=shift_labels[labelled],
                    vocab_size=self.config.text_config.vocab_size,
                    **kwargs,
                )
            return OpenTSLMCausalLMOutputWithPast(
                loss=loss,
                **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
                hidden_states=outputs.hidden_states,
                attentions=outputs.attentions,
                time_series_hidden_states=outputs.time_series_hidden_states,
                media_cache=outputs.media_cache,
            )
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:, :] if logits_to_keep else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep, :]
        # the head on rows: on a 3-D slice of the last positions, `matmul` would copy the transposed head weight
        rows = self.lm_head(hidden_states.reshape(-1, hidden_states.shape[-1]))
        logits = self._mask_placeholder(rows.view(*hidden_states.shape[:-1], -1))

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )

        return OpenTSLMCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            time_series_hidden_states=outputs.time_series_hidden_states,
            media_cache=outputs.media_cache,
        )

    def _loss_without_logits(self) -> bool:
        """Whether the labelled rows' loss can skip the logits (`linear_cross_entropy`): transformers' causal-LM
        loss on a plain linear head whose whole weight is here (not sharded by DeepSpeed ZeRO-3 or FSDP)."""
        head = self.lm_head
        return (
            self.loss_function is ForCausalLMLoss
            and isinstance(head, nn.Linear)
            and head.bias is None
            and not hasattr(head.weight, "ds_id")
            and type(head.weight.data) is torch.Tensor
            and tuple(head.weight.shape) == (head.out_features, head.in_features)
        )

    def _masked_token(self, vocab_size: int) -> int | None:
        """The placeholder marks where series go; it is never a word the model may say. A converted original
        OpenTSLM-Flamingo keeps the original's behaviour: its `<image>` token is an ordinary logit there."""
        token = self.config.ts_token_id
        if token is None or token >= vocab_size or self.config.media_attention == "original":
            return None
        return token

    def _mask_placeholder(self, logits: torch.Tensor) -> torch.Tensor:
        if (token := self._masked_token(logits.shape[-1])) is not None:
            logits[..., token] = torch.finfo(logits.dtype).min
        return logits

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        series_inputs = {name: kwargs.pop(name, None) for name in TIME_SERIES_INPUTS}
        media_cache = kwargs.pop("media_cache", None)
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs.update(series_inputs)  # without a cache every step starts from the whole prompt again
        else:
            model_inputs["media_cache"] = media_cache
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        if getattr(outputs, "media_cache", None) is not None:
            # Flamingo: the series were resampled once at prefill; decode steps reuse latents and keys/values.
            model_kwargs["media_cache"] = outputs.media_cache
        return model_kwargs

    # ----------------------------------------------------------------------------------------------------------
    # Building from a pretrained LLM and choosing what trains
    # ----------------------------------------------------------------------------------------------------------
    @classmethod
    def from_llm(
        cls,
        llm_name_or_path: str,
        processor,
        *,
        architecture: str = "sp",
        encoder_config: dict | OpenTSLMEncoderConfig | None = None,
        projector_dropout: float = 0.0,
        config_overrides: dict | None = None,
        freeze_llm: bool = True,
        base_model_name_or_path: str | None = None,
        **llm_kwargs,
    ) -> OpenTSLMForCausalLM:
        """Wrap a pretrained decoder-only LLM (Hub id or folder) with a freshly initialised encoder and bridge.

        `processor` is the `OpenTSLMProcessor` built for the same LLM (`OpenTSLMProcessor.from_llm`): its tokenizer
        holds the placeholder token, so the embeddings are resized to it and `ts_token_id` is taken from it.
        `architecture` is `"sp"` or `"flamingo"` (the processor must then write one placeholder per series:
        `OpenTSLMProcessor.from_llm(..., placeholders="per_series")`); Flamingo's encoder defaults to the patch
        tokenizer without transformer layers, as in the original. `config_overrides` sets other `OpenTSLMConfig`
        fields (`num_latents`, `cross_attention_every_n_layers`...). `llm_kwargs` go to
        `AutoModelForCausalLM.from_pretrained` (`dtype`, `attn_implementation`, `revision`...).
        `base_model_name_or_path` is what the config records as the base LLM (default: `llm_name_or_path`); name the
        Hub id there when `llm_name_or_path` is a local copy of it.
        """
        expected = "per_series" if architecture == "flamingo" else "per_patch"
        if getattr(processor, "placeholders", "per_patch") != expected:
            raise ValueError(
                f"The {architecture!r} architecture needs a processor with placeholders={expected!r}, got "
                f"{processor.placeholders!r}; build it with OpenTSLMProcessor.from_llm(..., placeholders={expected!r})."
            )
        if encoder_config is None:
            encoder_config = {"num_hidden_layers": 0} if architecture == "flamingo" else {}
        llm = AutoModelForCausalLM.from_pretrained(llm_name_or_path, **llm_kwargs)
        base_vocab_size = llm.get_input_embeddings().num_embeddings
        tokenizer = processor.tokenizer
        if base_vocab_size < len(tokenizer):
            # New rows start at the mean of the others: Flamingo's marker token is read by the LLM as it is.
            llm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        if base_model_name_or_path is None and isinstance(llm_name_or_path, (str, os.PathLike)):
            base_model_name_or_path = str(llm_name_or_path)
        attention = llm.config._attn_implementation  # the config below resets it on the shared text config
        config = cls.config_class(
            text_config=llm.config,
            encoder_config=encoder_config,
            ts_token_id=processor.ts_token_id,
            projector_dropout=projector_dropout,
            tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
            architecture=architecture,
            base_model_name_or_path=base_model_name_or_path,
            base_vocab_size=base_vocab_size,
            **(config_overrides or {}),
        )
        model = cls._wrap_llm(llm, config)
        if attention is not None and model.model.language_model.config._attn_implementation != attention:
            # the LLM keeps the attention it was loaded with
            model.model.language_model.set_attn_implementation(attention)
        model.set_trainable(encoder=True, projector=True, llm=not freeze_llm)
        return model

    @classmethod
    def _wrap_llm(cls, llm: PreTrainedModel, config: OpenTSLMConfig) -> OpenTSLMForCausalLM:
        """Build the model around a loaded LLM (embeddings already sized for `config`): the LLM's weights are moved
        in, not copied; the encoder and bridge are freshly initialised; LoRA adapters of `config.lora` are added."""
        config._attn_implementation = llm.config._attn_implementation
        with torch.device("meta"):
            model = cls(config)
        model.model.language_model = llm.get_decoder()
        model.lm_head = llm.get_output_embeddings()
        if config.lora is not None:
            inject_lora(model.model.language_model, config.lora)
        new_parts = {"time_series_encoder": OpenTSLMTimeSeriesEncoder(config.encoder_config)}
        if config.architecture == "flamingo":
            new_parts["resampler"] = OpenTSLMPerceiverResampler(config)
            num_blocks = len(model.model.cross_attention_layers)
            new_parts["cross_attention_layers"] = nn.ModuleList(
                OpenTSLMGatedCrossAttention(config) for _ in range(num_blocks)
            )
        else:
            new_parts["projector"] = OpenTSLMProjector(config)
        for name, module in new_parts.items():
            setattr(model.model, name, module.to(llm.device))
            for submodule in module.modules():
                model._init_weights(submodule)
        use_lean_activations(model.model.language_model)
        model.model.attach_cross_attention()
        model.generation_config = llm.generation_config
        return model

    # ----------------------------------------------------------------------------------------------------------
    # Checkpoints that hold only OpenTSLM's own weights (config.llm_weights == "base")
    # ----------------------------------------------------------------------------------------------------------
    def own_state_dict(self) -> dict[str, torch.Tensor]:
        """What OpenTSLM adds to its base LLM: the encoder and bridge, LoRA adapters, and the embedding rows of the
        added tokens (`added_tokens.*`, from `config.base_vocab_size` on). Everything else is the base LLM's."""
        if self.config.base_vocab_size is None:
            raise ValueError(
                "config.base_vocab_size is unknown (a model built before it was recorded): set it to the base LLM's "
                "vocabulary size before saving only OpenTSLM's own weights."
            )
        state = {}
        for name, tensor in self.state_dict().items():
            in_llm = name.startswith("model.language_model.") or name.startswith("lm_head.")
            if not in_llm or "lora_" in name:
                state[name] = tensor
        first = self.config.base_vocab_size
        state[ADDED_INPUT_ROWS] = self.get_input_embeddings().weight[first:].detach().clone()
        if not self.config.tie_word_embeddings:
            state[ADDED_OUTPUT_ROWS] = self.get_output_embeddings().weight[first:].detach().clone()
        return state

    def save_pretrained(self, save_directory, *args, llm_weights: str | None = None, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `llm_weights="base"`: write only OpenTSLM's own weights
        (`own_state_dict`, a few MB) and record in the config that the LLM comes from `base_model_name_or_path`.
        Default: the layout the model was loaded with (`config.llm_weights`)."""
        llm_weights = llm_weights or self.config.llm_weights
        if llm_weights == "included":
            previous, self.config.llm_weights = self.config.llm_weights, "included"
            try:
                return super().save_pretrained(save_directory, *args, **kwargs)
            finally:
                self.config.llm_weights = previous
        if llm_weights != "base":
            raise ValueError(f'llm_weights must be "included" or "base", got {llm_weights!r}.')
        if self.config.base_model_name_or_path is None:
            raise ValueError(
                "config.base_model_name_or_path is unknown: set it to the base LLM (Hub id or folder) before saving "
                "only OpenTSLM's own weights."
            )
        if kwargs.get("state_dict") is not None:
            raise ValueError('Pass either state_dict or llm_weights="base", not both.')
        previous, self.config.llm_weights = self.config.llm_weights, "base"
        try:
            return super().save_pretrained(save_directory, *args, state_dict=self.own_state_dict(), **kwargs)
        finally:
            self.config.llm_weights = previous

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, base_model_name_or_path=None, **kwargs):
        """`PreTrainedModel.from_pretrained`; for a checkpoint saved with `llm_weights="base"` the LLM is loaded from
        `base_model_name_or_path` (argument, else the config's) and OpenTSLM's own weights are put on top of it."""
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            hub_kwargs = {key: kwargs[key] for key in HUB_KWARGS if key in kwargs}
            config = cls.config_class.from_pretrained(config or pretrained_model_name_or_path, **hub_kwargs)
        if config.llm_weights != "base":
            if base_model_name_or_path is not None:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds its LLM's weights; base_model_name_or_path is only for "
                    'checkpoints saved with llm_weights="base".'
                )
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        return cls._from_base_llm(pretrained_model_name_or_path, config, base_model_name_or_path, kwargs)

    @classmethod
    def _from_base_llm(cls, path, config: OpenTSLMConfig, base: str | None, kwargs: dict) -> OpenTSLMForCausalLM:
        from safetensors.torch import load_file
        from transformers import GenerationConfig
        from transformers.utils import cached_file

        # What the Auto classes add on their way here (the config, remote-code and PEFT settings) is not for the LLM.
        ignored = ("config", "trust_remote_code", "code_revision", "adapter_kwargs")
        kwargs = {key: value for key, value in kwargs.items() if key not in ignored and not key.startswith("_")}
        hub_kwargs = {key: kwargs.pop(key) for key in HUB_KWARGS if key in kwargs}
        llm_kwargs = {key: kwargs.pop(key) for key in BASE_LLM_KWARGS if key in kwargs}
        if kwargs:
            raise TypeError(f"Arguments not supported when the LLM comes from its base model: {sorted(kwargs)}.")
        base = base or config.base_model_name_or_path
        llm = AutoModelForCausalLM.from_pretrained(base, **llm_kwargs)
        vocab = llm.get_input_embeddings().num_embeddings
        if vocab != config.base_vocab_size:
            raise ValueError(
                f"The base LLM {base} has {vocab} embedding rows; this checkpoint was built on one with "
                f"{config.base_vocab_size} ({config.base_model_name_or_path})."
            )
        if config.text_config.vocab_size != vocab:
            llm.resize_token_embeddings(config.text_config.vocab_size, mean_resizing=False)
        model = cls._wrap_llm(llm, config)
        state = load_file(cached_file(path, "model.safetensors", **hub_kwargs))
        model.load_own_state_dict(state)
        generation_file = cached_file(
            path, "generation_config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
        if generation_file is not None:
            model.generation_config = GenerationConfig.from_pretrained(path, **hub_kwargs)
        model.config.llm_weights = "base"
        model.eval()
        return model

    @torch.no_grad()
    def load_own_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load what `own_state_dict` returned; every tensor must find its parameter and every parameter of OpenTSLM's
        own its tensor, otherwise the error lists both leftovers."""
        state = dict(state)
        first = self.config.base_vocab_size
        rows = {ADDED_INPUT_ROWS: self.get_input_embeddings().weight}
        if not self.config.tie_word_embeddings:
            rows[ADDED_OUTPUT_ROWS] = self.get_output_embeddings().weight
        expected = set(self.own_state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ValueError(f"The checkpoint does not match this model: missing {missing}, unexpected {unexpected}.")
        for name, weight in rows.items():
            added = state.pop(name)
            if added.shape != weight[first:].shape:
                raise ValueError(f"{name} has shape {tuple(added.shape)}, expected {tuple(weight[first:].shape)}.")
            weight[first:] = added.to(weight.dtype)
        self.load_state_dict(state, strict=False, assign=False)

    def set_trainable(
        self, *, encoder: bool = True, projector: bool = True, llm: bool = False, embeddings: bool = False
    ) -> None:
        """Choose which parts receive gradients.

        `projector` covers the parts that bring the series into the LLM: the projector (SP), or the perceiver
        resampler and the gated cross-attention blocks (Flamingo). `llm` trains the whole LLM; LoRA adapters (see
        `add_lora`) stay trainable when it is False. `embeddings` trains the LLM's input embedding matrix (and the
        head tied to it), as the original OpenTSLM-Flamingo does.
        """
        self.model.time_series_encoder.requires_grad_(encoder)
        for name in ("projector", "resampler", "cross_attention_layers"):
            if hasattr(self.model, name):
                getattr(self.model, name).requires_grad_(projector)
        for name, parameter in self.model.language_model.named_parameters():
            parameter.requires_grad_(llm or "lora_" in name)
        self.lm_head.requires_grad_(llm)
        if embeddings:
            self.get_input_embeddings().requires_grad_(True)

    def add_lora(
        self,
        r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: tuple[str, ...] | list[str] = DEFAULT_LORA_TARGETS,
    ) -> None:
        """Add PEFT LoRA adapters to the language model only, as the original does from stage 3 on (r 16, alpha 32,
        dropout 0 on the attention and MLP projections). The settings go into `config.lora`, so `save_pretrained`
        writes one complete folder and `from_pretrained` restores the adapters with their weights."""
        if self.config.lora is not None:
            raise ValueError(
                f"This model already has LoRA adapters ({self.config.lora}); they are trained as they are."
            )
        settings = {
            "r": r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "target_modules": list(target_modules),
        }
        inject_lora(self.model.language_model, settings)
        self.config.lora = settings
        self.model.language_model.to(self.lm_head.weight.device)


OpenTSLMModel.register_for_auto_class("AutoModel")
OpenTSLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = ["OpenTSLMForCausalLM", "OpenTSLMModel", "OpenTSLMPreTrainedModel", "OpenTSLMTimeSeriesEncoder"]
