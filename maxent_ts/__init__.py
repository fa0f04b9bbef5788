"""MaxEnt-TS: maximum-entropy tree search at inference time for time-series language models (SPEC §4).

from maxent_ts import maxent_ts_generate, SpectralReward
out = maxent_ts_generate(model, inputs, SpectralReward(history=h, horizon=16), num_rollouts=16, max_new_tokens=64)
out = model.generate(**inputs, custom_generate=maxent_ts_generate, reward=reward, max_new_tokens=64)
"""

from .baselines import beam_generate, best_of_n_generate, greedy_generate, nucleus_generate
from .harness import SearchOutput, SearchStats
from .kv import CachedLM, KVSegment, split_prompts
from .processors import ValueGuidedLogitsProcessor, proposal_processors
from .rewards import (
    AnswerVerifierReward,
    CallableReward,
    FeatureConsistencyReward,
    RewardContext,
    SpectralReward,
    evaluate_reward,
    forecast_errors,
)
from .search import MaxEntTree, Node, boltzmann_distribution, boltzmann_weights, maxent_ts_generate, soft_value

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
    "proposal_processors",
    "soft_value",
    "split_prompts",
]
