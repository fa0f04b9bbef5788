"""One supervised fine-tuning recipe for every curriculum stage, on TRL's `SFTTrainer`.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/stage2.py \
        --config recipes/configs/smollm2-135m/stage2.yaml

What differs between stages is data in the YAML files (data set, trainable parts, learning rates, epochs, the
checkpoint the stage starts from); this file holds the mechanics: loading records of the shared schema, building or
loading the model, per-group learning rates, early stopping, resumable checkpoints, the best model and the test-set
evaluation.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk
from transformers import EarlyStoppingCallback, Trainer, set_seed
from trl import ModelConfig, ScriptArguments, SFTConfig, SFTTrainer, TrlParser

from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
from opentslm_hub.offline_llm import hub_id_of
from opentslm_hub.publish import COMPATIBILITY_CARD_SECTION
from recipes.collator import LossEmphasis, OpenTSLMDataCollator
from recipes.losses import LOSS_WEIGHTINGS, count_samples, sample_mean_loss

logger = logging.getLogger("recipes.sft")

# Stage keys, their names in the original OpenTSLM code and the task of their data.
STAGES = {
    "stage1": {"name": "stage1_mcq", "task": "multiple-choice QA (TSQA)"},
    "stage2": {"name": "stage2_captioning", "task": "captioning (M4)"},
    "stage3": {"name": "stage3_cot", "task": "activity recognition with chain of thought (HAR)"},
    "stage4": {"name": "stage4_sleep_cot", "task": "sleep staging with chain of thought (Sleep-EDF)"},
    "stage5": {"name": "stage5_ecg_cot", "task": "ECG question answering with chain of thought (ECG-QA)"},
}
BEST_MODEL_DIR = "best"
STAGE_INFO_FILE = "stage_info.json"


@dataclass
class OpenTSLMScriptArguments(ScriptArguments):
    """What a stage trains on and how: TRL's script arguments plus the parts of a stage that `SFTConfig` and
    `ModelConfig` do not cover.

    `dataset_name` holds records of the shared schema: `offline:<name>` for a set built on the fly (`hub_datasets`;
    builder parameters as a query, e.g. `offline:tsqa_synthetic?num_per_class=100&seed=7`), a folder written by
    `DatasetDict.save_to_disk`, or a Hub data set id. `dataset_test_split` is the held-out split
    the best model is evaluated on at the end; model selection uses `dataset_eval_split`.
    """

    stage: str = field(default="stage1", metadata={"help": f"Curriculum stage, one of {', '.join(STAGES)}."})
    use_chat_template: bool = field(
        default=False,
        metadata={
            "help": "Prompt format: wrap prompts in the tokenizer's chat template (true; no special tokens added on "
            "top) or plain text with the tokenizer's special tokens (false, as the original OpenTSLM). Saved with "
            "the processor, so evaluation and generation prompt the model the way it was trained."
        },
    )
    dataset_eval_split: str = field(default="validation", metadata={"help": "Split for eval_loss and early stopping."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training records."})
    max_eval_samples: int | None = field(default=None)
    max_test_samples: int | None = field(default=None)
    init_from: str | None = field(
        default=None,
        metadata={
            "help": "Start from this OpenTSLM folder (the previous stage's best model, e.g. "
            "outputs/smollm2-135m/stage1/best). Without it, a fresh model is built on `model_name_or_path`."
        },
    )
    architecture: str = field(
        default="sp",
        metadata={
            "help": "A fresh model's variant: `sp` (series patches as soft tokens in the text) or `flamingo` (perceiver "
            "resampler + gated cross-attention; memory flat in the series length). A stage that starts from "
            "init_from must name the variant of that model."
        },
    )
    encoder_config: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Encoder settings for a fresh model (a dict in YAML, JSON on the CLI)."}
    )
    architecture_config: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Other OpenTSLMConfig settings for a fresh model, e.g. Flamingo's num_latents and "
            "cross_attention_every_n_layers (a dict in YAML, JSON on the CLI)."
        },
    )
    train_encoder: bool = field(default=True)
    train_projector: bool = field(default=True)
    train_llm: bool = field(default=False, metadata={"help": "Full fine-tuning of the LLM (the paper freezes it)."})
    train_embeddings: bool = field(
        default=False,
        metadata={"help": "Train the LLM's input embeddings (and the head tied to them), as the original Flamingo."},
    )
    learning_rate_encoder: float = field(default=2e-4)
    learning_rate_projector: float = field(
        default=1e-4, metadata={"help": "SP's projector, or Flamingo's perceiver resampler."}
    )
    learning_rate_cross_attention: float = field(
        default=2e-4, metadata={"help": "Flamingo's gated cross-attention blocks."}
    )
    weight_decay_cross_attention: float | None = field(
        default=None,
        metadata={
            "help": "Weight decay of the gated cross-attention blocks (default: weight_decay; the original 0.1)."
        },
    )
    learning_rate_lora: float = field(default=2e-4)
    replay_datasets: list[str] | None = field(
        default=None,
        metadata={
            "help": "Rehearsal against forgetting: mix records of these data sets' training splits (earlier stages' "
            "data, in any form dataset_name takes) into this stage's training records. Validation and test stay this "
            "stage's own."
        },
    )
    replay_fraction: list[float] = field(
        default_factory=lambda: [0.25],
        metadata={
            "help": "Records replayed per training record of this stage: one number for every replay data set, or one "
            "per data set in replay_datasets' order. Drawn without replacement with data_seed; asking for more than a "
            "replay split holds is an error."
        },
    )
    loss_weighting: str = field(
        default="token",
        metadata={
            "help": "How the training loss weighs answers: 'token' (every answer token alike, as transformers and the "
            "original do) or 'sample' (every sample alike, whatever its answer's length: short answers replayed "
            "beside long ones keep their weight).",
            "choices": list(LOSS_WEIGHTINGS),
        },
    )
    loss_emphasis: str | None = field(
        default=None,
        metadata={
            "help": "A regular expression over the answer: the answer tokens it matches weigh loss_emphasis_weight "
            "times the others in each sample's loss (needs loss_weighting 'sample'). For example the trend phrase of "
            "a caption, or a rationale's final 'Answer: <label>'."
        },
    )
    loss_emphasis_weight: float = field(
        default=1.0, metadata={"help": "How much more the loss_emphasis tokens weigh than other answer tokens."}
    )
    early_stopping_patience: int | None = field(
        default=5, metadata={"help": "Evaluations without improvement of eval_loss before stopping; null: never."}
    )
    early_stopping_threshold: float = field(default=1e-4, metadata={"help": "Smallest eval_loss improvement."})
    run_test: bool = field(default=True, metadata={"help": "Evaluate the best model on the test split at the end."})
    eval_max_new_tokens: int = field(default=256)
    eval_do_sample: bool = field(default=False, metadata={"help": "Greedy decoding unless set (never inherited)."})
    eval_num_beams: int = field(default=1)
    eval_top_p: float | None = field(default=None)
    eval_temperature: float | None = field(default=None)


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------
def load_records(dataset_name: str, dataset_config: str | None = None) -> DatasetDict:
    """Load a `DatasetDict` of records in the shared schema from an offline set, a saved folder or the Hub."""
    if dataset_name.startswith("offline:"):
        from hub_datasets.offline import load_offline

        name, parameters = parse_offline_name(dataset_name)
        return load_offline(name, **parameters)
    if Path(dataset_name).exists():
        loaded = load_from_disk(dataset_name)
        if not isinstance(loaded, DatasetDict):
            raise ValueError(f"{dataset_name} holds a single Dataset; save a DatasetDict with named splits instead.")
        return loaded
    return load_dataset(dataset_name, dataset_config)


def parse_offline_name(dataset_name: str) -> tuple[str, dict[str, Any]]:
    """`offline:<name>?key=value&...` → the offline set's name and its builder parameters (values read as JSON,
    else kept as strings): `offline:tsqa_synthetic?num_per_class=100&seed=7` → ("tsqa_synthetic",
    {"num_per_class": 100, "seed": 7})."""
    name, _, query = dataset_name.removeprefix("offline:").partition("?")
    parameters: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(
                f"{dataset_name!r}: builder parameters are written key=value, joined by '&'; got {item!r}."
            )
        try:
            parameters[key] = json.loads(value)
        except json.JSONDecodeError:
            parameters[key] = value
    return name, parameters


def replay_fractions(script_args: OpenTSLMScriptArguments) -> list[float]:
    """`replay_fraction` as one number per replay data set (a YAML scalar or a single value applies to all)."""
    fractions = script_args.replay_fraction
    fractions = [fractions] if isinstance(fractions, (int, float)) else list(fractions)
    names = script_args.replay_datasets or []
    if len(fractions) == 1:
        return fractions * len(names)
    if len(fractions) != len(names):
        raise ValueError(
            f"replay_fraction has {len(fractions)} values for {len(names)} replay_datasets; give one number for all "
            "or one per data set."
        )
    return fractions


def with_replay(
    train_dataset: Dataset, script_args: OpenTSLMScriptArguments, seed: int
) -> tuple[Dataset, dict[str, int]]:
    """This stage's training records plus, from each of `replay_datasets`, its `replay_fraction` × as many records of
    its training split (a random draw without replacement), in one shuffled set; and how many came from each."""
    if not script_args.replay_datasets:
        return train_dataset, {}
    from datasets import concatenate_datasets

    parts, counts = [train_dataset], {}
    for name, fraction in zip(script_args.replay_datasets, replay_fractions(script_args)):
        wanted = round(fraction * len(train_dataset))
        replay = select_split(load_records(name), script_args.dataset_train_split, None, name)
        if wanted > len(replay):
            raise ValueError(
                f"replay_fraction={fraction} asks for {wanted} records from {name}[{script_args.dataset_train_split}], "
                f"which has {len(replay)}; lower replay_fraction or replay a larger set."
            )
        replay = replay.shuffle(seed=seed).select(range(wanted))
        parts.append(replay.select_columns(list(train_dataset.features)).cast(train_dataset.features))
        counts[name] = wanted
    return concatenate_datasets(parts).shuffle(seed=seed), counts


def select_split(records: DatasetDict, split: str, limit: int | None, dataset_name: str) -> Dataset:
    if split not in records:
        raise ValueError(f"Split {split!r} not found in {dataset_name}; it has {sorted(records)}.")
    dataset = records[split]
    missing = {"pre_prompt", "time_series", "post_prompt", "answer"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"{dataset_name}[{split}] lacks the record fields {sorted(missing)}; build it with hub_datasets "
            "(schema in hub_datasets/schema.py)."
        )
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset


# ---------------------------------------------------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------------------------------------------------


class OpenTSLMTrainer(SFTTrainer):
    """`SFTTrainer` with the original optimiser groups and the model's own loss.

    - Optimiser: AdamW with one group per trained part (encoder, projector or resampler, cross-attention, LoRA, rest
      of the LLM), each with its own learning rate (and optionally weight decay); the scheduler scales every group
      alike (warm-up, then linear decay).
    - Loss: the model's forward computes it, so the placeholder token stays out of the softmax exactly as in
      generation (TRL's fused LM head would score the raw logits). With `loss_weighting="sample"` the training loss
      weighs every sample alike rather than every answer token (`recipes.losses`), and `loss_emphasis` weighs the
      answer tokens it matches more within each sample; evaluation losses stay per token, unweighted.
    """

    def __init__(
        self,
        *args,
        group_learning_rates: dict[str, float],
        group_weight_decays: dict[str, float] | None = None,
        loss_weighting: str = "token",
        **kwargs,
    ):
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting must be one of {LOSS_WEIGHTINGS}, got {loss_weighting!r}.")
        self.group_learning_rates = group_learning_rates
        self.group_weight_decays = group_weight_decays or {}
        self.loss_weighting = loss_weighting
        super().__init__(*args, **kwargs)

    def create_model_card(self, *args, **kwargs):
        """TRL's model card (written with checkpoints and pushed by `push_to_hub`), plus the transformers versions the
        model's code runs under."""
        super().create_model_card(*args, **kwargs)
        card = Path(self.args.output_dir) / "README.md"
        if self.is_world_process_zero() and card.exists():
            text = card.read_text()
            at = text.find("\n## Citations")  # before TRL's closing citations, else at the end
            at = len(text.rstrip("\n")) if at < 0 else at
            card.write_text(text[:at].rstrip("\n") + "\n\n" + COMPATIBILITY_CARD_SECTION + text[at:])

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model if model is not None else self.model
        groups: dict[str, list[torch.nn.Parameter]] = {name: [] for name in self.group_learning_rates}
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                groups[parameter_group(name)].append(parameter)
        param_groups = [
            {
                "params": params,
                "lr": self.group_learning_rates[group],
                "weight_decay": self.group_weight_decays.get(group, self.args.weight_decay),
            }
            for group, params in groups.items()
            if params
        ]
        if not param_groups:
            raise ValueError("Nothing to train: every parameter is frozen. Check train_encoder/train_projector/LoRA.")
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(param_groups, **optimizer_kwargs)
        return self.optimizer

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.loss_weighting == "sample" and batch_samples:
            # The loss divides by the samples of the whole optimiser step: all micro-batches and, when the trainer
            # averages across devices, all processes.
            num_items_in_batch = torch.tensor(sum(count_samples(batch) for batch in batch_samples), device=device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                num_items_in_batch = self.accelerator.gather(num_items_in_batch).sum()
        return batch_samples, num_items_in_batch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_weighting == "sample" and model.training and self.label_smoother is None:
            loss, outputs = sample_mean_loss(model, inputs, num_items_in_batch)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # DDP averages the gradients of the processes
            return (loss, outputs) if return_outputs else loss
        inputs = {key: value for key, value in inputs.items() if key != "loss_weights"}  # per token, unweighted
        if not return_outputs and self.label_smoother is None and "labels" in inputs:
            # A training step needs the loss only: no logits outside the labelled positions.
            inputs = {**inputs, "skip_logits": True}
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)


def parameter_group(name: str) -> str:
    if "time_series_encoder." in name:
        return "encoder"
    if "projector." in name or "resampler." in name:
        return "projector"
    if "cross_attention_layers." in name:
        return "cross_attention"
    if "lora_" in name:
        return "lora"
    return "llm"


def last_complete_checkpoint(output_dir: str | os.PathLike) -> str | None:
    """The newest `checkpoint-N` whose trainer state was written. The state is written last, so a checkpoint cut
    short by a kill has none and is skipped rather than crashing the resume."""
    checkpoints = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            if (path / "trainer_state.json").exists():
                checkpoints.append((int(match.group(1)), path))
            else:
                logger.warning("Skipping %s: it was not completely written (no trainer_state.json).", path)
    return str(max(checkpoints)[1]) if checkpoints else None


# ---------------------------------------------------------------------------------------------------------------------
# dtype
# ---------------------------------------------------------------------------------------------------------------------
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux; `flags` on x86, `Features` on Arm), None where unreadable."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def bf16_matmul_is_fast(size: int = 256, repeats: int = 5) -> tuple[bool, float]:
    """Time a `size`² matmul in bf16 and fp32 on the CPU; bf16 counts as fast when it takes at most 1.2× fp32's time
    (CPUs that emulate bf16 take several times longer). Returns the verdict and the bf16/fp32 time ratio."""
    import time

    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        timings[dtype] = time.perf_counter() - start
    ratio = timings[torch.bfloat16] / timings[torch.float32]
    return ratio <= 1.2, ratio


