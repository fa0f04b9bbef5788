"""What the search passes to a reward and how it checks the answer.

    reward(texts: list[str], context: RewardContext) -> list[float]     # one value in [0, 1] per text

``texts`` are the generated continuations (prompt and EOS removed), decoded with the tokenizer given to the search;
``context.token_ids`` holds the same continuations as ids and ``context.extra`` the per-prompt ``reward_context``
dict passed to the search. Ready-made rewards (spectral, feature consistency, answer verifier) are in
``maxent_ts.rewards``; any callable with this signature works.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class RewardContext:
    """What a reward may look at besides the texts."""

    token_ids: list[list[int]]
    prompt_index: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.extra.get(key, default)


class RewardFn(Protocol):
    def __call__(self, texts: list[str], context: RewardContext) -> list[float]: ...


def evaluate_reward(reward: RewardFn, texts: list[str], context: RewardContext) -> list[float]:
    """Call ``reward`` and check it returned one finite value in [0, 1] per text (tiny overshoots are clipped)."""
    values = reward(texts, context)
    values = [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    if len(values) != len(texts):
        raise ValueError(
            f"The reward returned {len(values)} values for {len(texts)} texts; it must return one per text."
        )
    for index, value in enumerate(values):
        if not math.isfinite(value) or value < -1e-6 or value > 1 + 1e-6:
            raise ValueError(
                f"The reward returned {value} for text {index} ({texts[index][:60]!r}); rewards must be finite and in "
                "[0, 1]. Wrap the function with CallableReward(fn, low=..., high=...) to rescale it."
            )
    return [min(1.0, max(0.0, v)) for v in values]
