"""Convert a checkpoint of the original OpenTSLM code into an OpenTSLM Hub model folder.

The original project released its trained models as pickled `model_checkpoint.pt` files
(`OpenTSLM/{llama-3.2-1b,llama-3.2-3b,gemma-3-270m,gemma-3-1b-pt}-{tsqa,m4,har,sleep,ecg}-{sp,flamingo}`); its trainer
writes `best_model.pt` files of the same format. This script turns one of them into a normal folder (safetensors,
config, processor, generation config) that loads with
`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)` and answers like the original:

    python -m modeling_opentslm.convert_opentslm_original_checkpoint \\
        --checkpoint OpenTSLM/llama-3.2-1b-har-sp --output_dir llama-3.2-1b-har-sp

The checkpoint is read with `torch.load(weights_only=True)` and an explicit allow-list of the classes these files hold
besides tensors (PEFT's LoRA config, NumPy scalars); any other pickled class is refused. The mapping is strict: every
tensor of the checkpoint must be used and every parameter of the new model filled, or the conversion fails naming the
leftovers. The processor gets `prompt_format="original"` and the normalisation of the checkpoint's data set, so prompts
are tokenised and series normalised exactly as the original did.
"""

from __future__ import annotations

import argparse
import json
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .configuration_opentslm import OpenTSLMConfig
from .feature_extraction_opentslm import OpenTSLMFeatureExtractor
from .modeling_opentslm import OpenTSLMForCausalLM
from .processing_opentslm import ORIGINAL_CHUNK_END, OpenTSLMProcessor

# The base LLM of each released repo name prefix (the original's loader maps gemma-3-1b to an id that does not exist).
RELEASED_BASE_MODELS = {
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B",
    "gemma-3-270m": "google/gemma-3-270m",
    "gemma-3-1b-pt": "google/gemma-3-1b-pt",
    "gemma-3-1b": "google/gemma-3-1b-pt",
}
# Task of a released repo → the original curriculum stage that trained it.
TASK_STAGES = {
    "tsqa": "stage1_mcq",
    "m4": "stage2_captioning",
    "har": "stage3_cot",
    "sleep": "stage4_sleep_cot",
    "ecg": "stage5_ecg_cot",
}
VARIANTS = ("sp", "flamingo")
RELEASED_NAME = re.compile(
    r"^(?P<base>{})-(?P<task>{})-(?P<variant>sp|flamingo)$".format(
        "|".join(re.escape(b) for b in sorted(RELEASED_BASE_MODELS, key=len, reverse=True)), "|".join(TASK_STAGES)
    )
)
CHECKPOINT_FILES = ("model_checkpoint.pt", "best_model.pt")

# How each original data set normalises a series and states its mean and std (feature extractor settings).
TASK_NORMALIZATION: dict[str, dict[str, Any]] = {
    # torch, float32, unbiased std, divided by std + 1e-8
    "tsqa": dict(std_ddof=1, std_epsilon=1e-8, statistics_dtype="float32"),
    # torch, float32, unbiased std; a constant series is only centred
    "m4": dict(std_ddof=1, std_epsilon=0.0, center_only_below_std=0.0, statistics_dtype="float32"),
    # torch, float32, unbiased std clamped to at least 1e-6 (the stated std is the clamped one)
    "har": dict(std_ddof=1, std_epsilon=0.0, std_floor=1e-6, statistics_dtype="float32"),
    # numpy, population std floored at 1e-6
    "sleep": dict(std_ddof=0, std_epsilon=0.0, std_floor=1e-6),
    # numpy, population std; at most 1e-6 only centred
    "ecg": dict(std_ddof=0, std_epsilon=0.0, center_only_below_std=1e-6),
}
# The sentence introducing a series, where the data set uses one template for all (HAR and ECG name each channel:
# pass their texts per call).
TASK_SERIES_TEXT = {
    "tsqa": "This is the time series, it has mean {mean:.4f} and std {std:.4f}.",
    "m4": "This is the time series, it has mean {mean:.4f} and std {std:.4f}:",
    "sleep": "The following is the EEG time series, it has mean {mean:.4f} and std {std:.4f}:",
}
ORIGINAL_ENCODER_HEADS = 8  # fixed in the original; the weights do not record it
ORIGINAL_FLAMINGO_HEADS = 8  # open_flamingo's default for the perceiver and the gated blocks
ORIGINAL_LAYER_NORM_EPS = 1e-5
SP_TS_TOKEN = "<ts>"
FLAMINGO_MEDIA_TOKEN = "<image>"
FLAMINGO_PAD_TOKEN = "<PAD>"