def auto_dtype(device: torch.device | str) -> tuple[torch.dtype, str]:
    """The LLM dtype for `dtype: auto`: bf16 where `device` computes it natively, fp32 otherwise, and why.

    CUDA: bf16 when the GPU supports it. CPU: bf16 with avx512_bf16 or AMX, fp32 on x86 CPUs without them (bf16 is
    emulated there, many times slower); elsewhere (Arm, or no readable flags) a short matmul timing decides. The
    encoder, projector and LoRA adapters stay fp32 whatever this returns.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"{torch.cuda.get_device_name(device)} supports bf16"
        return torch.float32, f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type != "cpu":
        return torch.float32, f"{device.type}: fp32 (bf16 is chosen automatically on CUDA and CPUs only)"
    flags = cpu_flags()
    native = sorted(flags & set(CPU_BF16_FLAGS)) if flags is not None else []
    if native:
        return torch.bfloat16, f"the CPU computes bf16 natively ({', '.join(native)})"
    if flags is not None and {"avx2", "sse4_2"} & flags:
        return torch.float32, f"the CPU has no native bf16 ({' or '.join(CPU_BF16_FLAGS)} missing)"
    fast, ratio = bf16_matmul_is_fast()
    if fast:
        return torch.bfloat16, f"CPU flags inconclusive; a bf16 matmul took {ratio:.2f}x the fp32 time"
    return torch.float32, f"CPU flags inconclusive; a bf16 matmul took {ratio:.2f}x the fp32 time (emulated)"


def resolve_dtype(requested: str | None, device: torch.device | str) -> torch.dtype | None:
    """`ModelConfig.dtype` as a torch dtype: `auto` picks by capability (`auto_dtype`) and logs why; None keeps the
    checkpoint's own loading default."""
    if requested is None:
        return None
    if requested == "auto":
        dtype, reason = auto_dtype(device)
        logger.info("dtype auto: %s, since %s", str(dtype).removeprefix("torch."), reason)
        return dtype
    return getattr(torch, requested)


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------
def validate_arguments(
    script_args: OpenTSLMScriptArguments,
    training_args: SFTConfig,
    model_args: ModelConfig,
    *,
    check_paths: bool = True,
) -> None:
    """Fail early, with the fix in the message, on values that would otherwise fail late or silently."""
    if script_args.stage not in STAGES:
        raise ValueError(f"Unknown stage {script_args.stage!r}; choose one of {', '.join(STAGES)}.")
    if not script_args.dataset_name:
        raise ValueError("dataset_name is required (e.g. `offline:tsqa_synthetic`, a saved folder or a Hub id).")
    if script_args.init_from is None and not model_args.model_name_or_path:
        raise ValueError("Give init_from (a previous stage's model) or model_name_or_path (the LLM to start from).")
    if check_paths and script_args.init_from is not None and not Path(script_args.init_from).is_dir():
        raise ValueError(
            f"init_from={script_args.init_from!r} is not a folder. Run the previous stage first "
            "(recipes/curriculum.py chains them) or point it at a saved OpenTSLM model."
        )
    if script_args.architecture not in ("sp", "flamingo"):
        raise ValueError(f"architecture must be 'sp' or 'flamingo', got {script_args.architecture!r}.")
    for name in (
        "learning_rate_encoder",
        "learning_rate_projector",
        "learning_rate_cross_attention",
        "learning_rate_lora",
    ):
        if getattr(script_args, name) <= 0:
            raise ValueError(f"{name} must be > 0, got {getattr(script_args, name)}.")
    if script_args.early_stopping_patience is not None and script_args.early_stopping_patience < 1:
        raise ValueError(f"early_stopping_patience must be >= 1 or null, got {script_args.early_stopping_patience}.")
    if script_args.replay_datasets:
        fractions = replay_fractions(script_args)  # a count that matches neither 1 nor the data sets fails here
        if not all(fraction > 0 for fraction in fractions):
            raise ValueError(f"replay_fraction must be > 0 with replay_datasets, got {script_args.replay_fraction}.")
    if script_args.loss_emphasis is not None:
        if script_args.loss_weighting != "sample":
            raise ValueError(
                "loss_emphasis needs loss_weighting: sample (each sample's token weights are normalised to sum to one)."
            )
        if training_args.label_smoothing_factor > 0:
            raise ValueError(
                "loss_emphasis does not combine with label_smoothing_factor > 0 (the Trainer's own loss)."
            )
        LossEmphasis(script_args.loss_emphasis, script_args.loss_emphasis_weight)  # a bad pattern or weight fails here
    if script_args.dataset_streaming:
        raise ValueError("dataset_streaming is not supported: the stages need split sizes for their schedules.")
    if training_args.remove_unused_columns:
        raise ValueError("remove_unused_columns must be false: the collator needs the whole record.")
    if training_args.padding_free and script_args.architecture == "flamingo":
        raise ValueError(
            "padding_free works with architecture 'sp' only: Flamingo's cross-attention reads the series of one "
            "sample per row. Set padding_free: false."
        )
    if training_args.padding_free and training_args.packing:
        raise ValueError(
            "packing (TRL's packing of tokenised text) does not apply to OpenTSLM records; padding_free packs each "
            "batch without padding. Set packing: false."
        )


