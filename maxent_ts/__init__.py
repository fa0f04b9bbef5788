"""MaxEnt-TS: maximum-entropy tree search at inference time for time-series language models.

    from maxent_ts import maxent_ts_generate, SpectralReward
    reward = SpectralReward(history=history, horizon=6)
    out = maxent_ts_generate(model, inputs, reward, max_new_tokens=40, token_budget=320)

The search itself lives in ``custom_generate/``, the folder transformers loads as a custom generation strategy
(``README.md`` here is its card), so the same code also runs as
``model.generate(**inputs, custom_generate="<this folder or a Hub repo>", trust_remote_code=True, reward=reward)``.
Rewards and the baselines (greedy, beam, nucleus, best-of-N in the same harness) are in this package only.
"""

from pathlib import Path

from .baselines import beam_generate, best_of_n_generate, greedy_generate, nucleus_generate
from .custom_generate.config import MaxEntTSConfig
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
)

#: The folder to pass as ``model.generate(custom_generate=...)`` or to upload as a Hub repo (see ``maxent_ts.hub``).
CUSTOM_GENERATE_FOLDER = str(Path(__file__).resolve().parent)

__all__ = [
    "CUSTOM_GENERATE_FOLDER",
    "AnswerVerifierReward",
    "CachedLM",
    "CallableReward",
    "FeatureConsistencyReward",
    "KVSegment",
    "MaxEntTSConfig",
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