# Training state the converter reads past: it is not part of the model.
TRAINING_KEYS = {"optimizer_state", "scheduler_state", "val_loss", "epoch"}
SP_KEYS = {"encoder_state", "projector_state", "lora_enabled", "lora_state", "lora_config"}


# ---------------------------------------------------------------------------------------------------------------------
# Safe loading
# ---------------------------------------------------------------------------------------------------------------------
class PickledPeftConfig:
    """Stands in for PEFT's config dataclasses while unpickling: keeps their fields as attributes, runs no code."""

    def __setstate__(self, state: Mapping[str, Any]) -> None:
        self.__dict__.update(state)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class PickledPeftEnum(str):
    """Stands in for PEFT's enums (`TaskType`, `PeftType`): their value as a string."""


def _numpy_globals() -> list:
    scalar = getattr(getattr(np, "_core", None), "multiarray", None) or np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    return [scalar.scalar, np.dtype, *dtypes]


ALLOWED_GLOBALS = [
    *_numpy_globals(),
    (PickledPeftConfig, "peft.tuners.lora.config.LoraConfig"),
    (PickledPeftConfig, "peft.tuners.lora.config.LoraRuntimeConfig"),
    (PickledPeftEnum, "peft.utils.peft_types.TaskType"),
    (PickledPeftEnum, "peft.utils.peft_types.PeftType"),
]