def build_model(script_args: OpenTSLMScriptArguments, model_args: ModelConfig, device: torch.device | str = "cpu"):
    dtype = resolve_dtype(model_args.dtype, device)
    attention = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    if script_args.init_from is not None:
        processor = OpenTSLMProcessor.from_pretrained(script_args.init_from)
        if processor.use_chat_template != script_args.use_chat_template:
            logger.warning(
                "%s was trained with use_chat_template=%s; this stage uses %s as its config says.",
                script_args.init_from,
                processor.use_chat_template,
                script_args.use_chat_template,
            )
            processor.use_chat_template = script_args.use_chat_template
        model = OpenTSLMForCausalLM.from_pretrained(script_args.init_from, dtype=dtype, **attention)
        if model.config.architecture != script_args.architecture:
            raise ValueError(
                f"init_from={script_args.init_from!r} is an OpenTSLM-{model.config.architecture} model but this stage's "
                f"config says architecture={script_args.architecture!r}; a curriculum keeps one variant throughout."
            )
    else:
        encoder_config = _as_dict(script_args.encoder_config)
        llm_kwargs = {"dtype": dtype, "revision": model_args.model_revision, **attention}
        llm = model_args.model_name_or_path
        processor = OpenTSLMProcessor.from_llm(
            llm,
            revision=model_args.model_revision,
            use_chat_template=script_args.use_chat_template,
            placeholders="per_series" if script_args.architecture == "flamingo" else "per_patch",
        )
        model = OpenTSLMForCausalLM.from_llm(
            llm,
            processor,
            base_model_name_or_path=hub_id_of(llm),
            architecture=script_args.architecture,
            encoder_config=encoder_config,
            config_overrides=_as_dict(script_args.architecture_config),
            **llm_kwargs,
        )
    if model_args.use_peft and model.config.lora is None:
        targets = model_args.lora_target_modules
        model.add_lora(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            **({"target_modules": targets} if targets else {}),
        )
    model.set_trainable(
        encoder=script_args.train_encoder,
        projector=script_args.train_projector,
        llm=script_args.train_llm,
        embeddings=script_args.train_embeddings,
    )
    return model, processor


