"""Per-step re-weightings that need no lookahead, as transformers `LogitsProcessor`s.

They shape the search's proposal p̃: MaxEnt-TS then targets π*(y) ∝ p̃(y)·exp(λ·r(y)) for that p̃. The same
processors work in plain ``model.generate(logits_processor=...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

ValueFn = Callable[[torch.LongTensor, torch.LongTensor], torch.Tensor]


class ValueGuidedLogitsProcessor(LogitsProcessor):
    """Add ``lam · value_fn(input_ids, candidates)`` to the scores of each row's ``top_m`` candidate tokens.

    ``value_fn`` receives the prefixes ``[batch, length]`` and candidate ids ``[batch, top_m]`` and returns values
    ``[batch, top_m]`` (e.g. a learned value head's estimate of the reward after appending each candidate, in [0, 1]).
    Only the top candidates are scored, so the cost is one value call per step; the rest keep their scores.
    """

    def __init__(self, value_fn: ValueFn, lam: float = 1.0, top_m: int = 16):
        if top_m < 1:
            raise ValueError(f"top_m must be >= 1, got {top_m}.")
        self.value_fn = value_fn
        self.lam = float(lam)
        self.top_m = int(top_m)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        m = min(self.top_m, scores.shape[-1])
        candidates = scores.topk(m, dim=-1).indices
        values = torch.as_tensor(self.value_fn(input_ids, candidates), dtype=scores.dtype, device=scores.device)
        if values.shape != candidates.shape:
            raise ValueError(
                f"value_fn returned shape {tuple(values.shape)}, expected {tuple(candidates.shape)} (one value per "
                "candidate token)."
            )
        return scores.scatter_add(-1, candidates, self.lam * values)


def proposal_processors(
    temperature: float = 1.0,
    top_p: float | None = None,
    top_k: int | None = None,
    extra: Sequence[LogitsProcessor] | None = None,
) -> LogitsProcessorList:
    """The proposal p̃: ``extra`` processors first (e.g. value guidance), then temperature, top-k and nucleus."""
    processors = LogitsProcessorList(list(extra or []))
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k > 0:
        processors.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p))
    return processors
