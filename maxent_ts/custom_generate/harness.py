"""What every search strategy shares: settings resolved from arguments and the generation config, per-prompt setup,
reward evaluation with validation, statistics and the returned output."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList
from transformers.utils import ModelOutput

from .kv import CachedLM, split_prompts
from .processors import proposal_processors
from .reward_protocol import RewardContext, RewardFn, evaluate_reward


@dataclass
class SearchStats:
    """Cost and outcome of one prompt's search. ``nfe`` counts model forward calls (a batched call counts once);
    ``tokens_processed`` counts the real token positions those calls evaluated, the prompt included once."""

    method: str
    nfe: int = 0
    tokens_processed: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    tree_size: int = 0
    rollouts: int = 0
    best_reward: float = float("nan")
    mean_reward: float = float("nan")
    selected_reward: float = float("nan")
    root_value: float | None = None
    commits: int = 0
    wall_time: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def token_cost_per_generated_token(self) -> float:
        """Token evaluations after the prompt per token of the returned output (plain sampling: 1)."""
        return (self.tokens_processed - self.prompt_tokens) / max(self.generated_tokens, 1)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["token_cost_per_generated_token"] = self.token_cost_per_generated_token
        return data


@dataclass
class SearchOutput(ModelOutput):
    """``sequences``: each input row (with its padding) followed by the generated ids, right-padded with the pad id,
    ``num_return_sequences`` rows per prompt, as `generate` returns them. ``texts``/``rewards``: the generated part
    decoded and its reward. ``stats``: one :class:`SearchStats` per prompt. ``trees``: root nodes if asked for."""

    sequences: torch.LongTensor | None = None
    texts: list[str] | None = None
    rewards: list[float] | None = None
    stats: list[SearchStats] | None = None
    trees: list[Any] | None = None


@dataclass
class Settings:
    max_new_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    eos_token_ids: frozenset[int]
    pad_token_id: int


def resolve_settings(
    model: torch.nn.Module,
    generation_config: GenerationConfig | None,
    *,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    prompt_length: int,
) -> Settings:
    """Explicit arguments win; then the generation config `generate` passed; then the model's."""
    config = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    if max_new_tokens is None and config is not None:
        max_new_tokens = config.max_new_tokens
        if max_new_tokens is None and config.max_length is not None:
            max_new_tokens = config.max_length - prompt_length
    if max_new_tokens is None or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens}; pass max_new_tokens=...")
    if temperature is None:
        temperature = getattr(config, "temperature", None) or 1.0
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for a sampling proposal, got {temperature}.")
    if top_p is None:
        top_p = getattr(config, "top_p", None)
    if top_p is not None and top_p >= 1.0:
        top_p = None
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config, "eos_token_id", None)
    eos_ids = frozenset(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None)
    pad = getattr(config, "pad_token_id", None)
    if pad is None:
        pad = min(eos_ids) if eos_ids else 0
    pad = int(pad[0] if isinstance(pad, (list, tuple)) else pad)
    return Settings(int(max_new_tokens), float(temperature), top_p, top_k, eos_ids, pad)


_GENERATION_FIELDS = frozenset(GenerationConfig().__dict__)


