"""Entry point of the MaxEnt-TS custom generation strategy:
``model.generate(..., custom_generate=<folder or Hub repo>, trust_remote_code=True, reward=...)`` calls
:func:`generate` with ``generate``'s own arguments and keywords."""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

from .config import MaxEntTSConfig
from .harness import SearchOutput
from .search import maxent_ts_generate

# Arguments of `generate` that have no meaning for the search: an error when given, so nothing is silently dropped.
_UNSUPPORTED = ("prefix_allowed_tokens_fn", "assistant_model", "streamer", "negative_prompt_ids")


def generate(
    model: torch.nn.Module,
    inputs: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    logits_processor: LogitsProcessorList | None = None,
    stopping_criteria: StoppingCriteriaList | None = None,
    reward: Any = None,
    search_config: MaxEntTSConfig | dict[str, Any] | None = None,
    **kwargs: Any,
) -> SearchOutput:
    """MaxEnt-TS through ``model.generate``: ``reward`` is required; search settings come as ``search_config`` (a
    ``MaxEntTSConfig`` or a dict) or as keywords (``num_rollouts=...``, ``token_budget=...``); everything else is as
    in ``generate`` (``max_new_tokens``, ``temperature``, ``input_ids``, ``attention_mask``, ``time_series``...) plus
    ``tokenizer``, ``reward_context``, ``stop_condition`` and ``seed``. Returns a ``SearchOutput``."""
    given = [name for name in _UNSUPPORTED if kwargs.pop(name, None) is not None]
    kwargs.pop("negative_prompt_attention_mask", None)
    if kwargs.pop("synced_gpus", None):
        given.append("synced_gpus")
    if given:
        raise ValueError(f"MaxEnt-TS does not support {', '.join(given)}; call generate without them.")
    return maxent_ts_generate(
        model,
        inputs,
        reward,
        search_config=search_config,
        generation_config=generation_config,
        logits_processor=logits_processor,
        stopping_criteria=stopping_criteria,
        **kwargs,
    )
