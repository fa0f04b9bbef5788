"""OpenTSLM-SP: time-series patches encoded, projected and spliced into the token sequence of a decoder-only LLM.

Layout follows LLaVA: `OpenTSLMModel` (encoder + projector + LLM body) and `OpenTSLMForCausalLM` (adds `lm_head`,
the loss and `generate`). The processor writes one placeholder token per series patch; the model checks the counts
and scatters the projected patch embeddings over the placeholders.
"""

from __future__ import annotations

from .compat_opentslm import CACHE_NAME  # first: stops a too-old transformers clearly

# isort: split
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from .configuration_opentslm import OpenTSLMConfig, OpenTSLMEncoderConfig

# Inputs that only the prefill needs: decode steps carry new text tokens only, so the series cost nothing there.
TIME_SERIES_INPUTS = ("time_series", "time_series_mask")


@dataclass
class OpenTSLMModelOutputWithPast(BaseModelOutputWithPast):
    r"""
    time_series_hidden_states (`torch.FloatTensor` of shape `(num_patches, hidden_size)`, *optional*):
        The projected patch embeddings that replaced the placeholder tokens (valid patches only, in text order).
    """

    time_series_hidden_states: torch.FloatTensor | None = None


@dataclass
class OpenTSLMCausalLMOutputWithPast(CausalLMOutputWithPast):
    r"""
    time_series_hidden_states (`torch.FloatTensor` of shape `(num_patches, hidden_size)`, *optional*):
        The projected patch embeddings that replaced the placeholder tokens (valid patches only, in text order).
    """

    time_series_hidden_states: torch.FloatTensor | None = None


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
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.num_hidden_layers, enable_nested_tensor=False)

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
    _keep_in_fp32_modules_strict = ["time_series_encoder", "projector", "lora_A", "lora_B"]
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


