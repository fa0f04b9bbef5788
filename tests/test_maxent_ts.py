"""MaxEnt-TS: exactness against enumeration, the reward and the series really used, exact NFE, KV reuse == recompute.

Tiny random Llama models (`tiny.tiny_text_config`: hidden 32, 2 layers) with fixed seeds; the SmolLM2 tests are marked
slow.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_text_config
from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from maxent_ts import (  # noqa: E402
    AnswerVerifierReward,
    CachedLM,
    CallableReward,
    FeatureConsistencyReward,
    MaxEntTSConfig,
    RewardContext,
    SpectralReward,
    ValueGuidedLogitsProcessor,
    beam_generate,
    best_of_n_generate,
    boltzmann_distribution,
    forecast_errors,
    greedy_generate,
    maxent_ts_generate,
    nucleus_generate,
    proposal_processors,
)

# The search as it was before the tuned defaults: fixed widening (k = 3 children within 5 tokens of the root), λ = 5,
# batches of 8 and no minimum branch mass. The exactness checks need a complete tree, so no minimum mass; the tests
# written for this setting keep it (each one overrides what it sets).
FIXED_WIDENING = dict(widening="fixed", expansion_k=3, max_depth=5, lam=5.0, rollout_batch_size=8, min_branch_mass=0.0)


def fixed(**settings) -> dict:
    return {**FIXED_WIDENING, **settings}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(vocab_size: int, seed: int = 0, sharpen: float = 1.0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        **tiny_text_config("llama", vocab_size), eos_token_id=vocab_size - 1, pad_token_id=0, bos_token_id=None
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(sharpen)  # random init is near-uniform; sharpen makes p̃ non-trivial
    model.generation_config.eos_token_id = vocab_size - 1
    model.generation_config.pad_token_id = 0
    return model


def full_log_probs(model, prompt: torch.Tensor, prefix: list[int], temperature: float = 1.0) -> torch.Tensor:
    """log p̃(· | prompt + prefix) recomputed from scratch, without any cache."""
    ids = torch.cat([prompt, torch.tensor([prefix], dtype=torch.long)], dim=1) if prefix else prompt
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, -1].float()
    return torch.log_softmax(logits / temperature, dim=-1)


def tv(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(key, 0.0) - q.get(key, 0.0)) for key in set(p) | set(q))


# ---------------------------------------------------------------------------------------------------------------------
# Exactness on a tiny vocabulary: tokens {0, 1} and EOS = 2, at most 3 new tokens -> 15 possible outputs.

VOCAB, EOS, DEPTH, LAM, TAU = 3, 2, 3, 3.0, 0.8


def count_ones(texts, context):
    return [sum(1 for t in ids if t == 1) / DEPTH for ids in context.token_ids]


def enumerate_outputs(model, prompt):
    """Every complete output with its p̃ probability (EOS included in the ids, as the search returns them)."""
    outputs = {}
    for length in range(1, DEPTH + 1):
        for body in itertools.product(range(VOCAB - 1), repeat=length - 1):
            for last in range(VOCAB):
                if length < DEPTH and last != EOS:
                    continue
                seq = list(body) + [last]
                logp = sum(float(full_log_probs(model, prompt, seq[:i], TAU)[seq[i]]) for i in range(length))
                outputs[tuple(seq)] = math.exp(logp)
    return outputs


@pytest.fixture(scope="module")
def exact_setup():
    model = tiny_llama(VOCAB, seed=1, sharpen=6.0)
    prompt = torch.tensor([[0, 1, 1, 0]])
    p = enumerate_outputs(model, prompt)
    assert abs(sum(p.values()) - 1) < 1e-5
    reward = {seq: count_ones(None, RewardContext([[t for t in seq if t != EOS]]))[0] for seq in p}
    z = sum(p[s] * math.exp(LAM * reward[s]) for s in p)
    target = {s: p[s] * math.exp(LAM * reward[s]) / z for s in p}
    return model, prompt, p, target, math.log(z) / LAM


def run_exact(model, prompt, rollouts, seed, widening="fixed", **kwargs):
    return maxent_ts_generate(
        model,
        prompt,
        count_ones,
        num_rollouts=rollouts,
        widening=widening,
        expansion_k=VOCAB,
        max_depth=DEPTH,
        lam=LAM,
        min_branch_mass=0.0,
        temperature=TAU,
        max_new_tokens=DEPTH,
        seed=seed,
        select="sample",
        rollout_batch_size=1,
        return_trees=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    "widening",
    [{"widening": "fixed"}, {"widening": "mass"}, {"widening": "visits", "widening_alpha": 0.5}],
    ids=["k-children", "mass", "visits"],
)
def test_complete_tree_root_value_and_distribution_are_exact(exact_setup, widening):
    model, prompt, _, target, soft_value = exact_setup
    out = run_exact(model, prompt, rollouts=100, seed=0, num_return_sequences=4000, **widening)
    stats = out.stats[0]
    assert stats.rollouts == len(target) == 15  # one new leaf per rollout; then the tree is complete and stops
    assert stats.root_value == pytest.approx(soft_value, abs=1e-5)
    exact = boltzmann_distribution(out.trees[0], LAM)
    assert tv(exact, target) < 1e-5
    # Empirical: 4000 Boltzmann descents; MC noise alone gives TV ~ 0.02 here.
    prompt_len = prompt.shape[1]
    counts: dict[tuple, float] = {}
    for row in out.sequences[:, prompt_len:].tolist():
        seq = tuple(row[: row.index(EOS) + 1] if EOS in row else row[:DEPTH])
        counts[seq] = counts.get(seq, 0) + 1 / 4000
    assert tv(counts, target) < 0.06


def test_tv_to_target_shrinks_with_budget(exact_setup):
    model, prompt, _, target, _ = exact_setup
    distances = {}
    for budget in (1, 4, 9, 15):
        mixture: dict[tuple, float] = {}
        seeds = range(40)
        for seed in seeds:
            tree = run_exact(model, prompt, rollouts=budget, seed=seed).trees[0]
            for seq, prob in boltzmann_distribution(tree, LAM).items():
                mixture[seq] = mixture.get(seq, 0.0) + prob / len(seeds)
        distances[budget] = tv(mixture, target)
    assert distances[1] > distances[4] > distances[9] > distances[15]
    assert distances[15] < 1e-5
    # the bound shrinks with the budget: far from π* with one rollout, within 0.2 after 9 of 15 leaves
    assert distances[1] > 0.3 and distances[9] < 0.2


def test_empirical_samples_approach_target_with_budget(exact_setup):
    model, prompt, p, target, _ = exact_setup
    prompt_len = prompt.shape[1]

    def empirical(budget):
        counts: dict[tuple, float] = {}
        for seed in range(6):
            out = run_exact(model, prompt, rollouts=budget, seed=100 + seed, num_return_sequences=300)
            for row in out.sequences[:, prompt_len:].tolist():
                seq = tuple(row[: row.index(EOS) + 1] if EOS in row else row[:DEPTH])
                counts[seq] = counts.get(seq, 0) + 1 / 1800
        return counts

    small, full = tv(empirical(2), target), tv(empirical(15), target)
    assert full < 0.06 < small
    assert tv(p, target) > 0.1  # the tilt matters: π* is not p̃


# ---------------------------------------------------------------------------------------------------------------------
# The reward is really used


def first_token_reward(token):
    return lambda texts, context: [1.0 if ids[:1] == [token] else 0.0 for ids in context.token_ids]


def test_reward_changes_the_choice():
    model = tiny_llama(16, seed=2, sharpen=4.0)
    prompt = torch.tensor([[3, 5, 7]])
    root = full_log_probs(model, prompt, [], 1.0)
    rare, likely = int(root[:-1].argmin()), int(root[:-1].argmax())
    assert math.exp(float(root[rare])) < 0.05
    common = dict(num_rollouts=24, **fixed(expansion_k=16, max_depth=2, lam=10.0), max_new_tokens=4, seed=0)
    for favoured in (rare, likely):
        out = maxent_ts_generate(model, prompt, first_token_reward(favoured), **common)
        assert out.sequences[0, 3].item() == favoured
        assert out.rewards == [1.0]
    sampled = maxent_ts_generate(
        model, prompt, first_token_reward(rare), select="sample", num_return_sequences=200, **common
    )
    share = (sampled.sequences[:, 3] == rare).float().mean().item()
    assert share > 0.9  # π* puts ~all mass on the rare token at λ = 10; p̃ gives it < 5 %
    plain = maxent_ts_generate(model, prompt, lambda t, c: [0.0] * len(t), **common)
    assert plain.sequences[0, 3].item() != rare


# ---------------------------------------------------------------------------------------------------------------------
# Every forward call is counted; the prompt is prefilled once; prefixes are never recomputed


class ForwardCounter:
    def __init__(self, model):
        self.calls, self.tokens, self.lengths = 0, 0, []
        self.handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.calls += 1
        self.lengths.append(ids.shape[1])
        mask = kwargs.get("attention_mask")
        self.tokens += int(ids.numel()) if mask is None or ids.shape[1] > 1 else int(ids.shape[0])


@pytest.mark.parametrize(
    "method, kwargs",
    [
        (maxent_ts_generate, fixed(num_rollouts=20, expansion_k=3, max_depth=3, lam=2.0, rollout_batch_size=4)),
        (maxent_ts_generate, fixed(num_rollouts=9, expansion_k=2, max_depth=4, lam=2.0, rollout_batch_size=1)),
        (maxent_ts_generate, fixed(num_rollouts=30, expansion_k=2, max_depth=2, commit_every=6, rollout_batch_size=3)),
        (
            maxent_ts_generate,
            fixed(num_rollouts=24, expansion_k=32, max_depth=None, widening="mass", lam=5.0, rollout_batch_size=4),
        ),
        (maxent_ts_generate, dict(num_rollouts=24)),  # the defaults
        (best_of_n_generate, dict(n=5)),
        (greedy_generate, {}),
        (nucleus_generate, dict(num_samples=3)),
        (beam_generate, dict(num_beams=3)),
    ],
)
def test_nfe_and_tokens_are_counted_exactly(method, kwargs):
    model = tiny_llama(32, seed=3, sharpen=3.0)
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    reward = lambda texts, context: [len(ids) / 10 for ids in context.token_ids]  # noqa: E731
    counter = ForwardCounter(model)
    try:
        out = method(model, prompt, reward, max_new_tokens=10, **kwargs)
    finally:
        counter.handle.remove()
    stats = out.stats[0]
    assert stats.nfe == counter.calls
    assert stats.tokens_processed == counter.tokens
    # exactly one call sees the prompt; every other call feeds a single new token per row
    assert counter.lengths[0] == prompt.shape[1] and all(length == 1 for length in counter.lengths[1:])
    assert stats.prompt_tokens == prompt.shape[1]
    assert stats.generated_tokens == out.sequences.shape[1] - prompt.shape[1]  # one output: no right padding


def test_rollout_batching_spends_fewer_calls_for_the_same_tokens():
    model = tiny_llama(32, seed=3, sharpen=3.0)
    prompt = torch.tensor([[4, 8, 15, 16, 23]])
    reward = lambda texts, context: [0.5] * len(texts)  # noqa: E731
    common = dict(num_rollouts=16, **fixed(expansion_k=4, max_depth=2), max_new_tokens=12, seed=0)
    common.pop("rollout_batch_size")
    sequential = maxent_ts_generate(model, prompt, reward, rollout_batch_size=1, **common).stats[0]
    batched = maxent_ts_generate(model, prompt, reward, rollout_batch_size=8, **common).stats[0]
    assert batched.nfe < sequential.nfe / 2
    assert sequential.nfe == sequential.tokens_processed - sequential.prompt_tokens + 1


# ---------------------------------------------------------------------------------------------------------------------
# KV reuse gives the logits a full recomputation gives


def test_batched_extension_from_cached_prefixes_matches_recomputation():
    model = tiny_llama(40, seed=4)
    prompt = torch.tensor([[1, 2, 3, 4, 5, 6]])
    lm = CachedLM(model, {"input_ids": prompt}, proposal_processors(0.7))
    root = lm.prefill()
    assert torch.allclose(root, full_log_probs(model, prompt, [], 0.7), atol=1e-5)
    # grow three prefixes of different lengths in one batch, cut their segments, continue them in a new batch
    state = lm.start_batch([([], None)] * 3)
    grown = [[7], [8], [9]]
    lm.step(state, torch.tensor([7, 8, 9]))
    lm.step(state, torch.tensor([10, 11, 12]))
    grown = [g + [t] for g, t in zip(grown, [10, 11, 12])]
    lm.select_rows(state, [0, 2])
    lm.step(state, torch.tensor([13, 14]))
    grown = [grown[0] + [13], grown[2] + [14]]
    segments = [lm.segment(state, 0), lm.segment(state, 1)]
    prefixes = [(grown[0][:1], segments[0]), (grown[1], segments[1]), ([], None)]
    new_state = lm.start_batch(prefixes)
    dists = lm.step(new_state, torch.tensor([20, 21, 22]))
    dists2 = lm.step(new_state, torch.tensor([23, 24, 25]))
    for row, (tokens, _) in enumerate(prefixes):
        expected = full_log_probs(model, prompt, tokens + [20 + row], 0.7)
        assert torch.allclose(dists[row], expected, atol=1e-5)
        expected2 = full_log_probs(model, prompt, tokens + [20 + row, 23 + row], 0.7)
        assert torch.allclose(dists2[row], expected2, atol=1e-5)


def test_tree_node_distributions_match_recomputation():
    model = tiny_llama(24, seed=5, sharpen=3.0)
    prompt = torch.tensor([[2, 4, 6, 8]])
    out = maxent_ts_generate(
        model,
        prompt,
        lambda t, c: [0.3] * len(t),
        search_config=MaxEntTSConfig(**fixed(num_rollouts=24, expansion_k=24, max_depth=6, rollout_batch_size=6)),
        max_new_tokens=6,
        temperature=0.9,
        seed=0,
        return_trees=True,
    )
    checked, stack = 0, [out.trees[0]]
    while stack:
        node = stack.pop()
        stack.extend(node.children.values())
        if node.dist is not None:
            expected = full_log_probs(model, prompt, node.path(), 0.9)
            assert torch.allclose(node.dist, expected, atol=1e-5), node
            checked += 1
    assert checked > 20


# ---------------------------------------------------------------------------------------------------------------------
# HF generate integration


def test_custom_generate_with_a_plain_llama_and_a_padded_batch():
    model = tiny_llama(32, seed=6, sharpen=3.0)
    ids = torch.tensor([[0, 0, 5, 6, 7], [9, 8, 7, 6, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    reward = first_token_reward(3)
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        custom_generate=maxent_ts_generate,
        reward=reward,
        search_config=MaxEntTSConfig(**fixed(num_rollouts=32, expansion_k=32, max_depth=1, lam=10.0)),
        max_new_tokens=4,
        seed=0,
    )
    assert out.sequences.shape[0] == 2 and torch.equal(out.sequences[:, :5], ids)
    assert out.sequences[:, 5].tolist() == [3, 3]
    assert len(out.stats) == 2 and all(s.prompt_tokens in (3, 5) for s in out.stats)
    direct = maxent_ts_generate(
        model, {"input_ids": ids[:1, 2:]}, reward, **fixed(num_rollouts=32, expansion_k=32, max_depth=1, lam=10.0),
        max_new_tokens=4, seed=0,
    )  # fmt: skip
    assert direct.sequences[0, 3:].tolist() == out.sequences[0, 5 : 5 + direct.sequences.shape[1] - 3].tolist()


def test_greedy_and_beam_baselines_match_transformers():
    model = tiny_llama(32, seed=7, sharpen=3.0)
    prompt = torch.tensor([[3, 1, 4, 1, 5]])
    ours = greedy_generate(model, prompt, max_new_tokens=8).sequences
    theirs = model.generate(prompt, max_new_tokens=8, do_sample=False)
    assert ours[0, : theirs.shape[1]].tolist() == theirs[0].tolist()
    ours = beam_generate(model, prompt, num_beams=3, max_new_tokens=8).sequences
    theirs = model.generate(prompt, max_new_tokens=8, do_sample=False, num_beams=3)
    assert ours[0, : theirs.shape[1]].tolist() == theirs[0].tolist()


def test_argument_errors_name_the_value():
    model = tiny_llama(8)
    with pytest.raises(ValueError, match="reward"):
        maxent_ts_generate(model, torch.tensor([[1, 2]]), None, max_new_tokens=2)
    with pytest.raises(ValueError, match="select"):
        maxent_ts_generate(model, torch.tensor([[1, 2]]), count_ones, max_new_tokens=2, select="argmax")
    with pytest.raises(ValueError, match="needs expansion_k"):
        maxent_ts_generate(model, torch.tensor([[1, 2]]), count_ones, max_new_tokens=2, widening="fixed")
    with pytest.raises(ValueError, match=r"1\.5"):
        maxent_ts_generate(model, torch.tensor([[1, 2]]), lambda t, c: [1.5] * len(t), max_new_tokens=2)
    with pytest.raises(ValueError, match="padding"):
        maxent_ts_generate(
            model,
            {"input_ids": torch.tensor([[1, 2, 3]]), "attention_mask": torch.tensor([[1, 0, 1]])},
            count_ones,
            max_new_tokens=2,
        )


# ---------------------------------------------------------------------------------------------------------------------
# Processors


def test_value_guided_processor_reweights_towards_high_value_tokens():
    def value_fn(input_ids, candidates):
        return (candidates == 5).float()

    scores = torch.zeros(2, 10)
    scores[:, 5] = -1.0
    out = ValueGuidedLogitsProcessor(value_fn, lam=3.0, top_m=10)(torch.zeros(2, 1, dtype=torch.long), scores)
    assert torch.allclose(out[:, 5], torch.full((2,), 2.0)) and torch.equal(out[:, :5], scores[:, :5])
    model = tiny_llama(16, seed=8)
    prompt = torch.tensor([[1, 2, 3]])
    plain = CachedLM(model, {"input_ids": prompt}, proposal_processors()).prefill()
    guided = CachedLM(
        model, {"input_ids": prompt}, proposal_processors(extra=[ValueGuidedLogitsProcessor(value_fn, 3.0, 16)])
    ).prefill()
    assert guided[5] - plain[5] > 2.0  # +3 on the logit, less the larger normaliser
    nucleus = CachedLM(model, {"input_ids": prompt}, proposal_processors(1.0, top_p=0.5)).prefill()
    assert torch.isinf(nucleus).any() and torch.exp(nucleus).sum() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Rewards


def sine(n, period=8.0, start=0):
    t = np.arange(start, start + n)
    return 10 + 3 * np.sin(2 * np.pi * t / period)


def test_spectral_reward_prefers_a_continuation_that_keeps_the_spectrum():
    history, truth = sine(64), sine(16, start=64)
    reward = SpectralReward(history=history, horizon=16)
    rng = np.random.default_rng(0)
    texts = {
        "truth": ", ".join(f"{v:.2f}" for v in truth),
        "noise": ", ".join(f"{v:.2f}" for v in 10 + 3 * rng.normal(size=16)),
        "flat": ", ".join(["10.00"] * 16),
        "half": ", ".join(f"{v:.2f}" for v in truth[:8]),
        "garbage": "I cannot forecast this series.",
        "prose": "Forecast: " + ", ".join(f"{v:.2f}" for v in truth) + ". Done.",
    }
    scores = dict(zip(texts, reward(list(texts.values()), RewardContext([[]] * len(texts)))))
    assert scores["truth"] > 0.9
    assert scores["truth"] > scores["noise"] + 0.2 and scores["truth"] > scores["flat"] + 0.2
    assert scores["half"] == pytest.approx(scores["truth"] / 2, abs=0.1)
    assert scores["garbage"] == 0.0 and scores["prose"] == pytest.approx(scores["truth"])
    three = SpectralReward(horizon=3)
    assert [three.is_complete(t) for t in (" 1.2, 3.4, 5.", " 1.2, 3.4, 5.6", " 1.2, 3.4, 5.6,", "1, 2, 3, 4")] == [
        False, False, True, True,
    ]  # fmt: skip
    errors = forecast_errors(texts["half"], truth, history)
    assert errors["parsed"] == 0.5 and errors["mae"] > 0
    with pytest.raises(ValueError, match="history"):
        SpectralReward()(["1, 2"], RewardContext([[]]))


def test_feature_reward_checks_claims_against_the_series():
    rng = np.random.default_rng(1)
    rising = np.linspace(0, 10, 80) + 0.3 * rng.normal(size=80)
    reward = FeatureConsistencyReward(series=rising)
    good = "The series shows a steady upward trend with low noise, no seasonality, peaking at the end."
    bad = "The series is decreasing and highly volatile with a clear seasonal cycle; its maximum is at the start."
    g, b, empty = reward([good, bad, ""], RewardContext([[]] * 3))
    assert g > 0.9 and b < 0.1 and empty == 0.0
    seasonal = FeatureConsistencyReward()
    ctx = RewardContext([[]] * 2, extra={"series": sine(96)})
    yes, no = seasonal(["A periodic pattern that repeats.", "There is no seasonal pattern."], ctx)
    assert yes > no


def test_verifier_reads_answers_as_the_evaluation_counts_them():
    options = ["walking", "running", "sitting"]
    verifier = AnswerVerifierReward(options=options)
    ctx = RewardContext([[]] * 3, extra={"answer": "Running"})
    assert verifier(["Answer: running", "Answer: walking", "hmm"], ctx) == [1.0, 0.0, 0.0]
    assert verifier(["Reasoning... Answer: **Running**.", "so the answer is (b)", "answer: it's sitting"], ctx) == [
        1.0, 1.0, 0.0,
    ]  # fmt: skip
    plain = AnswerVerifierReward(answer="Running")
    assert plain(["no final answer given here", "nothing to see", "Running"], ctx) == [0.0, 0.0, 1.0]
    scaled = CallableReward(len, low=0, high=10)
    assert scaled(["abcde", "x" * 30], ctx) == [0.5, 1.0]


# ---------------------------------------------------------------------------------------------------------------------
# OpenTSLM: the series is really fed (at prefill only)

PRE = "You are an expert in time series analysis."
POST = "Please generate a detailed caption for this time-series, describing it as accurately as possible."


def series_pair(length: int = 40):
    """Two different series with identical mean and std, so the prompt text is identical and only the series differ."""
    first = np.sin(np.arange(length) / 3.0) + np.arange(length) / 20.0
    return first, first[::-1].copy()


# more children allowed than rollouts: the root keeps its distribution
ROOT_DISTRIBUTION_SEARCH = MaxEntTSConfig(**fixed(num_rollouts=4, expansion_k=5, max_depth=2))


def root_distribution(model, inputs, **kwargs):
    out = maxent_ts_generate(
        model,
        inputs,
        lambda texts, context: [0.5] * len(texts),
        search_config=ROOT_DISTRIBUTION_SEARCH,
        seed=0,
        return_trees=True,
        **kwargs,
    )
    return torch.softmax(out.trees[0].dist.double(), 0), out


def max_log_gap(p: torch.Tensor, q: torch.Tensor) -> float:
    """Largest |log p − log q| over the tokens both allow (the series placeholder token has probability 0)."""
    allowed = (p > 0) & (q > 0)
    return float((p[allowed].log() - q[allowed].log()).abs().max())


def assert_series_is_fed(model, processor, max_new_tokens: int):
    text = processor.format_prompt(PRE, POST, num_series=1)
    first, second = series_pair()
    inputs_a = processor(text=text, time_series=[[first]], return_tensors="pt")
    inputs_b = processor(text=text, time_series=[[second]], return_tensors="pt")
    assert torch.equal(inputs_a["input_ids"], inputs_b["input_ids"])  # only the series differ
    counter = ForwardCounter(model)
    seen_series = []
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen_series.append(kwargs.get("time_series") is not None), with_kwargs=True
    )
    try:
        p_a, out_a = root_distribution(model, inputs_a, max_new_tokens=max_new_tokens, tokenizer=processor)
    finally:
        handle.remove()
        counter.handle.remove()
    assert seen_series[0] and not any(seen_series[1:])  # the series goes in with the prompt, once
    assert out_a.stats[0].nfe == counter.calls
    p_b, _ = root_distribution(model, inputs_b, max_new_tokens=max_new_tokens, tokenizer=processor)
    # different series, different next-token distribution (float noise between identical runs is ~1e-7)
    assert max_log_gap(p_a, p_b) > 1e-3
    p_again, _ = root_distribution(model, inputs_a, max_new_tokens=max_new_tokens, tokenizer=processor)
    assert max_log_gap(p_a, p_again) < 1e-5
    via_generate = model.generate(
        **inputs_a,
        custom_generate=maxent_ts_generate,
        reward=lambda texts, context: [0.5] * len(texts),
        search_config=ROOT_DISTRIBUTION_SEARCH,
        seed=0,
        max_new_tokens=max_new_tokens,
        tokenizer=processor,
    )
    assert torch.equal(via_generate.sequences, out_a.sequences)
    return out_a


def test_series_is_fed_with_a_tiny_opentslm():
    from tiny import tiny_opentslm, tiny_processor

    processor = tiny_processor()
    model = tiny_opentslm(processor)
    out = assert_series_is_fed(model, processor, max_new_tokens=6)
    assert isinstance(out.texts[0], str)


@pytest.mark.slow
def test_series_is_fed_with_smollm2_opentslm(smollm2_dir):
    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor

    processor = OpenTSLMProcessor.from_llm(str(smollm2_dir))
    torch.manual_seed(0)
    model = OpenTSLMForCausalLM.from_llm(str(smollm2_dir), processor, dtype=torch.float32).eval()
    out = assert_series_is_fed(model, processor, max_new_tokens=8)
    # KV reuse on the real model: node distributions equal a full recomputation with the series
    text = processor.format_prompt(PRE, POST, num_series=1)
    inputs = processor(text=text, time_series=[[series_pair()[0]]], return_tensors="pt")
    checked, stack = 0, [out.trees[0]]
    while stack:
        node = stack.pop()
        stack.extend(node.children.values())
        if node.dist is not None and node.depth > 0:
            ids = torch.cat([inputs["input_ids"], torch.tensor([node.path()])], dim=1)
            with torch.no_grad():
                logits = model(
                    input_ids=ids,
                    time_series=inputs["time_series"],
                    time_series_mask=inputs["time_series_mask"],
                ).logits[0, -1]
            assert torch.allclose(node.dist, torch.log_softmax(logits.float(), -1), atol=2e-3)
            checked += 1
    assert checked >= 2


def test_commit_and_reroot_and_token_budget():
    model = tiny_llama(32, seed=9, sharpen=3.0)
    prompt = torch.tensor([[1, 2, 3]])
    reward = first_token_reward(5)
    out = maxent_ts_generate(
        model, prompt, reward, **fixed(num_rollouts=40, expansion_k=2, max_depth=2, commit_every=5), max_new_tokens=12,
        seed=0, select="sample", return_trees=True,
    )  # fmt: skip
    stats = out.stats[0]
    assert stats.commits >= 4 and 0 < stats.rollouts <= 40  # commits also happen when the window is exhausted
    # the committed prefix is a chain from the original root, and the output extends it
    node, prefix = out.trees[0], []
    for _ in range(stats.commits):
        assert len(node.children) == 1
        node = next(iter(node.children.values()))
        prefix.append(node.token)
    assert out.sequences[0, 3 : 3 + len(prefix)].tolist() == prefix
    budgeted = maxent_ts_generate(
        model, prompt, reward, **fixed(num_rollouts=1000, expansion_k=3, max_depth=12, rollout_batch_size=4),
        max_new_tokens=12, seed=0, token_budget=60,
    ).stats[0]  # fmt: skip
    spent = budgeted.tokens_processed - budgeted.prompt_tokens
    assert 60 - 12 < spent <= 60 and budgeted.rollouts < 1000  # never over: a rollout starts only if it fits
    with pytest.raises(ValueError, match="cannot pay for one rollout"):
        maxent_ts_generate(model, prompt, reward, max_new_tokens=12, token_budget=11)


def test_stop_condition_ends_outputs_and_the_budget_is_spent_but_never_exceeded():
    """A text-level stop (here: the output contains token 7) ends rollouts and best-of-N rows alike; outputs then have
    varied lengths, and MaxEnt-TS spends its token budget without ever going over it (rows are cut at the end)."""
    model = tiny_llama(16, seed=5, sharpen=1.0)
    prompt = torch.tensor([[2, 9, 4]])
    stop = lambda text: "7" in text.split()  # noqa: E731  (no tokenizer: texts are the ids joined by spaces)
    reward = lambda texts, context: [len(ids) / 12 for ids in context.token_ids]  # noqa: E731
    bon = best_of_n_generate(model, prompt, reward, n=6, max_new_tokens=12, seed=0, stop_condition=stop)
    output = bon.sequences[0, 3:].tolist()
    assert 7 not in output[:-1] and (output[-1] == 7 or len(output) == 12)
    for seed in range(6):
        out = maxent_ts_generate(
            model, prompt, reward, num_rollouts=1000, widening="mass", expansion_k=16, max_depth=None, lam=5.0,
            min_branch_mass=0.0, max_new_tokens=12, token_budget=50, rollout_batch_size=4, seed=seed,
            stop_condition=stop, return_trees=True,
        )  # fmt: skip
        spent = out.stats[0].tokens_processed - out.stats[0].prompt_tokens
        assert 50 - 12 < spent <= 50  # a rollout starts when the longest output so far still fits
        stack = [out.trees[0]]
        while stack:  # nothing grows below a node that ends an output
            node = stack.pop()
            assert not (node.token == 7 and node.children)
            stack.extend(node.children.values())
    with pytest.raises(ValueError, match="unexplored_prior"):
        maxent_ts_generate(model, prompt, reward, max_new_tokens=4, unexplored_prior="max")
    with pytest.raises(ValueError, match="min_branch_mass"):
        maxent_ts_generate(model, prompt, reward, max_new_tokens=4, min_branch_mass=1.0)


def test_min_branch_mass_leaves_the_tail_of_each_node_unexplored():
    """No child is added where less than ``min_branch_mass`` of p̃ is left unexplored; without it the tail fills up."""
    model = tiny_llama(16, seed=6, sharpen=2.0)
    prompt = torch.tensor([[1, 3, 5]])
    common = dict(num_rollouts=300, widening="mass", expansion_k=16, max_depth=None, lam=5.0, max_new_tokens=3, seed=0)

    def covered_before_last_child(min_branch_mass):
        out = maxent_ts_generate(
            model, prompt, count_ones, min_branch_mass=min_branch_mass, rollout_batch_size=1, return_trees=True,
            **common,
        )  # fmt: skip
        worst, stack = 0.0, [out.trees[0]]
        while stack:
            node = stack.pop()
            if node.dist is not None and len(node.children) > 1:
                earlier = list(node.children)[:-1]
                worst = max(worst, float(node.dist.exp()[earlier].sum()))
            stack.extend(node.children.values())
        return worst

    assert covered_before_last_child(0.3) < 0.7 < covered_before_last_child(0.0)


def test_mass_widening_first_rollout_is_a_draw_from_the_proposal(exact_setup):
    """Mass widening forces nothing into the tree: before any value exists, a rollout is a plain draw from p̃."""
    model, prompt, p, _, _ = exact_setup
    runs, counts = 400, {}
    for seed in range(runs):
        out = maxent_ts_generate(
            model, prompt, count_ones, num_rollouts=1, widening="mass", expansion_k=VOCAB, max_depth=None,
            lam=LAM, min_branch_mass=0.0, temperature=TAU, max_new_tokens=DEPTH, seed=seed,
        )  # fmt: skip
        row = out.sequences[0, prompt.shape[1] :].tolist()
        seq = tuple(row[: row.index(EOS) + 1] if EOS in row else row[:DEPTH])
        counts[seq] = counts.get(seq, 0) + 1 / runs
    assert tv(counts, p) < 0.08  # MC noise alone: ~0.04 at 400 draws over 15 outputs


def test_mass_widening_prefers_paths_above_the_baseline():
    """With λ > 0, rollouts concentrate under the children whose outputs beat the mean reward; with λ = 0 they
    follow p̃. Batched rollouts may draw the same pending token twice (sampling with replacement): counted once."""
    model = tiny_llama(16, seed=2, sharpen=4.0)
    prompt = torch.tensor([[3, 5, 7]])
    dist = full_log_probs(model, prompt, [], 1.0).exp()
    favoured = int(dist.argsort()[-3])  # the third most likely first token
    common = dict(
        num_rollouts=48, widening="mass", expansion_k=16, max_depth=None, min_branch_mass=0.0, max_new_tokens=4, seed=0
    )
    shares = {}
    for lam in (0.0, 20.0):
        out = maxent_ts_generate(
            model, prompt, first_token_reward(favoured), lam=lam, rollout_batch_size=4, return_trees=True, **common
        )
        root = out.trees[0]
        shares[lam] = root.children[favoured].visits / root.visits if favoured in root.children else 0.0
        assert out.stats[0].rollouts == 48 and root.visits == 48
    assert shares[0.0] < float(dist[favoured]) + 0.15
    assert shares[20.0] > 0.6 > shares[0.0]