def _as_dict(value: dict | str | None) -> dict | None:
    """A dict setting given in YAML (a dict) or on the command line (JSON)."""
    return json.loads(value) if isinstance(value, str) else value


def main(script_args: OpenTSLMScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict[str, Any]:
    validate_arguments(script_args, training_args, model_args)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # `training_args.device` sets up the distributed state the way accelerate launched us (CPU workers included).
    device = training_args.device
    logger.info(
        "%s: process %d of %d on %s", script_args.stage, training_args.process_index, training_args.world_size, device
    )
    set_seed(training_args.seed)

    records = load_records(script_args.dataset_name, script_args.dataset_config)
    train_dataset = select_split(
        records, script_args.dataset_train_split, script_args.max_train_samples, script_args.dataset_name
    )
    train_dataset, replayed = with_replay(train_dataset, script_args, training_args.data_seed or training_args.seed)
    eval_dataset = select_split(
        records, script_args.dataset_eval_split, script_args.max_eval_samples, script_args.dataset_name
    )
    model, processor = build_model(script_args, model_args, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "%s (%s): %d train (replayed: %s) / %d eval records, %.2fM trainable parameters, LoRA %s",
        script_args.stage,
        STAGES[script_args.stage]["task"],
        len(train_dataset),
        replayed or "none",
        len(eval_dataset),
        trainable / 1e6,
        model.config.lora,
    )

    # --push_to_hub publishes the stage's best/ folder with its model card once the stage is complete (below), with
    # the Trainer's hub_* arguments. The Trainer's own push would upload output_dir (checkpoints, logs) at every
    # save under a generic card, so it is switched off here.
    push_to_hub = training_args.push_to_hub
    training_args.push_to_hub = False
    callbacks = []
    if script_args.early_stopping_patience is not None:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=script_args.early_stopping_patience,
                early_stopping_threshold=script_args.early_stopping_threshold,
            )
        )
    emphasis = None
    if script_args.loss_emphasis is not None:
        emphasis = LossEmphasis(script_args.loss_emphasis, script_args.loss_emphasis_weight)
        matched = sum(emphasis.pattern.search(answer) is not None for answer in train_dataset["answer"])
        report = logger.info if matched else logger.warning
        report(
            "loss_emphasis %r matches %d of %d training answers.",
            emphasis.pattern.pattern,
            matched,
            len(train_dataset),
        )
    # padding_free: the collator packs each batch into one row (TRL's own padding-free path takes no custom
    # collator, so it stays off).
    data_collator = OpenTSLMDataCollator(processor, padding_free=training_args.padding_free, emphasis=emphasis)
    training_args.padding_free = False
    trainer = OpenTSLMTrainer(
        model=model,
        args=training_args,
        data_collator=data_collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        callbacks=callbacks,
        group_learning_rates={
            "encoder": script_args.learning_rate_encoder,
            "projector": script_args.learning_rate_projector,
            "cross_attention": script_args.learning_rate_cross_attention,
            "lora": script_args.learning_rate_lora,
            "llm": training_args.learning_rate,
        },
        group_weight_decays=(
            {"cross_attention": script_args.weight_decay_cross_attention}
            if script_args.weight_decay_cross_attention is not None
            else None
        ),
        loss_weighting=script_args.loss_weighting,
    )

    resume = training_args.resume_from_checkpoint
    if resume in ("last", "auto", "true", "True"):
        resume = last_complete_checkpoint(training_args.output_dir)
        logger.info("Resuming from %s", resume or "scratch (no complete checkpoint yet)")
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", train_result.metrics)

    best_dir = Path(training_args.output_dir) / BEST_MODEL_DIR
    trainer.save_model(str(best_dir))
    metrics: dict[str, Any] = {"stage": script_args.stage, "train": train_result.metrics}
    metrics["best_eval_loss"] = trainer.state.best_metric
    metrics["best_checkpoint"] = trainer.state.best_model_checkpoint
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(best_dir))

    if script_args.run_test:
        test_dataset = select_split(
            records, script_args.dataset_test_split, script_args.max_test_samples, script_args.dataset_name
        )
        logger.info("Test loss on %d records", len(test_dataset))
        test_metrics = trainer.evaluate(test_dataset, metric_key_prefix="test")
        test_metrics["test_perplexity"] = float(torch.exp(torch.tensor(test_metrics["test_loss"])))
        metrics["test"] = test_metrics
        if trainer.is_world_process_zero():
            from recipes.evaluation import evaluate_records, split_labels

            logger.info("Generating test answers (%d new tokens at most)", script_args.eval_max_new_tokens)
            unwrapped = trainer.accelerator.unwrap_model(trainer.model).eval()
            metrics["test_generation"] = evaluate_records(
                unwrapped,
                processor,
                list(test_dataset),
                task=test_dataset[0]["task"],
                output_dir=training_args.output_dir,
                batch_size=training_args.per_device_eval_batch_size,
                max_new_tokens=script_args.eval_max_new_tokens,
                do_sample=script_args.eval_do_sample,
                num_beams=script_args.eval_num_beams,
                top_p=script_args.eval_top_p,
                temperature=script_args.eval_temperature,
                seed=training_args.seed,
                with_loss=False,  # the Trainer measured the test loss above, on every process
                labels=split_labels(records[script_args.dataset_test_split]),
            )
    if trainer.is_world_process_zero():
        metrics["completed"] = True
        info = {
            "stage": script_args.stage,
            "dataset_name": script_args.dataset_name,
            "replayed": replayed,  # records per replayed data set
            "init_from": script_args.init_from,
            "model_name_or_path": model_args.model_name_or_path,
            "best_model": str(best_dir),
            "architecture": model.config.architecture,
            "lora": model.config.lora,
        }
        (best_dir / STAGE_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        (Path(training_args.output_dir) / "stage_metrics.json").write_text(
            json.dumps(metrics, indent=2, default=str) + "\n"
        )
        if push_to_hub:
            from opentslm_hub.publish import push_to_hub as publish

            repo_id = training_args.hub_model_id or default_hub_model_id(training_args.output_dir)
            url = publish(
                best_dir,
                repo_id,
                revision=training_args.hub_revision,
                private=bool(training_args.hub_private_repo),
                token=training_args.hub_token,
                commit_message=f"{script_args.stage}: best model",
            )
            logger.info("Pushed %s to %s: %s", best_dir, repo_id, url)
            metrics["hub"] = {"repo_id": repo_id, "revision": training_args.hub_revision, "commit": url}
    return metrics


def default_hub_model_id(output_dir: str | os.PathLike) -> str:
    """`opentslm-<run>-<stage>` from `outputs/<run>/<stage>` (in the token owner's namespace)."""
    path = Path(output_dir).resolve()
    return f"opentslm-{path.parent.name}-{path.name}"


def make_parser() -> TrlParser:
    return TrlParser((OpenTSLMScriptArguments, SFTConfig, ModelConfig))


def run(stage: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `recipes/stageN.py`: parse `--config` YAML and CLI overrides, check the stage, train."""
    script_args, training_args, model_args = make_parser().parse_args_and_config(argv)
    if stage is not None and script_args.stage != stage:
        raise ValueError(
            f"This entry point trains {stage}, but the config says stage={script_args.stage!r}; "
            f"use recipes/{script_args.stage}.py or fix the config."
        )
    return main(script_args, training_args, model_args)


if __name__ == "__main__":
    sys.exit(0 if run() else 1)
