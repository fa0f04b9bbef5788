"""OpenTSLM configuration: a time-series encoder and projector in front of any decoder-only LLM."""

from .compat_opentslm import SUPPORTED_TRANSFORMERS  # noqa: F401  first: stops a too-old transformers clearly

# isort: split
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig
from transformers.configuration_utils import PreTrainedConfig

try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20: the config builds its sub-configs itself (see `_build_sub_configs`)
    SubConfigSpec = None

ARCHITECTURES = ("sp", "flamingo")
MEDIA_ATTENTION = ("per_series", "original")
LLM_WEIGHTS = ("included", "base")
AUTO_MAP = {
    "AutoConfig": "configuration_opentslm.OpenTSLMConfig",
    "AutoModel": "modeling_opentslm.OpenTSLMModel",
    "AutoModelForCausalLM": "modeling_opentslm.OpenTSLMForCausalLM",
}


@strict(accept_kwargs=True)
class OpenTSLMEncoderConfig(PreTrainedConfig):
    r"""
    Settings of the time-series encoder: Conv1D patch embedding → learned positional embedding → LayerNorm/dropout →
    post-norm transformer encoder (the OpenTSLM-SP encoder, with a padding mask added).

    Args:
        patch_size (`int`, defaults to 4): samples per patch; the Conv1D kernel and stride.
        hidden_size (`int`, defaults to 128): width of the patch embeddings (d_enc).
        num_hidden_layers (`int`, defaults to 6): transformer encoder layers.
        num_attention_heads (`int`, defaults to 8): attention heads per layer.
        intermediate_size (`int`, defaults to 1024): feed-forward width.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation (`"gelu"` or `"relu"`).
        dropout (`float`, defaults to 0.0): dropout after the embedding and inside the encoder layers.
        max_patches (`int`, defaults to 1024): length of the positional table; series longer than
            `max_patches * patch_size` samples are rejected.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the normal init of linear and conv weights.
    """

    model_type = "opentslm_encoder"
    base_config_key = "encoder_config"

    patch_size: int = 4
    hidden_size: int = 128
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int = 1024
    hidden_act: str = "gelu"
    dropout: float = 0.0
    max_patches: int = 1024
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02

    def validate_architecture(self):
        if self.patch_size < 1:
            raise ValueError(f"encoder_config.patch_size must be >= 1, got {self.patch_size}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"encoder_config.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.hidden_act not in ("gelu", "relu"):
            raise ValueError(f"encoder_config.hidden_act must be 'gelu' or 'relu', got {self.hidden_act!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"encoder_config.dropout must be in [0, 1), got {self.dropout}.")

    @property
    def max_series_length(self) -> int:
        return self.max_patches * self.patch_size


@strict(accept_kwargs=True)
class OpenTSLMConfig(PreTrainedConfig):
    r"""
    Configuration of an OpenTSLM model.

    Args:
        text_config (`dict` or `PreTrainedConfig`): the language model's config (any decoder-only model of
            transformers; built with `AutoConfig.for_model` from a dict with `model_type`).
        encoder_config (`dict` or `OpenTSLMEncoderConfig`): the time-series encoder's settings.
        ts_token_id (`int`): id of the placeholder token that marks one series patch in the text; the processor
            writes one per patch and the model replaces their embeddings with the projected patch embeddings.
        projector_dropout (`float`, defaults to 0.0): dropout at the end of the projector.
        tie_word_embeddings (`bool`): taken from the text config when it ties input and output embeddings.
        lora (`dict`, *optional*): PEFT LoRA settings (`r`, `lora_alpha`, `lora_dropout`, `target_modules`) of
            adapters on the language model. Kept in the config so that a checkpoint with adapters is a complete
            folder: `from_pretrained` re-creates the adapters and loads their weights with the rest, and the next
            curriculum stage continues the same adapters (the original loses them between runs).
        architecture (`str`, defaults to `"sp"`): how the series reach the LLM. `"sp"` (soft prompt): the projected
            patch embeddings replace one placeholder token per patch in the text. `"flamingo"`: a perceiver resampler
            turns each series into `num_latents` latent vectors, and gated cross-attention blocks before the decoder
            layers let the text attend to them; the text holds one placeholder (marker) per series. SP is the more
            accurate in the original paper; Flamingo's memory does not grow with the series' length.
        num_latents (`int`, defaults to 64): Flamingo: latent vectors per series.
        resampler_num_layers (`int`, defaults to 6): Flamingo: perceiver resampler depth.
        resampler_num_heads (`int`, defaults to 8), resampler_head_dim (`int`, defaults to 64): its attention.
        resampler_ff_mult (`int`, defaults to 4): width multiplier of its feed-forward layers.
        cross_attention_every_n_layers (`int`, defaults to 4): Flamingo: a gated cross-attention block before every
            n-th decoder layer (layers n-1, 2n-1, ...). Each block costs about as much as a decoder layer per token,
            so 1 (the original OpenTSLM-Flamingo) decodes at about half the LLM's speed and 4 at over 0.8 of it.
        cross_attention_num_heads (`int`, defaults to 8), cross_attention_head_dim (`int`, defaults to 64),
            cross_attention_ff_mult (`int`, defaults to 4): the gated blocks' attention and feed-forward sizes.
        media_attention (`str`, defaults to `"per_series"`): Flamingo: which series a text token sees.
            `"per_series"`: every series is its own media item, and a token attends to all series whose marker
            comes before it (or is it). `"original"`: the original OpenTSLM-Flamingo behaviour, kept to run its
            released checkpoints: all series of a sample are one media item resampled together, tokens after the
            first marker attend to it, and tokens after a second marker see every latent with equal weight.
        base_model_name_or_path (`str`, *optional*): the pretrained LLM (Hub id or folder) the model was built on.
        base_vocab_size (`int`, *optional*): that LLM's vocabulary size before the placeholder (and marker) tokens
            were added; the embedding rows from this index on are OpenTSLM's own.
        llm_weights (`str`, defaults to `"included"`): where the LLM's own weights come from when loading.
            `"included"`: the checkpoint holds the whole model. `"base"`: the checkpoint holds only what OpenTSLM adds
            or trains (encoder, projector or resampler and cross-attention, LoRA adapters, the added tokens'
            embedding rows), and `from_pretrained` loads the LLM from `base_model_name_or_path` (or from the
            `base_model_name_or_path` argument it is given), the way a PEFT adapter names its base model.

    Example:

    ```python
    >>> from transformers import LlamaConfig
    >>> config = OpenTSLMConfig(text_config=LlamaConfig(hidden_size=64, num_hidden_layers=2).to_dict())
    ```
    """

    model_type = "opentslm"
    attribute_map = {"ts_token_index": "ts_token_id"}
    if SubConfigSpec is not None:
        sub_configs_defaults = {
            "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
            "encoder_config": SubConfigSpec(config_class=OpenTSLMEncoderConfig),
        }
    else:
        sub_configs = {"text_config": AutoConfig, "encoder_config": OpenTSLMEncoderConfig}

    text_config: dict | PreTrainedConfig | None = None
    encoder_config: dict | PreTrainedConfig | None = None
    ts_token_id: int | None = None
    projector_dropout: float = 0.0
    tie_word_embeddings: bool = False
    lora: dict | None = None
    architecture: str = "sp"
    num_latents: int = 64
    resampler_num_layers: int = 6
    resampler_num_heads: int = 8
    resampler_head_dim: int = 64
    resampler_ff_mult: int = 4
    cross_attention_every_n_layers: int = 4
    cross_attention_num_heads: int = 8
    cross_attention_head_dim: int = 64
    cross_attention_ff_mult: int = 4
    media_attention: str = "per_series"
    base_model_name_or_path: str | None = None
    base_vocab_size: int | None = None
    llm_weights: str = "included"

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:
            self._build_sub_configs()
        # super() next: it builds the sub-configs; setting anything on them before would be overwritten.
        super().__post_init__(**kwargs)
        # save_pretrained records only the class being saved in auto_map; list all of them so that every Auto class
        # finds its OpenTSLM class in a folder loaded with trust_remote_code=True.
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    def _build_sub_configs(self):
        """What `sub_configs_defaults` does on a transformers without `SubConfigSpec`: a config is kept, a dict is
        built with its `model_type` (the text config defaults to llama), `None` gets the defaults."""
        if self.text_config is None:
            self.text_config = AutoConfig.for_model("llama")
        elif isinstance(self.text_config, dict):
            text_config = dict(self.text_config)
            self.text_config = AutoConfig.for_model(text_config.pop("model_type", "llama"), **text_config)
        if self.encoder_config is None:
            self.encoder_config = OpenTSLMEncoderConfig()
        elif isinstance(self.encoder_config, dict):
            self.encoder_config = OpenTSLMEncoderConfig(**self.encoder_config)

    def validate_architecture(self):
        super().validate_architecture()
        if not 0.0 <= self.projector_dropout < 1.0:
            raise ValueError(f"projector_dropout must be in [0, 1), got {self.projector_dropout}.")
        if self.lora is not None:
            missing = {"r", "lora_alpha", "lora_dropout", "target_modules"} - set(self.lora)
            if missing:
                raise ValueError(f"lora settings lack {sorted(missing)}; got {self.lora}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        if self.media_attention not in MEDIA_ATTENTION:
            raise ValueError(f"media_attention must be one of {MEDIA_ATTENTION}, got {self.media_attention!r}.")
        if self.llm_weights not in LLM_WEIGHTS:
            raise ValueError(f"llm_weights must be one of {LLM_WEIGHTS}, got {self.llm_weights!r}.")
        if self.llm_weights == "base" and (self.base_model_name_or_path is None or self.base_vocab_size is None):
            raise ValueError(
                'llm_weights="base" needs base_model_name_or_path and base_vocab_size: the LLM is loaded from there.'
            )
        for name in (
            "num_latents",
            "resampler_num_heads",
            "resampler_head_dim",
            "resampler_ff_mult",
            "cross_attention_every_n_layers",
            "cross_attention_num_heads",
            "cross_attention_head_dim",
            "cross_attention_ff_mult",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        num_layers = getattr(self.text_config, "num_hidden_layers", None)
        if (
            self.architecture == "flamingo"
            and num_layers is not None
            and num_layers < self.cross_attention_every_n_layers
        ):
            raise ValueError(
                f"cross_attention_every_n_layers={self.cross_attention_every_n_layers} leaves no gated cross-attention "
                f"block in a decoder of {num_layers} layers; use at most {num_layers}."
            )
        if self.resampler_num_layers < 0:
            raise ValueError(f"resampler_num_layers must be >= 0, got {self.resampler_num_layers}.")
        if getattr(self.text_config, "is_encoder_decoder", False):
            raise ValueError(
                f"text_config must be a decoder-only language model, got the encoder-decoder "
                f"{self.text_config.model_type!r}."
            )


OpenTSLMConfig.register_for_auto_class()

__all__ = ["OpenTSLMConfig", "OpenTSLMEncoderConfig"]