class OpenTSLMModel(OpenTSLMPreTrainedModel):
    """Encoder + projector + the LLM body (without its head)."""

    def __init__(self, config: OpenTSLMConfig):
        super().__init__(config)
        self.time_series_encoder = OpenTSLMTimeSeriesEncoder(config.encoder_config)
        self.projector = OpenTSLMProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        if config.lora is not None:
            inject_lora(self.language_model, config.lora)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module):
        self.language_model.set_input_embeddings(value)

    def get_time_series_features(self, time_series: torch.Tensor, time_series_mask: torch.Tensor) -> torch.Tensor:
        """Encode and project a batch of series.

        Args:
            time_series: `(batch, max_series, length)` z-normalised values, zero where padded.
            time_series_mask: same shape, 1 where a value is real. A row of zeros is an absent series.

        Returns:
            `(num_valid_patches, text_hidden_size)`: the projected embeddings of every patch that holds data, ordered
            sample by sample, series by series, patch by patch — the order of the placeholder tokens in the text.
        """
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
        mask = time_series_mask.bool()
        present = mask.any(dim=-1)
        series = time_series[present]
        patch_mask = mask[present].unflatten(-1, (-1, patch_size)).any(dim=-1)
        if series.shape[0] == 0:
            return time_series.new_zeros(0, self.config.text_config.hidden_size)
        encoded = self.time_series_encoder(series, patch_mask)
        return self.projector(encoded)[patch_mask]

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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        time_series: torch.FloatTensor | None = None,
        time_series_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> OpenTSLMModelOutputWithPast:
        if (cache := kwargs.pop("cache", None)) is not None:  # the KV cache's name from transformers 5.24 on
            past_key_values = cache
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")

        features = None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            ts_token_id = self.config.ts_token_id
            has_placeholders = ts_token_id is not None and bool((input_ids == ts_token_id).any())
            if time_series is not None:
                if ts_token_id is None:
                    raise ValueError(
                        "time_series was given but config.ts_token_id is None, so the text cannot say where the series "
                        "go; set ts_token_id to the processor's placeholder id (OpenTSLMProcessor.ts_token_id)."
                    )
                if time_series_mask is None:
                    raise ValueError("time_series was given without time_series_mask; build both with the processor.")
                features = self.get_time_series_features(time_series, time_series_mask)
                placeholder_mask = self.get_placeholder_mask(input_ids, features.shape[0])
                inputs_embeds = inputs_embeds.masked_scatter(
                    placeholder_mask.unsqueeze(-1), features.to(inputs_embeds.dtype)
                )
            elif has_placeholders:
                raise ValueError(
                    "input_ids contain time-series placeholder tokens but no time_series was given; pass the "
                    "processor's time_series and time_series_mask."
                )
        elif time_series is not None:
            raise ValueError("time_series cannot be combined with inputs_embeds; pass input_ids instead.")

        if position_ids is None and attention_mask is not None and attention_mask.ndim == 2:
            # Left padding: count positions from each sample's first real token, as generate() does, so a sample
            # gets the same positions alone or in a padded batch.
            past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            position_ids = position_ids[:, past_length : past_length + inputs_embeds.shape[1]]

        kwargs[CACHE_NAME] = past_key_values
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        return OpenTSLMModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            time_series_hidden_states=features,
        )


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

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        time_series: torch.FloatTensor | None = None,
        time_series_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> OpenTSLMCausalLMOutputWithPast:
        r"""
        time_series (`torch.FloatTensor` of shape `(batch, max_series, length)`, *optional*):
            z-normalised series, zero-padded to a multiple of the patch size; needed at prefill only.
        time_series_mask (`torch.Tensor` of the same shape, *optional*):
            1 where `time_series` holds data.
        labels (`torch.LongTensor` of shape `(batch, sequence_length)`, *optional*):
            Token ids to predict, -100 where no loss is taken (prompt, series, padding).
        """
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
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        if isinstance(logits_to_keep, int):
            hidden_states = hidden_states[:, -logits_to_keep:, :] if logits_to_keep else hidden_states
        else:
            hidden_states = hidden_states[:, logits_to_keep, :]
        logits = self.lm_head(hidden_states)
        if self.config.ts_token_id is not None and self.config.ts_token_id < logits.shape[-1]:
            # The placeholder marks where series go; it is never a word the model may say.
            logits[..., self.config.ts_token_id] = torch.finfo(logits.dtype).min

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
        )

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool | None = False, **kwargs):
        series_inputs = {name: kwargs.pop(name, None) for name in TIME_SERIES_INPUTS}
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs.update(series_inputs)
        return model_inputs

    # ----------------------------------------------------------------------------------------------------------
    # Building from a pretrained LLM and choosing what trains
    # ----------------------------------------------------------------------------------------------------------
    @classmethod
    def from_llm(
        cls,
        llm_name_or_path: str,
        processor,
        *,
        encoder_config: dict | OpenTSLMEncoderConfig | None = None,
        projector_dropout: float = 0.0,
        freeze_llm: bool = True,
        **llm_kwargs,
    ) -> OpenTSLMForCausalLM:
        """Wrap a pretrained decoder-only LLM (Hub id or folder) with a freshly initialised encoder and projector.

        `processor` is the `OpenTSLMProcessor` built for the same LLM (`OpenTSLMProcessor.from_llm`): its tokenizer
        holds the placeholder token, so the embeddings are resized to it and `ts_token_id` is taken from it.
        `llm_kwargs` go to `AutoModelForCausalLM.from_pretrained` (`dtype`, `attn_implementation`, `revision`...).
        """
        llm = AutoModelForCausalLM.from_pretrained(llm_name_or_path, **llm_kwargs)
        tokenizer = processor.tokenizer
        if llm.get_input_embeddings().num_embeddings < len(tokenizer):
            llm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        config = cls.config_class(
            text_config=llm.config,
            encoder_config=encoder_config if encoder_config is not None else {},
            ts_token_id=processor.ts_token_id,
            projector_dropout=projector_dropout,
            tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
        )
        config._attn_implementation = llm.config._attn_implementation
        with torch.device("meta"):
            model = cls(config)
        # Only the new parts are materialised; the LLM's weights are moved in, not copied.
        model.model.language_model = llm.get_decoder()
        model.lm_head = llm.get_output_embeddings()
        model.model.time_series_encoder = OpenTSLMTimeSeriesEncoder(config.encoder_config)
        model.model.projector = OpenTSLMProjector(config)
        for module in (model.model.time_series_encoder, model.model.projector):
            for submodule in module.modules():
                model._init_weights(submodule)
        model.generation_config = llm.generation_config
        model.set_trainable(encoder=True, projector=True, llm=not freeze_llm)
        return model

    def set_trainable(self, *, encoder: bool = True, projector: bool = True, llm: bool = False) -> None:
        """Choose which parts receive gradients. LoRA adapters (see `add_lora`) stay trainable when `llm=False`."""
        self.model.time_series_encoder.requires_grad_(encoder)
        self.model.projector.requires_grad_(projector)
        for name, parameter in self.model.language_model.named_parameters():
            parameter.requires_grad_(llm or "lora_" in name)
        self.lm_head.requires_grad_(llm)

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
