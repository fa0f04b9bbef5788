"""MaxEnt-TS: maximum-entropy tree search at inference time for time-series language models.

from maxent_ts import maxent_ts_generate, SpectralReward
out = maxent_ts_generate(model, inputs, SpectralReward(history=h, horizon=16), num_rollouts=16, max_new_tokens=64)
out = model.generate(**inputs, custom_generate=maxent_ts_generate, reward=reward, max_new_tokens=64)
"""

from .baselines import beam_generate, best_of_n_generate, greedy_generate, nucleus_generate
from .custom_generate.harness import SearchOutput, SearchStats
from .custom_generate.kv import CachedLM, KVSegment, split_prompts
from .custom_generate.processors import ValueGuidedLogitsProcessor, proposal_processors
from .custom_generate.reward_protocol import RewardContext, evaluate_reward
from .custom_generate.search import (
    MaxEntTree,
    Node,
    boltzmann_distribution,
    boltzmann_weights,
    maxent_ts_generate,
    soft_value,
)
from .rewards import (
    AnswerVerifierReward,
    CallableReward,
    FeatureConsistencyReward,
    SpectralReward,
    forecast_errors,
    parse_answer,
    parse_forecast,
)

__all__ = [
    "AnswerVerifierReward",
    "CachedLM",
    "CallableReward",
    "FeatureConsistencyReward",
    "KVSegment",
    "MaxEntTree",
    "Node",
    "RewardContext",
    "SearchOutput",
    "SearchStats",
    "SpectralReward",
    "ValueGuidedLogitsProcessor",
    "beam_generate",
    "best_of_n_generate",
    "boltzmann_distribution",
    "boltzmann_weights",
    "evaluate_reward",
    "forecast_errors",
    "greedy_generate",
    "maxent_ts_generate",
    "nucleus_generate",
    "parse_answer",
    "parse_forecast",
    "proposal_processors",
    "soft_value",
    "split_prompts",
]
