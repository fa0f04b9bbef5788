"""The settings of a MaxEnt-TS search in one object, like `GenerationConfig` is for decoding."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

WIDENING_MODES = ("mass", "fixed", "visits")
SELECT_MODES = ("best", "sample")
UNEXPLORED_PRIORS = ("mean", "parent")


@dataclass
class MaxEntTSConfig:
    """Search settings of :func:`maxent_ts_generate`. The defaults are the settings the opentslm-hub search benchmark
    (``benchmarks/bench_search.py`` there) compares with best-of-N, chosen on a validation split of its forecasting and
    captioning tasks with SmolLM2-135M-Instruct; what the output is, how long and from which proposal
    (``max_new_tokens``, ``temperature``, ``top_p``, ``top_k``, ``num_return_sequences``) stays in the generation
    config.

    Budget:
        num_rollouts (`int`, default 64): iterations (select, expand, roll out, back up) per prompt at most.
        token_budget (`int` or None, default None): token positions after the prompt the search may evaluate, never
            exceeded (None: no cap). A rollout starts only when an output as long as the longest so far still fits
            (``max_new_tokens`` before any); rows are cut where the budget ends and scored as they stand. To compare
            with best-of-N at equal compute, give the tokens best-of-N spent (at most N · ``max_new_tokens``).

    Search:
        lam (`float`, default 100.0): λ, the inverse temperature of the reward tilt π* ∝ p̃ · exp(λ r), r in [0, 1].
        widening (`str`, default "mass"): how nodes get children.
            ``"mass"``: along the descent a token is drawn ∝ p̃ · e^{λ q}, q being v̂ for evaluated children and the
            ``unexplored_prior`` for the other tokens; an unevaluated token starts a rollout there. Nothing unlikely is
            forced into the tree, λ = 0 is plain sampling with prefix reuse, and paths above the baseline are
            extended deep before branching.
            ``"fixed"``: every node within ``max_depth`` of the root gets up to ``expansion_k`` distinct children
            sampled from p̃ before the search descends (the textbook MCTS expansion; needs ``expansion_k``).
            ``"visits"``: like ``"fixed"``, with ``min(expansion_k, 1 + visits ** widening_alpha)`` children.
        expansion_k (`int` or None, default None): children per node at most (None: no cap).
        max_depth (`int` or None, default None): new children only within this many tokens of the current root
            (None: anywhere); deeper nodes come from rollouts only.
        widening_alpha (`float` or None, default None): the exponent of ``widening="visits"``.
        unexplored_prior (`str`, default "mean"): with mass widening, the q of unexplored tokens: ``"mean"`` (the
            mean reward so far: paths above it are followed deep, branching is late) or ``"parent"`` (the node's own
            v̂: branching in proportion to the unexplored mass, i.e. mostly early, where p̃ is uncertain).
        min_branch_mass (`float`, default 0.02): unexplored probability mass below which a node counts as fully
            expanded (0: only when nothing is left). Keeps the search off the vocabulary's tail.
        rollout_batch_size (`int`, default 4): selections before one batched rollout (1: strictly sequential).
        commit_every (`int` or None, default None): after this many rollouts, commit the root's best child and
            re-root, keeping its subtree (None: never; the search also commits when the window is exhausted).

    Output:
        select (`str`, default "best"): ``"best"`` returns the highest-reward outputs found; ``"sample"`` Boltzmann
            descents of the tree (draws from π* once the tree is complete).
        return_trees (`bool`, default False): also return each prompt's root node (for inspection and tests).
    """

    num_rollouts: int = 64
    token_budget: int | None = None
    lam: float = 100.0
    widening: str = "mass"
    expansion_k: int | None = None
    max_depth: int | None = None
    widening_alpha: float | None = None
    unexplored_prior: str = "mean"
    min_branch_mass: float = 0.02
    rollout_batch_size: int = 4
    commit_every: int | None = None
    select: str = "best"
    return_trees: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def validate(self) -> None:
        """Raise a ``ValueError`` naming the setting, its value and what it should be."""
        for name in ("num_rollouts", "rollout_batch_size"):
            _check_positive_int(name, getattr(self, name))
        for name in ("token_budget", "expansion_k", "max_depth", "commit_every"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name), "or None")
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or self.lam < 0:
            raise ValueError(f"lam must be a number >= 0, got {self.lam!r}.")
        for name, value, allowed in (
            ("widening", self.widening, WIDENING_MODES),
            ("select", self.select, SELECT_MODES),
            ("unexplored_prior", self.unexplored_prior, UNEXPLORED_PRIORS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}.")
        if self.widening in ("fixed", "visits") and self.expansion_k is None:
            raise ValueError(
                f"widening={self.widening!r} gives every node up to expansion_k children, so it needs expansion_k "
                "(e.g. expansion_k=3, max_depth=5); got expansion_k=None."
            )
        if self.widening == "visits" and (self.widening_alpha is None or not self.widening_alpha > 0):
            raise ValueError(f"widening='visits' needs widening_alpha > 0 (e.g. 0.5), got {self.widening_alpha!r}.")
        if not isinstance(self.min_branch_mass, (int, float)) or not 0.0 <= self.min_branch_mass < 1.0:
            raise ValueError(f"min_branch_mass must be in [0, 1), got {self.min_branch_mass!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> MaxEntTSConfig:
        """Build from a dict (e.g. ``to_dict()``'s, or a result file's), ``overrides`` on top; unknown keys are an
        error that names them."""
        merged = {**dict(data), **overrides}
        unknown = sorted(set(merged) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"Unknown MaxEnt-TS settings {unknown}; the settings are {', '.join(cls.field_names())}.")
        return cls(**merged)

    @classmethod
    def coerce(cls, config: Any) -> MaxEntTSConfig:
        """``None`` (the defaults), a dict, or a config: this class's or one loaded with the ``custom_generate`` code
        from another copy (anything with ``to_dict()``). Always a new object, so the caller's is never modified."""
        if config is None:
            return cls()
        if isinstance(config, Mapping):
            return cls.from_dict(config)
        if hasattr(config, "to_dict"):
            return cls.from_dict(config.to_dict())
        raise TypeError(f"search_config must be a MaxEntTSConfig, a dict or None; got {type(config).__name__}.")

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the given settings that are fields of this config (then validate); return the others, unused."""
        known = {key: value for key, value in kwargs.items() if key in self.field_names()}
        for key, value in known.items():
            setattr(self, key, value)
        self.validate()
        return {key: value for key, value in kwargs.items() if key not in known}


def _check_positive_int(name: str, value: Any, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        suffix = f" {alternative}" if alternative else ""
        raise ValueError(f"{name} must be an int >= 1{suffix}, got {value!r}.")