def load_original_checkpoint(path: str | Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` with the allow-list above; a file holding any other class is refused."""
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = found.group(1) if found else "an object"
        raise ValueError(
            f"{path} holds a pickled {what}, which is not among the classes an original OpenTSLM checkpoint holds "
            "(tensors, PEFT's LoraConfig, NumPy scalars), so it is not loaded: unpickling it could run arbitrary code. "
            "Convert only checkpoints from a source you trust, written by the original OpenTSLM trainer."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path} holds a {type(checkpoint).__name__}, not the dict of an OpenTSLM checkpoint.")
    return checkpoint


def detect_variant(checkpoint: Mapping[str, Any], path: str | Path) -> str:
    if "encoder_state" in checkpoint:
        return "sp"
    if "model_state" in checkpoint or "llm" in checkpoint:
        return "flamingo"
    raise ValueError(
        f"{path} is not an original OpenTSLM checkpoint: it has neither `encoder_state` (SP) nor `model_state` / "
        f"`llm` (Flamingo); its keys are {sorted(checkpoint)}."
    )


# ---------------------------------------------------------------------------------------------------------------------
# Resolving the checkpoint and its base model
# ---------------------------------------------------------------------------------------------------------------------
def parse_released_name(repo_id: str) -> dict[str, str]:
    """`OpenTSLM/llama-3.2-1b-har-sp` → base model, task, stage and variant."""
    found = RELEASED_NAME.match(repo_id.rsplit("/", 1)[-1])
    if found is None:
        raise ValueError(
            f"Cannot read base model, task and variant from the repo name {repo_id!r}; released repos are named "
            f"<base>-<task>-<variant> with base in {sorted(RELEASED_BASE_MODELS)}, task in {sorted(TASK_STAGES)} and "
            "variant sp or flamingo. Pass --base_model, --task and --variant."
        )
    return {
        "base_model": RELEASED_BASE_MODELS[found["base"]],
        "task": found["task"],
        "stage": TASK_STAGES[found["task"]],
        "variant": found["variant"],
    }


def resolve_checkpoint(checkpoint: str, revision: str | None = None) -> tuple[Path, dict[str, str]]:
    """A local file, or a Hub repo id (its `model_checkpoint.pt` is downloaded); returns the file and what its name
    says (empty for a local file)."""
    path = Path(checkpoint)
    if path.is_file():
        return path, {}
    if path.suffix == ".pt" or checkpoint.startswith((".", "/", "~")) or checkpoint.count("/") != 1:
        raise FileNotFoundError(
            f"{checkpoint} is neither a local checkpoint file nor a Hub repo id (owner/name) of a released model."
        )
    from huggingface_hub import hf_hub_download, list_repo_files

    files = list_repo_files(checkpoint, revision=revision)
    name = next((f for f in CHECKPOINT_FILES if f in files), None)
    if name is None:
        raise FileNotFoundError(f"The repo {checkpoint} holds none of {CHECKPOINT_FILES}; it has {sorted(files)}.")
    return Path(hf_hub_download(checkpoint, name, revision=revision)), {"repo_id": checkpoint}


# ---------------------------------------------------------------------------------------------------------------------
# Weight mapping
# ---------------------------------------------------------------------------------------------------------------------
def sp_encoder_config(encoder_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The encoder's sizes, read from the weights' shapes (the head count is the original's fixed 8)."""
    patch = encoder_state["patch_embed.weight"]  # (hidden, 1, patch_size)
    layers = {int(key.split(".")[2]) for key in encoder_state if key.startswith("encoder.layers.")}
    return dict(
        patch_size=patch.shape[-1],
        hidden_size=patch.shape[0],
        num_hidden_layers=len(layers),
        num_attention_heads=ORIGINAL_ENCODER_HEADS,
        intermediate_size=encoder_state["encoder.layers.0.linear1.weight"].shape[0] if layers else 1024,
        hidden_act="gelu",
        dropout=0.0,
        max_patches=encoder_state["pos_embed"].shape[1],
        layer_norm_eps=ORIGINAL_LAYER_NORM_EPS,
    )


SP_ENCODER_RENAMES = (
    ("patch_embed.", "model.time_series_encoder.patch_embedding."),
    ("pos_embed", "model.time_series_encoder.position_embedding"),
    ("input_norm.", "model.time_series_encoder.layer_norm."),
    ("encoder.", "model.time_series_encoder.encoder."),
)
SP_PROJECTOR_RENAMES = (("projector.0.", "model.projector.layer_norm."), ("projector.1.", "model.projector.linear."))
# PEFT wraps the CausalLM (base_model.model) whose decoder is `model`; ours is `model.language_model`.
LORA_RENAMES = (("base_model.model.model.", "model.language_model."),)


def rename(state: Mapping[str, torch.Tensor], renames, leftovers: list[str], where: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in state.items():
        for old, new in renames:
            if key.startswith(old):
                out[new + key[len(old) :]] = tensor
                break
        else:
            leftovers.append(f"{where}.{key}")
    return out


def sp_state_dict(checkpoint: Mapping[str, Any], leftovers: list[str]) -> dict[str, torch.Tensor]:
    state = rename(checkpoint["encoder_state"], SP_ENCODER_RENAMES, leftovers, "encoder_state")
    state.update(rename(checkpoint["projector_state"], SP_PROJECTOR_RENAMES, leftovers, "projector_state"))
    if checkpoint.get("lora_enabled"):
        state.update(rename(checkpoint["lora_state"], LORA_RENAMES, leftovers, "lora_state"))
    else:  # adapters the checkpoint itself says are off are not used: they count as leftovers
        leftovers.extend(f"lora_state.{key}" for key in checkpoint.get("lora_state", {}))
    return state


def sp_lora_settings(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    if not checkpoint.get("lora_enabled"):
        return None
    if "lora_state" not in checkpoint or "lora_config" not in checkpoint:
        raise ValueError("The checkpoint says lora_enabled but lacks lora_state or lora_config.")
    configs = checkpoint["lora_config"]
    if not isinstance(configs, Mapping) or set(configs) != {"default"}:
        raise ValueError(f"Expected one LoRA adapter named 'default', got {configs!r}.")
    fields = configs["default"].as_dict()
    if fields.get("bias", "none") != "none" or fields.get("use_dora") or fields.get("use_rslora"):
        raise ValueError(f"Unsupported LoRA settings (only plain LoRA without bias is): {fields}.")
    return {
        "r": int(fields["r"]),
        "lora_alpha": fields["lora_alpha"],
        "lora_dropout": float(fields["lora_dropout"]),
        "target_modules": sorted(fields["target_modules"]),
    }


def check_coverage(expected: set[str], state: Mapping[str, torch.Tensor], leftovers: list[str]) -> None:
    unused = sorted(leftovers) + sorted(set(state) - expected)
    unfilled = sorted(expected - set(state))
    if unused or unfilled:
        raise ValueError(
            "The checkpoint does not map onto the OpenTSLM model one to one.\n"
            f"Checkpoint tensors not used ({len(unused)}): {unused}\n"
            f"Model parameters not filled ({len(unfilled)}): {unfilled}"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Building the model and processor
# ---------------------------------------------------------------------------------------------------------------------
def load_base(base_model: str, dtype: torch.dtype, revision: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model, revision=revision)
    llm = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype, revision=revision)
    return llm, tokenizer


def base_state(llm) -> dict[str, torch.Tensor]:
    """The LLM's weights under the names they take in OpenTSLMForCausalLM."""
    decoder = llm.get_decoder()
    state = {f"model.language_model.{key}": value for key, value in decoder.state_dict().items()}
    state["lm_head.weight"] = llm.get_output_embeddings().weight
    return state


def build_processor(tokenizer, variant: str, task: str | None) -> OpenTSLMProcessor:
    normalization = TASK_NORMALIZATION.get(task, {})
    original_padding_side = tokenizer.padding_side  # what the original's tokenizer did, before ours is set
    feature_extractor = OpenTSLMFeatureExtractor(pad_within_sample=True, **normalization)
    extra = {"series_text": TASK_SERIES_TEXT[task]} if task in TASK_SERIES_TEXT else {}
    if variant == "sp":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # as the original SP
        tokenizer.add_special_tokens({"additional_special_tokens": [SP_TS_TOKEN]}, replace_extra_special_tokens=False)
        ts_token, placeholders = SP_TS_TOKEN, "per_patch"
    else:
        # The original's additions, in its order, so the new tokens get the ids its embedding rows were trained at.
        tokenizer.add_special_tokens(
            {"additional_special_tokens": [ORIGINAL_CHUNK_END, FLAMINGO_MEDIA_TOKEN]},
            replace_extra_special_tokens=False,
        )
        if tokenizer.pad_token is None:
            tokenizer.add_special_tokens({"pad_token": FLAMINGO_PAD_TOKEN})
        ts_token, placeholders = FLAMINGO_MEDIA_TOKEN, "per_series"
    tokenizer.padding_side = "left"
    return OpenTSLMProcessor(
        feature_extractor=feature_extractor,
        tokenizer=tokenizer,
        ts_token=ts_token,
        placeholders=placeholders,
        prompt_format="original",
        original_padding_side=original_padding_side,
        **extra,
    )


def convert_sp(
    checkpoint: Mapping[str, Any], llm, processor: OpenTSLMProcessor, metadata: dict[str, Any]
) -> OpenTSLMForCausalLM:
    unknown = set(checkpoint) - SP_KEYS - TRAINING_KEYS
    if unknown:
        raise ValueError(f"The SP checkpoint has keys the converter does not know: {sorted(unknown)}.")
    leftovers: list[str] = []
    state = sp_state_dict(checkpoint, leftovers)
    vocab = len(processor.tokenizer)
    original_vocab = llm.get_input_embeddings().num_embeddings
    # The placeholder row is new; its embedding is never read (patches replace it) and its logit is masked.
    llm.resize_token_embeddings(vocab, mean_resizing=False)
    config = OpenTSLMConfig(
        text_config=llm.config.to_dict(),
        encoder_config=sp_encoder_config(checkpoint["encoder_state"]),
        ts_token_id=processor.ts_token_id,
        tie_word_embeddings=bool(getattr(llm.config, "tie_word_embeddings", False)),
        lora=sp_lora_settings(checkpoint),
        architecture="sp",
        original_checkpoint={**metadata, "added_tokens": vocab - original_vocab},
        base_model_name_or_path=metadata["base_model"],
        base_vocab_size=original_vocab,  # the LLM is untouched (LoRA aside): savable as own weights only
    )
    state.update(base_state(llm))
    processor.feature_extractor.max_series_length = config.encoder_config.max_series_length
    return assemble(config, state, leftovers, llm.generation_config)


# OpenTSLM-Flamingo: names inside the open_flamingo model (after the `model.`/`llm.` prefix) → ours. The gated
# cross-attention blocks are renamed by `flamingo_target`, which also maps decoder layer → block index.
FLAMINGO_RENAMES = (
    (r"vision_encoder\.patch_embed\.", "model.time_series_encoder.patch_embedding."),
    (r"vision_encoder\.pos_embed$", "model.time_series_encoder.position_embedding"),
    (r"vision_encoder\.input_norm\.", "model.time_series_encoder.layer_norm."),
    (r"perceiver\.latents$", "model.resampler.latents"),
    (r"perceiver\.layers\.(\d+)\.0\.norm_media\.", r"model.resampler.layers.\1.attention.media_norm."),
    (r"perceiver\.layers\.(\d+)\.0\.norm_latents\.", r"model.resampler.layers.\1.attention.latents_norm."),
    (r"perceiver\.layers\.(\d+)\.0\.to_q\.", r"model.resampler.layers.\1.attention.q_proj."),
    (r"perceiver\.layers\.(\d+)\.0\.to_kv\.", r"model.resampler.layers.\1.attention.kv_proj."),
    (r"perceiver\.layers\.(\d+)\.0\.to_out\.", r"model.resampler.layers.\1.attention.o_proj."),
    (r"perceiver\.layers\.(\d+)\.1\.0\.", r"model.resampler.layers.\1.feed_forward.layer_norm."),
    (r"perceiver\.layers\.(\d+)\.1\.1\.", r"model.resampler.layers.\1.feed_forward.fc1."),
    (r"perceiver\.layers\.(\d+)\.1\.3\.", r"model.resampler.layers.\1.feed_forward.fc2."),
    (r"perceiver\.norm\.", "model.resampler.layer_norm."),
    (r"lang_encoder\.model\.layers\.(\d+)\.decoder_layer\.", r"model.language_model.layers.\1."),
    (r"lang_encoder\.model\.", "model.language_model."),
    (r"lang_encoder\.lm_head\.", "lm_head."),
)
GATED_BLOCK = re.compile(r"lang_encoder\.model\.layers\.(\d+)\.gated_cross_attn_layer\.(.+)$")
GATED_RENAMES = (
    ("attn.norm.", "layer_norm."),
    ("attn.to_q.", "q_proj."),
    ("attn.to_kv.", "kv_proj."),
    ("attn.to_out.", "o_proj."),
    ("attn_gate", "attention_gate"),
    ("ff_gate", "feed_forward_gate"),
    ("ff.0.", "feed_forward.layer_norm."),
    ("ff.1.", "feed_forward.fc1."),
    ("ff.3.", "feed_forward.fc2."),
)
# open_flamingo keeps each decoder layer and gated block under a second name as well.
FLAMINGO_ALIASES = (
    (r"lang_encoder\.old_decoder_blocks\.(\d+)\.", r"lang_encoder.model.layers.\1.decoder_layer."),
    (r"lang_encoder\.gated_cross_attn_layers\.(\d+)\.", r"lang_encoder.model.layers.\1.gated_cross_attn_layer."),
)


def flamingo_inner_state(checkpoint: Mapping[str, Any], leftovers: list[str]) -> dict[str, torch.Tensor]:
    """The open_flamingo model's own state dict, each tensor once.

    The trainer's `model_state` holds every tensor twice (`model.` and `llm.` name the same module), and open_flamingo
    names each decoder layer and gated block twice; the copies must be equal, then they count as used."""
    unknown = set(checkpoint) - {"model_state", "llm"} - TRAINING_KEYS
    if unknown:
        raise ValueError(f"The Flamingo checkpoint has keys the converter does not know: {sorted(unknown)}.")
    if "model_state" in checkpoint:
        raw, prefixes = checkpoint["model_state"], ("model.", "llm.")
    else:  # OpenTSLMFlamingo.store_to_file: the open_flamingo model's state dict itself
        raw, prefixes = checkpoint["llm"], ("",)
    state: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            leftovers.append(f"model_state.{key}")
            continue
        name = key[len(prefix) :]
        for alias, canonical in FLAMINGO_ALIASES:
            name = re.sub(f"^{alias}", canonical, name)
        if name in state and not torch.equal(state[name], tensor):
            raise ValueError(f"The checkpoint holds two different tensors for {name} (one of them is {key}).")
        state[name] = tensor
    return state


def flamingo_every_n(state: Mapping[str, torch.Tensor]) -> int:
    layers = sorted({int(m.group(1)) for key in state if (m := GATED_BLOCK.match(key))})
    if not layers:
        raise ValueError("The Flamingo checkpoint has no gated cross-attention blocks.")
    every = layers[0] + 1
    if layers != list(range(every - 1, layers[-1] + 1, every)):
        raise ValueError(f"Gated cross-attention blocks at decoder layers {layers} are not evenly spaced.")
    return every


def flamingo_target(name: str, every: int) -> str | None:
    if found := GATED_BLOCK.match(name):
        block = (int(found.group(1)) + 1) // every - 1
        rest = found.group(2)
        for old, new in GATED_RENAMES:
            if rest.startswith(old):
                return f"model.cross_attention_layers.{block}.{new}{rest[len(old) :]}"
        return None
    for pattern, replacement in FLAMINGO_RENAMES:
        renamed, count = re.subn(f"^{pattern}", replacement, name)
        if count:
            return renamed
    return None


def flamingo_settings(state: Mapping[str, torch.Tensor], every: int) -> dict[str, Any]:
    """The resampler's and gated blocks' sizes, read from the weights' shapes (8 heads, as open_flamingo fixes)."""
    latents = state["perceiver.latents"]
    dim = latents.shape[1]
    depth = len({key.split(".")[2] for key in state if key.startswith("perceiver.layers.")})
    gated = f"lang_encoder.model.layers.{every - 1}.gated_cross_attn_layer."
    text_dim = state[gated + "attn.norm.weight"].shape[0]
    return dict(
        num_latents=latents.shape[0],
        resampler_num_layers=depth,
        resampler_num_heads=ORIGINAL_FLAMINGO_HEADS,
        resampler_head_dim=state["perceiver.layers.0.0.to_q.weight"].shape[0] // ORIGINAL_FLAMINGO_HEADS,
        resampler_ff_mult=state["perceiver.layers.0.1.1.weight"].shape[0] // dim,
        cross_attention_every_n_layers=every,
        cross_attention_num_heads=ORIGINAL_FLAMINGO_HEADS,
        cross_attention_head_dim=state[gated + "attn.to_q.weight"].shape[0] // ORIGINAL_FLAMINGO_HEADS,
        cross_attention_ff_mult=state[gated + "ff.1.weight"].shape[0] // text_dim,
    )


def convert_flamingo(
    checkpoint: Mapping[str, Any],
    base_model: str,
    processor: OpenTSLMProcessor,
    metadata: dict[str, Any],
    dtype: torch.dtype,
) -> OpenTSLMForCausalLM:
    from transformers import AutoConfig, GenerationConfig

    leftovers: list[str] = []
    inner = flamingo_inner_state(checkpoint, leftovers)
    every = flamingo_every_n(inner)
    state = {}
    for name, tensor in inner.items():
        target = flamingo_target(name, every)
        if target is None:
            leftovers.append(f"model_state.{name}")
        elif target.startswith(("model.language_model.", "lm_head.")):
            state[target] = tensor.to(dtype)
        else:
            state[target] = tensor
    # The whole embedding matrix was trained, the added tokens' rows included: it comes from the checkpoint.
    vocab = inner["lang_encoder.model.embed_tokens.weight"].shape[0]
    if vocab != len(processor.tokenizer):
        raise ValueError(
            f"The checkpoint's embedding has {vocab} rows but the base tokenizer with the original's added tokens has "
            f"{len(processor.tokenizer)}; is --base_model the LLM this checkpoint was trained from?"
        )
    text_config = AutoConfig.from_pretrained(base_model).to_dict()
    text_config.update(vocab_size=vocab, dtype=str(dtype).removeprefix("torch."))
    if processor.tokenizer.pad_token_id is not None:
        text_config["pad_token_id"] = processor.tokenizer.pad_token_id
    encoder_state = {k.removeprefix("vision_encoder."): v for k, v in inner.items() if k.startswith("vision_encoder.")}
    config = OpenTSLMConfig(
        text_config=text_config,
        encoder_config={**sp_encoder_config(encoder_state), "num_hidden_layers": 0},
        ts_token_id=processor.ts_token_id,
        tie_word_embeddings=bool(text_config.get("tie_word_embeddings", False)),
        architecture="flamingo",
        media_attention="original",
        original_checkpoint=metadata,
        base_model_name_or_path=metadata["base_model"],  # no base_vocab_size: its whole embedding matrix was trained
        **flamingo_settings(inner, every),
    )
    processor.feature_extractor.max_series_length = config.encoder_config.max_series_length
    try:
        generation_config = GenerationConfig.from_pretrained(base_model)
    except OSError:
        generation_config = GenerationConfig.from_model_config(config.text_config)
    generation_config.pad_token_id = processor.tokenizer.pad_token_id
    return assemble(config, state, leftovers, generation_config)


def assemble(
    config: OpenTSLMConfig, state: dict[str, torch.Tensor], leftovers: list[str], generation_config
) -> OpenTSLMForCausalLM:
    with torch.device("meta"):
        model = OpenTSLMForCausalLM(config)
    expected = set(model.state_dict())
    for key in expected:  # a layer with a LoRA adapter keeps its own weight as `base_layer` (PEFT's naming)
        plain = key.replace(".base_layer.", ".")
        if plain != key and plain in state and key not in state:
            state[key] = state.pop(plain)
    if config.tie_word_embeddings:
        expected.discard("lm_head.weight")
        head = state.pop("lm_head.weight", None)
        embedding = state.get("model.language_model.embed_tokens.weight")
        if head is not None and embedding is not None and not torch.equal(head, embedding):
            raise ValueError("The LLM ties its head to its embedding, but the checkpoint holds different weights.")
    check_coverage(expected, state, leftovers)
    model.load_state_dict(state, strict=False, assign=True)  # coverage is checked above, tied weights aside
    model.tie_weights()
    model.generation_config = generation_config
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ORIGINAL_DTYPE = {"sp": "bfloat16", "flamingo": "float32"}  # what the original runs each variant's LLM in


def convert(
    checkpoint: str,
    output_dir: str | Path,
    *,
    base_model: str | None = None,
    variant: str | None = None,
    task: str | None = None,
    lora: str = "adapter",
    dtype: str | None = None,
    revision: str | None = None,
    push_to_hub: str | None = None,
) -> Path:
    """Convert `checkpoint` (a local `.pt` or a released repo id) and save the model folder to `output_dir`."""
    path, source = resolve_checkpoint(checkpoint, revision)
    named = parse_released_name(source["repo_id"]) if source else {}
    base_model = base_model or named.get("base_model")
    task = task or named.get("task")
    if base_model is None:
        raise ValueError(f"{checkpoint} is a local file: pass --base_model (the Hub id or folder of its base LLM).")
    if task not in TASK_STAGES:
        raise ValueError(
            f"task must be one of {sorted(TASK_STAGES)}, got {task!r}: pass --task for a local file (it decides how "
            "the processor normalises series and states their mean and std, as the data set the model learnt on did)."
        )
    if lora not in ("adapter", "merge"):
        raise ValueError(f"lora must be 'adapter' or 'merge', got {lora!r}.")
    state = load_original_checkpoint(path)
    found = detect_variant(state, path)
    variant = variant or named.get("variant") or found
    if variant != found:
        raise ValueError(f"{checkpoint} was asked to convert as {variant!r} but holds an OpenTSLM-{found} checkpoint.")
    dtype = dtype or ORIGINAL_DTYPE[variant]
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}.")
    metadata = {
        "source": source.get("repo_id", path.name),
        "base_model": base_model,
        "task": task,
        "stage": TASK_STAGES.get(task),
        "variant": variant,
        "epoch": state.get("epoch"),
        "val_loss": float(state["val_loss"]) if state.get("val_loss") is not None else None,
    }
    if variant == "sp":
        llm, tokenizer = load_base(base_model, DTYPES[dtype])
        processor = build_processor(tokenizer, variant, task)
        model = convert_sp(state, llm, processor, metadata)
    else:  # the checkpoint holds the whole LLM; the base gives its config and tokenizer
        from transformers import AutoTokenizer

        processor = build_processor(AutoTokenizer.from_pretrained(base_model), variant, task)
        model = convert_flamingo(state, base_model, processor, metadata, DTYPES[dtype])
    output_dir = Path(output_dir)
    if lora == "merge" and model.config.lora is not None:
        with tempfile.TemporaryDirectory() as staging:
            model.save_pretrained(staging)
            processor.save_pretrained(staging)
            from opentslm_hub.publish import save_as

            save_as(Path(staging), output_dir, merge_lora=True)
    else:
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
    if push_to_hub:
        from opentslm_hub.publish import push_to_hub as push

        print(push(output_dir, push_to_hub))
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint", required=True, help="a local model_checkpoint.pt / best_model.pt, or a released repo id"
    )
    parser.add_argument("--base_model", help="Hub id or folder of the base LLM (default: from the repo name)")
    parser.add_argument("--variant", choices=VARIANTS, help="sp or flamingo (default: from the repo name or file)")
    parser.add_argument("--task", choices=sorted(TASK_STAGES), help="the data set it was trained on (default: name)")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument(
        "--lora", choices=("merge", "adapter"), default="adapter", help="keep LoRA adapters, or merge them"
    )
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), help="the LLM's dtype (default: the original's, bf16 SP, fp32 Flamingo)"
    )
    parser.add_argument("--revision", help="revision of the checkpoint repo")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="upload the converted folder to this repo")
    args = parser.parse_args(argv)
    folder = convert(
        args.checkpoint,
        args.output_dir,
        base_model=args.base_model,
        variant=args.variant,
        task=args.task,
        lora=args.lora,
        dtype=args.dtype,
        revision=args.revision,
        push_to_hub=args.push_to_hub,
    )
    config = json.loads((folder / "config.json").read_text())
    print(f"Converted {args.checkpoint} → {folder} ({config['original_checkpoint']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
