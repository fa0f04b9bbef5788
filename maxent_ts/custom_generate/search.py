"""MaxEnt-TS: maximum-entropy tree search over a causal LM's continuations.

Target: π*(y | x) ∝ p̃(y | x) · exp(λ · r(x, y)), p̃ being the model's distribution after the proposal processors
(temperature, nucleus...). The tree holds token prefixes; the root is the prompt, prefilled once. Each iteration

1. **selects** from the root: at a node with fewer than k children (progressive widening optional) it **expands**
   a new child sampled from p̃ without the children already there; otherwise it moves to a child with probability
   ∝ p̃(c) · exp(λ · v̂(c));
2. **rolls out** from the new child to EOS or ``max_new_tokens`` sampling p̃, every rollout token becoming a node;
3. scores the output with the reward (in [0, 1]) and **backs up** soft values in float64:
   v̂(leaf) = r, v̂(n) = (1/λ) · log(Σ_c p̃(c) e^{λ v̂(c)} / Σ_c p̃(c)) over the evaluated children.

On a complete tree v̂(root) = (1/λ) log E_p̃[e^{λr}] and descending with the Boltzmann rule samples π* exactly.

Widening (``MaxEntTSConfig.widening``). With ``"fixed"`` every node within ``max_depth`` tokens of the root gets k
distinct children, so unlikely tokens are forced into the tree and rollouts branch only near the root: on SmolLM2
(k = 3, depth 5) that loses to best-of-N at equal compute. ``"mass"`` (the default) replaces it: along the descent a
token is drawn ∝ p̃ · e^{λ q}, q being v̂ for evaluated children and the mean reward so far for unexplored tokens, and
a rollout starts at the first token that has no evaluated child. Paths that beat the baseline are followed deep
before branching (rollouts there are short, so more of them fit in a budget); paths below it are left early. With no
depth or width cap this is the setting the opentslm-hub search benchmark compares with best-of-N (ahead on its
forecasting and captioning tasks, by small margins). Backups and the Boltzmann output are the same in every mode.

Rollouts run in batches (several selections, then one batched rollout); expansions and rollouts continue from
cached prefixes (see ``kv.py``): no prompt or prefix is ever recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

from .config import MaxEntTSConfig
from .harness import (
    PromptJob,
    SearchOutput,
    assemble_output,
    make_decoder,
    merged_generation_config,
    prepare_jobs,
    sample_tokens,
    split_generation_kwargs,
)
from .kv import KVSegment
from .reward_protocol import RewardFn

_TINY_MASS = 1e-30


class Node:
    """A token prefix. ``depth`` counts generated tokens from the prompt (root 0); ``logp`` is log p̃(token | parent);
    ``dist`` log p̃(· | this prefix) while the node may still be expanded; ``segment`` holds the keys/values of the
    prefix (its first ``depth`` positions)."""

    __slots__ = (
        "token",
        "parent",
        "children",
        "depth",
        "logp",
        "value",
        "reward",
        "terminal",
        "dist",
        "segment",
        "visits",
        "exhausted",
    )

    def __init__(self, token: int | None, parent: Node | None, depth: int, logp: float, terminal: bool = False):
        self.token = token
        self.parent = parent
        self.children: dict[int, Node] = {}
        self.depth = depth
        self.logp = logp
        self.value: float | None = None
        self.reward: float | None = None
        self.terminal = terminal
        self.dist: torch.Tensor | None = None
        self.segment: KVSegment | None = None
        self.visits = 0
        self.exhausted = False

    def path(self) -> list[int]:
        """Generated token ids from the prompt to this node (inclusive)."""
        tokens, node = [], self
        while node.parent is not None:
            tokens.append(node.token)
            node = node.parent
        return tokens[::-1]

    def evaluated_children(self) -> list[Node]:
        return [child for child in self.children.values() if child.value is not None]

    def __repr__(self) -> str:
        return f"Node(token={self.token}, depth={self.depth}, value={self.value}, children={len(self.children)})"


def soft_value(children: Sequence[Node], lam: float) -> float:
    """(1/λ) · log(Σ p̃(c) e^{λ v(c)} / Σ p̃(c)) in float64 via logsumexp; the p̃-weighted mean when λ = 0."""
    logp = np.array([c.logp for c in children], dtype=np.float64)
    values = np.array([c.value for c in children], dtype=np.float64)
    if lam == 0:
        weights = np.exp(logp - logp.max())
        return float(np.dot(weights, values) / weights.sum())
    return float((np.logaddexp.reduce(logp + lam * values) - np.logaddexp.reduce(logp)) / lam)


def boltzmann_weights(children: Sequence[Node], lam: float) -> np.ndarray:
    """Selection probabilities ∝ p̃(c) · exp(λ v̂(c)) (float64)."""
    scores = np.array([c.logp + lam * c.value for c in children], dtype=np.float64)
    weights = np.exp(scores - scores.max())
    return weights / weights.sum()


def boltzmann_distribution(root: Node, lam: float) -> dict[tuple[int, ...], float]:
    """The output distribution of a Boltzmann descent from ``root`` over the evaluated tree (for checks/tests)."""
    result: dict[tuple[int, ...], float] = {}
    stack = [(root, 1.0)]
    while stack:
        node, mass = stack.pop()
        children = node.evaluated_children()
        if node.terminal or not children:
            key = tuple(node.path())
            result[key] = result.get(key, 0.0) + mass
            continue
        for child, weight in zip(children, boltzmann_weights(children, lam)):
            stack.append((child, mass * weight))
    return result


class MaxEntTree:
    """The search for one prompt. Use through :func:`maxent_ts_generate`."""

    def __init__(self, job: PromptJob, config: MaxEntTSConfig, generator: torch.Generator, rng: np.random.Generator):
        self.job = job
        self.lm = job.lm
        self.settings = job.settings
        self.k = config.expansion_k if config.expansion_k is not None else math.inf
        self.max_depth = config.max_depth if config.max_depth is not None else job.settings.max_new_tokens
        self.lam = float(config.lam)
        self.widening_alpha = config.widening_alpha if config.widening == "visits" else None
        self.mass_widening = config.widening == "mass"
        self.unexplored_prior = config.unexplored_prior
        self.log_min_mass = math.log(max(config.min_branch_mass, _TINY_MASS))
        self.generator = generator
        self.rng = rng
        self.keep_all_distributions = config.commit_every is not None
        self.origin = Node(None, None, 0, 0.0)
        self.root = self.origin
        self.tree_size = 1
        self.rollouts = 0
        self.commits = 0
        # (reward, log p̃ of the path, generated ids) of every scored output; ids, not nodes, so that pruned
        # subtrees (and their KV segments) can be freed after a commit.
        self.results: list[tuple[float, float, list[int]]] = []

    # -- node bookkeeping ------------------------------------------------------------------------------------------
    def _add_child(self, parent: Node, token: int, logp: float) -> Node:
        if token in parent.children:  # two rollouts of one batch drew the same token: they share the node
            return parent.children[token]
        depth = parent.depth + 1
        terminal = self.job.ends_output(parent.path() + [token])
        child = Node(token, parent, depth, logp, terminal)
        parent.children[token] = child
        self.tree_size += 1
        return child

    def _new_child(self, parent: Node, token: int) -> Node:
        return self._add_child(parent, token, float(parent.dist[token]))

    def _discard(self, child: Node) -> None:
        """Undo the expansion of a child that was selected but will not be rolled out (token budget)."""
        del child.parent.children[child.token]
        self.tree_size -= 1

    def _store_dist(self, node: Node, dist: torch.Tensor) -> None:
        if node.terminal or node.dist is not None:
            return
        if self.keep_all_distributions or node.depth - self.root.depth < self.max_depth:
            node.dist = dist.detach().clone()

    def _remaining_support(self, node: Node, keep_pending: bool = False) -> torch.Tensor | None:
        """log p̃ at ``node`` with existing children removed (``keep_pending``: only evaluated ones), or None when
        nothing with mass is left."""
        if node.dist is None:
            return None
        masked = node.dist.clone()
        removed = [t for t, c in node.children.items() if not keep_pending or c.value is not None]
        if removed:
            masked[removed] = -math.inf
        if float(torch.logsumexp(masked, 0)) <= self.log_min_mass:
            return None
        return masked

    def _in_window(self, node: Node) -> bool:
        return not node.terminal and node.depth - self.root.depth < self.max_depth

    def _may_expand(self, node: Node) -> bool:
        """Whether the node can ever get another child (ignoring progressive widening)."""
        return (
            self._in_window(node)
            and len(node.children) < self.k
            and node.dist is not None
            and self._remaining_support(node) is not None
        )

    def _width_now(self, node: Node) -> int:
        if self.widening_alpha is None:
            return self.k
        return min(self.k, 1 + int(node.visits**self.widening_alpha))

    def _expand(self, node: Node) -> Node | None:
        masked = self._remaining_support(node)
        if masked is None:
            return None
        probs = torch.softmax(masked.double(), 0)
        token = int(sample_tokens(probs, self.generator))
        return self._new_child(node, token)

    def _refresh_exhausted(self, node: Node) -> None:
        node.exhausted = node.terminal or (
            not self._may_expand(node) and all(c.value is not None and c.exhausted for c in node.children.values())
        )

    # -- the four steps ----------------------------------------------------------------------------------------------
    def _mean_reward(self) -> float:
        return sum(r for r, _, _ in self.results) / len(self.results) if self.results else 0.0

    def _select_by_mass(self) -> Node | None:
        """Selection with probability-mass widening. At each node a token t is drawn with probability
        ∝ p̃(t) · exp(λ · q(t)): q = v̂ of its child when that is evaluated, else the mean reward of the outputs so far
        (the search's baseline). Evaluated children are descended into; any other token starts a rollout from here,
        a token already pending in this batch being rolled out again (sampling with replacement). No token is forced
        into the tree because k allows it: with λ = 0 each rollout is an exact draw from p̃ that reuses the prefixes
        already computed, and with λ > 0 paths whose outputs beat the baseline are extended, worse ones left early."""
        node = self.root
        if node.exhausted:
            return None
        baseline = self._mean_reward()
        while True:
            candidates = [c for c in node.evaluated_children() if not c.exhausted]
            unexplored = None
            if self._in_window(node) and len(node.children) < self.k:
                unexplored = self._remaining_support(node, keep_pending=True)
            if unexplored is None and not candidates:
                return None  # wait for this batch's rollouts (or nothing left below)
            scores = [c.logp + self.lam * c.value for c in candidates]
            if unexplored is not None:
                prior = node.value if self.unexplored_prior == "parent" and node.value is not None else baseline
                scores.append(float(torch.logsumexp(unexplored.double(), 0)) + self.lam * prior)
            scores = np.array(scores, dtype=np.float64)
            weights = np.exp(scores - scores.max())
            choice = int(self.rng.choice(len(scores), p=weights / weights.sum()))
            if choice < len(candidates):
                node = candidates[choice]
                continue
            token = int(sample_tokens(torch.softmax(unexplored.double(), 0), self.generator))
            if token in node.children:
                return node.children[token]  # pending in this batch: roll it out once more
            return self._new_child(node, token)

    def select(self) -> Node | None:
        """Walk down and expand one new child; None when nothing can be expanded now (all pending or exhausted)."""
        if self.mass_widening:
            return self._select_by_mass()
        node = self.root
        if node.exhausted:
            return None
        while True:
            candidates = [c for c in node.evaluated_children() if not c.exhausted]
            if self._in_window(node) and len(node.children) < self._width_now(node):
                child = self._expand(node)
                if child is not None:
                    return child
            if not candidates:
                pending = any(child.value is None for child in node.children.values())
                if not pending and self._may_expand(node):  # widening held it back, but nothing else is left here
                    return self._expand(node)
                return None  # wait for this batch's rollouts (or nothing left below)
            weights = boltzmann_weights(candidates, self.lam)
            node = candidates[int(self.rng.choice(len(candidates), p=weights))]

    @staticmethod
    def _give_segment(nodes: list[Node], segment: KVSegment) -> None:
        for node in nodes:
            node.segment = segment

    def _longest_output(self) -> int:
        return max((len(path) for _, _, path in self.results), default=self.settings.max_new_tokens)

    def rollout(self, fresh: list[Node], token_budget: int | None = None) -> list[Node]:
        """Complete every new node by sampling p̃ to a terminal; all sampled tokens join the tree. Batched. Rows still
        open when ``token_budget`` (token positions after the prompt) would be exceeded stop there, unfinished."""
        leaves = [node for node in fresh if node.terminal]
        open_nodes = [node for node in fresh if not node.terminal]
        if not open_nodes:
            return leaves
        prefixes = [(node.parent.path(), node.parent.segment) for node in open_nodes]
        state = self.lm.start_batch(prefixes)
        current = list(open_nodes)  # the node each row feeds next
        fed: list[list[Node]] = [[] for _ in current]
        rows = list(range(len(current)))  # original row id of each batch row
        while current:
            spent = self.lm.tokens_processed - self.lm.prompt_length
            if token_budget is not None and spent + len(current) > token_budget:
                for batch_row, node in enumerate(current):  # out of budget: scored as they stand
                    leaves.append(node)
                    self._give_segment(fed[rows[batch_row]], self.lm.segment(state, batch_row))
                break
            dists = self.lm.step(state, torch.tensor([node.token for node in current]))
            samples = sample_tokens(dists.double().exp(), self.generator).view(-1).tolist()
            keep, next_current = [], []
            for batch_row, (node, token) in enumerate(zip(current, samples)):
                self._store_dist(node, dists[batch_row])
                fed[rows[batch_row]].append(node)
                child = self._add_child(node, token, float(dists[batch_row, token]))
                if child.terminal:
                    leaves.append(child)
                    self._give_segment(fed[rows[batch_row]], self.lm.segment(state, batch_row))
                else:
                    keep.append(batch_row)
                    next_current.append(child)
            if not next_current:
                break
            if len(keep) < len(current):
                self.lm.select_rows(state, keep)
                rows = [rows[i] for i in keep]
            current = next_current
        return leaves

    def backup(self, leaf: Node, reward: float) -> None:
        leaf.value = leaf.reward = reward
        leaf.visits += 1
        leaf.exhausted = True
        path, path_logp, node = [], 0.0, leaf
        while node.parent is not None:
            path.append(node.token)
            path_logp += node.logp
            node = node.parent
        self.results.append((reward, path_logp, path[::-1]))
        node = leaf.parent
        while node is not None and node.depth >= self.root.depth:
            if len(node.children) >= self.k:
                node.dist = None  # never expanded again: free the vocabulary-sized vector
            node.visits += 1
            node.value = soft_value(node.evaluated_children(), self.lam)
            self._refresh_exhausted(node)
            node = node.parent

    def commit(self, sample: bool) -> bool:
        """Fix the root's best child (largest log p̃ + λ v̂, or a Boltzmann draw) as output and re-root there,
        keeping its subtree. Returns False when there is nothing to commit to."""
        children = self.root.evaluated_children()
        if not children or self.root.terminal:
            return False
        if sample:
            chosen = children[int(self.rng.choice(len(children), p=boltzmann_weights(children, self.lam)))]
        else:
            chosen = max(children, key=lambda c: c.logp + self.lam * c.value)
        self.root.children = {chosen.token: chosen}
        self.root.dist = None
        self.root = chosen
        self.commits += 1
        self._refresh_subtree(chosen)
        return True

    def _refresh_subtree(self, top: Node) -> None:
        order, stack = [], [top]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children.values())
        for node in reversed(order):
            if node.terminal:
                node.exhausted = node.value is not None
            else:
                self._refresh_exhausted(node)

    # -- driver --------------------------------------------------------------------------------------------------------
    def run(
        self,
        num_rollouts: int,
        rollout_batch_size: int,
        commit_every: int | None,
        token_budget: int | None,
        sample_commits: bool,
    ) -> None:
        self._store_dist(self.origin, self.lm.prefill())
        since_commit = 0
        out_of_budget = False
        while self.rollouts < num_rollouts and not out_of_budget:
            if self.root.terminal:
                break
            fresh: list[Node] = []
            # tokens after the prompt evaluated so far plus what this batch is expected to evaluate: a rollout from
            # depth d is reserved as long as the longest output so far (max_new_tokens before any), and rollouts are
            # cut where the budget ends, so the budget is spent but never exceeded
            planned = self.lm.tokens_processed - self.lm.prompt_length
            while len(fresh) < rollout_batch_size and self.rollouts + len(fresh) < num_rollouts:
                size = self.tree_size
                child = self.select()
                if child is None:
                    break
                if token_budget is not None:
                    expected = 0 if child.terminal else max(1, self._longest_output() - child.depth)
                    if planned + expected > token_budget:
                        if self.tree_size > size:
                            self._discard(child)
                        out_of_budget = not fresh  # otherwise look again once this batch has really spent
                        break
                    planned += expected
                fresh.append(child)
            if not fresh:
                if self.root.exhausted and commit_every is not None and self.commit(sample_commits):
                    since_commit = 0
                    continue
                break
            leaves = self.rollout(fresh, token_budget)
            rewards = self.job.score([leaf.path() for leaf in leaves])
            for leaf, reward in zip(leaves, rewards):
                self.backup(leaf, reward)
            self.rollouts += len(fresh)
            since_commit += len(fresh)
            if commit_every is not None and since_commit >= commit_every:
                if self.commit(sample_commits):
                    since_commit = 0

    def sample_output(self) -> Node:
        """A Boltzmann descent from the root: an (approximate) draw from π*."""
        node = self.root
        while not node.terminal:
            children = node.evaluated_children()
            if not children:
                break
            node = children[int(self.rng.choice(len(children), p=boltzmann_weights(children, self.lam)))]
        return node

    def best_outputs(self, count: int) -> list[tuple[list[int], float]]:
        """The highest-reward outputs found, as (ids, reward); ties go to the higher path log p̃."""
        ranked = sorted(self.results, key=lambda item: (item[0], item[1]), reverse=True)
        return [(path, reward) for reward, _, path in ranked[:count]]


def maxent_ts_generate(
    model: torch.nn.Module,
    inputs: Any = None,
    reward: RewardFn | None = None,
    *,
    search_config: MaxEntTSConfig | dict[str, Any] | None = None,
    generation_config: GenerationConfig | None = None,
    tokenizer: Any = None,
    reward_context: Any = None,
    stop_condition: Callable[[str], bool] | None = None,
    seed: int | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    **kwargs: Any,
) -> SearchOutput:
    """MaxEnt-TS for each prompt of a batch: ``search_config`` says how to search, the generation config what to
    generate (proposal p̃ and length).

    Args:
        model: any HF causal LM (OpenTSLM included: its ``time_series``/``time_series_mask`` go to the prefill only).
        inputs: input ids ``[batch, length]`` (left-padded) or a mapping such as a tokenizer's/processor's output.
        reward: ``reward(texts, context) -> list[float]`` in [0, 1] (see ``reward_protocol.py``).
        search_config: a :class:`MaxEntTSConfig` or a dict of its fields; None: the defaults (the benchmark's tuned
            settings). Never modified.
        generation_config: ``max_new_tokens``, ``temperature``, ``top_p``, ``top_k`` (the proposal p̃ is the model
            after temperature, top-k and nucleus) and ``num_return_sequences``; None: the model's. Temperature 1
            when neither sets one.
        tokenizer: decodes texts for the reward (a processor works too; without one, texts are the ids joined by
            spaces).
        reward_context: per-prompt data for the reward: one dict, or a list with one dict per prompt.
        stop_condition: ``fn(text) -> bool`` on the decoded output so far; True ends the output like EOS does
            (e.g. ``SpectralReward.is_complete``: once the forecast has its numbers nothing later changes the reward).
        seed: seeds the search's random draws (None: a random seed).
        logits_processor: extra `LogitsProcessor`s applied before temperature/top-k/nucleus (e.g. value guidance);
            from ``generate``, its temperature/top-k/top-p warpers are left out (the generation settings define them).
        stopping_criteria: accepted for ``generate``'s sake and not used: outputs end at EOS, ``max_new_tokens`` or
            ``stop_condition``.
        **kwargs: fields of :class:`MaxEntTSConfig` (override ``search_config``: ``num_rollouts=32``,
            ``token_budget=320``...), fields of `GenerationConfig` (override ``generation_config``:
            ``max_new_tokens=40``...), and model inputs (``input_ids``, ``attention_mask``, ``time_series``...).

    Returns:
        :class:`SearchOutput` with ``sequences`` (prompt + output, ``num_return_sequences`` rows per prompt),
        ``texts``, ``rewards`` and ``stats`` (NFE, tokens processed, tree size, best/mean reward, wall time per
        prompt); ``trees`` (root nodes) with ``return_trees=True``.
    """
    if reward is None:
        raise ValueError(
            "maxent_ts_generate needs reward=...: a callable (texts, context) -> list of floats in [0, 1]."
        )
    config = MaxEntTSConfig.coerce(search_config)
    generation_settings, model_kwargs = split_generation_kwargs(config.update(**kwargs))
    generation_config = merged_generation_config(model, generation_config, generation_settings)
    input_ids, settings, jobs = prepare_jobs(
        model,
        inputs,
        model_kwargs,
        method="maxent_ts",
        reward=reward,
        tokenizer=tokenizer,
        reward_context=reward_context,
        generation_config=generation_config,
        max_new_tokens=None,
        temperature=None,
        top_p=None,
        top_k=None,
        extra_processors=_user_processors(logits_processor),
        stop_condition=stop_condition,
    )
    if config.token_budget is not None and config.token_budget < settings.max_new_tokens:
        raise ValueError(
            f"token_budget={config.token_budget} cannot pay for one rollout of max_new_tokens="
            f"{settings.max_new_tokens} tokens; give at least max_new_tokens."
        )
    num_return_sequences = generation_config.num_return_sequences or 1
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2**31 - 1, (1,))))
    rng = np.random.default_rng(seed)
    selected, selected_rewards, stats, trees = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for job in jobs:
                tree = MaxEntTree(job, config, generator, rng)
                tree.run(
                    config.num_rollouts,
                    config.rollout_batch_size,
                    config.commit_every,
                    config.token_budget,
                    sample_commits=config.select == "sample",
                )
                if config.select == "sample":
                    leaves = [tree.sample_output() for _ in range(num_return_sequences)]
                    outputs = [(leaf.path(), leaf.reward if leaf.reward is not None else math.nan) for leaf in leaves]
                else:
                    outputs = tree.best_outputs(num_return_sequences)
                sequences = [path for path, _ in outputs]
                rewards = [value for _, value in outputs]
                job.stats.tree_size = tree.tree_size
                job.stats.rollouts = tree.rollouts
                job.stats.commits = tree.commits
                job.stats.root_value = tree.root.value
                stats.append(job.finish(sequences, rewards))
                selected.append(sequences)
                selected_rewards.append(rewards)
                trees.append(tree.origin if config.return_trees else None)
    finally:
        model.train(was_training)
    return assemble_output(
        input_ids,
        settings,
        selected,
        selected_rewards,
        stats,
        make_decoder(tokenizer),
        trees if config.return_trees else None,
    )


def _user_processors(logits_processor: LogitsProcessorList | None) -> list[LogitsProcessor]:
    """The processors `generate` prepared, minus the sampling warpers our own arguments define."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    if not logits_processor:
        return []
    skip = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)
    return [p for p in logits_processor if not isinstance(p, skip)]