def split_generation_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(generation settings, the rest)``: the keys that are `GenerationConfig` fields (``max_new_tokens``,
    ``temperature``, ``top_p``, ``num_return_sequences``...) and everything else (model inputs)."""
    generation = {key: value for key, value in kwargs.items() if key in _GENERATION_FIELDS}
    return generation, {key: value for key, value in kwargs.items() if key not in generation}


def merged_generation_config(
    model: torch.nn.Module, generation_config: GenerationConfig | None, settings: Mapping[str, Any]
) -> GenerationConfig:
    """A copy of ``generation_config`` (else the model's) with ``settings`` on top; the originals are left alone."""
    base = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    config = copy.deepcopy(base) if base is not None else GenerationConfig()
    if settings:
        config.do_sample = True  # the search samples its proposal; keeps the config's checks quiet about temperature
        config.update(**settings)
    return config


def as_input_dict(inputs: Any, model_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Accept a tensor of input ids, a dict/BatchEncoding, or HF generate's ``(input_ids, **model_kwargs)``."""
    if inputs is None:
        merged = dict(model_kwargs)
    elif isinstance(inputs, torch.Tensor):
        merged = {"input_ids": inputs, **model_kwargs}
    elif isinstance(inputs, Mapping):
        merged = {**dict(inputs), **model_kwargs}
    else:
        raise TypeError(
            f"inputs must be a tensor of input ids or a mapping such as a processor's output, got {type(inputs)}."
        )
    if merged.get("input_ids") is None:
        raise ValueError(f"No input_ids among the inputs (keys {sorted(merged)}); pass the tokenizer's output.")
    if merged["input_ids"].ndim == 1:
        merged["input_ids"] = merged["input_ids"].unsqueeze(0)
    return merged


def sample_tokens(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One token per row of ``probs`` (one for a vector), drawn on the CPU with the search's seeded CPU generator: a
    seed gives the same tokens whether the model runs on the CPU or a GPU."""
    return torch.multinomial(probs.cpu(), 1, generator=generator)


def make_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """Token ids -> text. Without a tokenizer the text is the ids joined by spaces (rewards may use token ids)."""
    if tokenizer is None:
        return lambda ids: " ".join(str(i) for i in ids)
    inner = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    return lambda ids: inner.decode(ids, skip_special_tokens=True)


def per_prompt_contexts(reward_context: Any, count: int) -> list[dict[str, Any]]:
    """``reward_context`` is None, one dict for every prompt, or a list with one dict per prompt."""
    if reward_context is None:
        return [{} for _ in range(count)]
    if isinstance(reward_context, Mapping):
        return [dict(reward_context) for _ in range(count)]
    contexts = list(reward_context)
    if len(contexts) != count:
        raise ValueError(f"reward_context has {len(contexts)} entries for {count} prompts; give one per prompt.")
    return [dict(c) for c in contexts]


class PromptJob:
    """One prompt: its cached LM, decoder, reward and statistics. Shared by MaxEnt-TS and the baselines."""

    def __init__(
        self,
        model: torch.nn.Module,
        prompt_inputs: dict[str, Any],
        settings: Settings,
        reward: RewardFn | None,
        decode: Callable[[list[int]], str],
        context: dict[str, Any],
        prompt_index: int,
        method: str,
        processors: LogitsProcessorList,
        stop_condition: Callable[[str], bool] | None = None,
    ):
        self.settings = settings
        self.stop_condition = stop_condition
        self.reward = reward
        self.decode = decode
        self.context = context
        self.prompt_index = prompt_index
        self.lm = CachedLM(model, prompt_inputs, processors)
        self.stats = SearchStats(method=method)
        self.all_rewards: list[float] = []
        self._start = time.perf_counter()

    def ends_output(self, ids: Sequence[int]) -> bool:
        """Whether generated ``ids`` are a finished output: EOS, ``max_new_tokens``, or the stop condition on the
        decoded text (e.g. a forecast that has all its numbers)."""
        if not ids:
            return False
        if ids[-1] in self.settings.eos_token_ids or len(ids) >= self.settings.max_new_tokens:
            return True
        return self.stop_condition is not None and bool(self.stop_condition(self.decode(list(ids))))

    def score(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Reward of generated id sequences (EOS stripped for the text); NaN when no reward was given."""
        if self.reward is None:
            return [float("nan")] * len(sequences)
        stripped = [[t for t in seq if t not in self.settings.eos_token_ids] for seq in sequences]
        texts = [self.decode(ids) for ids in stripped]
        context = RewardContext(token_ids=stripped, prompt_index=self.prompt_index, extra=self.context)
        values = evaluate_reward(self.reward, texts, context)
        self.all_rewards.extend(values)
        return values

    def finish(self, selected: list[list[int]], selected_rewards: list[float]) -> SearchStats:
        stats = self.stats
        stats.nfe = self.lm.nfe
        stats.tokens_processed = self.lm.tokens_processed
        stats.prompt_tokens = int(self.lm.prompt_ids.shape[1])
        stats.generated_tokens = len(selected[0]) if selected else 0
        finite = [r for r in self.all_rewards if r == r]
        stats.best_reward = max(finite) if finite else float("nan")
        stats.mean_reward = sum(finite) / len(finite) if finite else float("nan")
        stats.selected_reward = selected_rewards[0] if selected_rewards else float("nan")
        stats.wall_time = time.perf_counter() - self._start
        return stats


def prepare_jobs(
    model: torch.nn.Module,
    inputs: Any,
    model_kwargs: Mapping[str, Any],
    *,
    method: str,
    reward: RewardFn | None,
    tokenizer: Any,
    reward_context: Any,
    generation_config: GenerationConfig | None,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    extra_processors: Sequence[Any] | None,
    greedy: bool = False,
    stop_condition: Callable[[str], bool] | None = None,
) -> tuple[torch.Tensor, Settings, list[PromptJob]]:
    """Split the batch into prompts and build one :class:`PromptJob` each; returns the padded input ids too."""
    merged = as_input_dict(inputs, model_kwargs)
    prompts = split_prompts(merged)
    longest = max(p["input_ids"].shape[1] for p in prompts)
    settings = resolve_settings(
        model,
        generation_config,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        prompt_length=longest,
    )
    if greedy:
        processors = LogitsProcessorList(list(extra_processors or []))
    else:
        processors = proposal_processors(
            settings.temperature, settings.top_p, settings.top_k, extra=list(extra_processors or [])
        )
    decode = make_decoder(tokenizer)
    contexts = per_prompt_contexts(reward_context, len(prompts))
    jobs = [
        PromptJob(model, prompt, settings, reward, decode, contexts[i], i, method, processors, stop_condition)
        for i, prompt in enumerate(prompts)
    ]
    return merged["input_ids"], settings, jobs


def assemble_output(
    input_ids: torch.Tensor,
    settings: Settings,
    selected: list[list[list[int]]],
    rewards: list[list[float]],
    stats: list[SearchStats],
    decode: Callable[[list[int]], str],
    trees: list[Any] | None = None,
) -> SearchOutput:
    """``selected[i]`` holds the returned id sequences of prompt ``i`` (generated part only)."""
    flat = [(row, seq) for row, seqs in enumerate(selected) for seq in seqs]
    width = max((len(seq) for _, seq in flat), default=0)
    out = torch.full((len(flat), input_ids.shape[1] + width), settings.pad_token_id, dtype=torch.long)
    for index, (row, seq) in enumerate(flat):
        out[index, : input_ids.shape[1]] = input_ids[row].cpu()
        if seq:
            out[index, input_ids.shape[1] : input_ids.shape[1] + len(seq)] = torch.tensor(seq, dtype=torch.long)
    texts = [decode([t for t in seq if t not in settings.eos_token_ids]) for _, seq in flat]
    return SearchOutput(
        sequences=out.to(input_ids.device),
        texts=texts,
        rewards=[r for rs in rewards for r in rs],
        stats=stats,
        trees=trees,
    )
