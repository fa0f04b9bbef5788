"""Baselines in the same harness as MaxEnt-TS: same prefill-once KV cache, same counters, same reward.

- :func:`greedy_generate`: argmax decoding (``nfe`` = output length).
- :func:`beam_generate`: beam search on log-likelihood (length-normalised), the reward only reported.
- :func:`nucleus_generate`: ``num_samples`` nucleus samples (p = 0.9); returns the first, reports their mean reward.
- :func:`best_of_n_generate`: ``n`` samples from the search's proposal p̃, returns the one the reward prefers.

``stop_condition`` (a keyword, ``fn(text) -> bool`` on the decoded output so far) ends an output early, as in
:func:`~maxent_ts.maxent_ts_generate`. Sampled rows run as one batch, so ``nfe`` is about the longest output's
length whatever ``n``; compare compute with ``tokens_processed``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import GenerationConfig

from .custom_generate.harness import (
    PromptJob,
    SearchOutput,
    assemble_output,
    make_decoder,
    prepare_jobs,
    sample_tokens,
)
from .custom_generate.reward_protocol import RewardFn


def _common(method: str, model, inputs, reward, generation_config, kwargs, *, greedy: bool, **settings):
    return prepare_jobs(
        model,
        inputs,
        kwargs.pop("model_kwargs", {}),
        method=method,
        reward=reward,
        tokenizer=kwargs.get("tokenizer"),
        reward_context=kwargs.get("reward_context"),
        generation_config=generation_config,
        extra_processors=None,
        greedy=greedy,
        stop_condition=kwargs.get("stop_condition"),
        **settings,
    )


def _sample_rows(job: PromptJob, count: int, generator: torch.Generator | None) -> list[list[int]]:
    """``count`` continuations of the prompt, batched; argmax when ``generator`` is None."""
    lm = job.lm
    root = lm.prefill()
    state = lm.start_batch([([], None)] * count)
    dists = root.unsqueeze(0).expand(count, -1)
    sequences: list[list[int]] = [[] for _ in range(count)]
    active = list(range(count))
    while True:
        if generator is None:
            tokens = dists.argmax(-1).tolist()
        else:
            tokens = sample_tokens(dists.double().exp(), generator).view(-1).tolist()
        keep = []
        for batch_row, (row, token) in enumerate(zip(active, tokens)):
            sequences[row].append(token)
            if not job.ends_output(sequences[row]):
                keep.append(batch_row)
        if not keep:
            return sequences
        if len(keep) < len(active):
            lm.select_rows(state, keep)
            active = [active[i] for i in keep]
        dists = lm.step(state, torch.tensor([sequences[row][-1] for row in active]))


def _pick_among_samples(count: int, generator: torch.Generator, choose: Callable[[list[float]], int]):
    """A ``pick`` for :func:`_run`: ``count`` batched samples, all scored, the one ``choose(values)`` names returned."""

    def pick(job: PromptJob) -> tuple[list[int], float]:
        samples = _sample_rows(job, count, generator)
        values = job.score(samples)
        job.stats.rollouts = count
        index = choose(values)
        return samples[index], values[index]

    return pick


def _run(jobs, input_ids, settings, decode, pick) -> SearchOutput:
    selected, rewards, stats = [], [], []
    for job in jobs:
        sequence, value = pick(job)
        selected.append([sequence])
        rewards.append([value])
        stats.append(job.finish([sequence], [value]))
    return assemble_output(input_ids, settings, selected, rewards, stats, decode)


@torch.no_grad()
def greedy_generate(
    model: torch.nn.Module,
    inputs: Any,
    reward: RewardFn | None = None,
    *,
    max_new_tokens: int | None = None,
    generation_config: GenerationConfig | None = None,
    **kwargs: Any,
) -> SearchOutput:
    """Greedy decoding; ``tokenizer``/``reward_context`` keywords as in :func:`maxent_ts_generate`."""
    input_ids, settings, jobs = _common(
        "greedy", model, inputs, reward, generation_config, kwargs, greedy=True,
        max_new_tokens=max_new_tokens, temperature=1.0, top_p=None, top_k=None,
    )  # fmt: skip

    def pick(job):
        sequence = _sample_rows(job, 1, None)[0]
        return sequence, job.score([sequence])[0]

    return _run(jobs, input_ids, settings, make_decoder(kwargs.get("tokenizer")), pick)


@torch.no_grad()
def best_of_n_generate(
    model: torch.nn.Module,
    inputs: Any,
    reward: RewardFn,
    *,
    n: int = 8,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    seed: int | None = None,
    generation_config: GenerationConfig | None = None,
    method: str = "best_of_n",
    **kwargs: Any,
) -> SearchOutput:
    """``n`` samples from p̃ (the same proposal MaxEnt-TS uses), the highest reward returned."""
    if reward is None:
        raise ValueError("best_of_n_generate needs reward=...: it picks the sample the reward prefers.")
    input_ids, settings, jobs = _common(
        method, model, inputs, reward, generation_config, kwargs, greedy=False,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed if seed is not None else 0)

    pick = _pick_among_samples(n, generator, choose=lambda values: max(range(n), key=lambda i: values[i]))
    return _run(jobs, input_ids, settings, make_decoder(kwargs.get("tokenizer")), pick)


@torch.no_grad()
def nucleus_generate(
    model: torch.nn.Module,
    inputs: Any,
    reward: RewardFn | None = None,
    *,
    top_p: float = 0.9,
    temperature: float = 1.0,
    num_samples: int = 1,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    generation_config: GenerationConfig | None = None,
    **kwargs: Any,
) -> SearchOutput:
    """Nucleus sampling. With ``num_samples`` > 1 the first sample is returned and ``stats.mean_reward`` estimates
    the expected reward of one sample (the reward never chooses)."""
    input_ids, settings, jobs = _common(
        "nucleus", model, inputs, reward, generation_config, kwargs, greedy=False,
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=None,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(seed if seed is not None else 0)

    pick = _pick_among_samples(num_samples, generator, choose=lambda values: 0)
    return _run(jobs, input_ids, settings, make_decoder(kwargs.get("tokenizer")), pick)


@torch.no_grad()
def beam_generate(
    model: torch.nn.Module,
    inputs: Any,
    reward: RewardFn | None = None,
    *,
    num_beams: int = 4,
    length_penalty: float = 1.0,
    max_new_tokens: int | None = None,
    generation_config: GenerationConfig | None = None,
    **kwargs: Any,
) -> SearchOutput:
    """Beam search on the model's log-likelihood (no temperature), hypotheses ranked by sum log p / length^lp.

    Every finished hypothesis is scored with the reward (``stats.best_reward``), but the most likely one is returned.
    """
    input_ids, settings, jobs = _common(
        "beam", model, inputs, reward, generation_config, kwargs, greedy=True,
        max_new_tokens=max_new_tokens, temperature=1.0, top_p=None, top_k=None,
    )  # fmt: skip
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}.")

    def pick(job):
        sequence = _beam_search(job, num_beams, length_penalty)
        finished = job.stats.extra.pop("hypotheses")
        values = job.score(finished)
        return sequence, values[finished.index(sequence)]

    return _run(jobs, input_ids, settings, make_decoder(kwargs.get("tokenizer")), pick)


def _beam_search(job: PromptJob, width: int, length_penalty: float) -> list[int]:
    lm, eos, limit = job.lm, job.settings.eos_token_ids, job.settings.max_new_tokens
    dists = lm.prefill().unsqueeze(0)
    state = lm.start_batch([([], None)])
    beams: list[tuple[list[int], float]] = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []

    def normalised(tokens: list[int], score: float) -> float:
        return score / max(len(tokens), 1) ** length_penalty

    while True:
        scores = torch.tensor([score for _, score in beams], dtype=torch.float64).unsqueeze(1) + dists.double()
        top = scores.view(-1).topk(min(2 * width, scores.numel()))
        vocab = dists.shape[-1]
        survivors: list[tuple[int, list[int], float]] = []
        for rank, (score, index) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
            row, token = divmod(index, vocab)
            tokens = beams[row][0] + [token]
            if token in eos or (job.stop_condition is not None and job.ends_output(tokens)):
                if rank < width:
                    finished.append((tokens, normalised(tokens, score)))
            else:
                survivors.append((row, tokens, score))
            if len(survivors) == width:
                break
        at_limit = len(survivors[0][1]) >= limit if survivors else True
        if at_limit:
            finished.extend((tokens, normalised(tokens, score)) for _, tokens, score in survivors)
        finished.sort(key=lambda item: item[1], reverse=True)
        best_open = max((normalised(tokens, score) for _, tokens, score in survivors), default=-float("inf"))
        if at_limit or (len(finished) >= width and best_open <= finished[width - 1][1]):
            hypotheses = [tokens for tokens, _ in finished[:width]]
            job.stats.extra["hypotheses"] = hypotheses
            job.stats.rollouts = len(hypotheses)
            return hypotheses[0]
        lm.select_rows(state, [row for row, _, _ in survivors])
        beams = [(tokens, score) for _, tokens, score in survivors]
        dists = lm.step(state, torch.tensor([tokens[-1] for _, tokens, _ in survivors]))
