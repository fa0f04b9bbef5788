"""Rewards for MaxEnt-TS: small classes with one call signature.

    reward(texts: list[str], context: RewardContext) -> list[float]     # one value in [0, 1] per text

``texts`` are the generated continuations (prompt and EOS removed), decoded with the tokenizer given to the search;
``context.token_ids`` holds the same continuations as ids and ``context.extra`` the per-prompt ``reward_context``
dict passed to the search (e.g. ``{"history": array, "answer": "B"}``). A reward that has its data from its
constructor ignores ``extra``. Any callable with this signature works; :class:`CallableReward` adapts others
(one text at a time, or values on another scale).

The search needs rewards in [0, 1] so that λ has the same meaning for every task; :func:`evaluate_reward` checks it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from opentslm_hub.features import (
    extrema,
    linear_trend,
    position_third,
    seasonality,
    volatility_level,
    volatility_ratio,
)
from opentslm_hub.parsing import forecast_is_complete, normalize_answer, parse_option, read_forecast, read_label

from .custom_generate.reward_protocol import RewardContext


class CallableReward:
    """Adapt a user function: ``fn(text) -> float`` (``per_text=True``) or ``fn(texts, context) -> list[float]``,
    with values on ``[low, high]`` mapped linearly to [0, 1] (and clipped)."""

    def __init__(self, fn: Callable[..., Any], *, per_text: bool = True, low: float = 0.0, high: float = 1.0):
        if not high > low:
            raise ValueError(f"CallableReward needs high > low, got low={low}, high={high}.")
        self.fn, self.per_text, self.low, self.high = fn, per_text, float(low), float(high)

    def __call__(self, texts: list[str], context: RewardContext) -> list[float]:
        raw = [self.fn(text) for text in texts] if self.per_text else list(self.fn(texts, context))
        return [min(1.0, max(0.0, (float(v) - self.low) / (self.high - self.low))) for v in raw]


# --------------------------------------------------------------------------------------------------------------------
# Forecasting: spectral + temporal reward


def _power_on_grid(x: np.ndarray, frequencies: np.ndarray) -> np.ndarray:
    """Periodogram of the demeaned series at fixed frequencies (cycles per step), normalised to sum 1."""
    x = x - x.mean()
    steps = np.arange(x.size)
    power = np.abs(np.exp(-2j * np.pi * np.outer(frequencies, steps)) @ x) ** 2 / x.size
    total = power.sum()
    return power / total if total > 0 else np.full_like(power, 1.0 / power.size)


class SpectralReward:
    """Forecast quality without the answer: does history + forecast keep the history's spectrum and scale?

    ``spectral = exp(-TV / tv_scale)``, TV being the total-variation distance between the normalised Hann-windowed
    power spectra of the history and of history + forecast (its last ``len(history)`` steps, so both windows leak
    alike) on a fixed grid of ``num_frequencies`` frequencies in (0, 0.5] cycles per step.
    ``temporal = sqrt(continuity · scale) · level``: continuity penalises a first step larger than the history's
    90th-percentile step, scale compares the forecast's std with that of the history's last ``horizon`` steps
    (a flat forecast scores ~0), level is the share of forecast values within the history's range widened by 25 %
    each side. Reward = coverage · (w_s · spectral + w_t · temporal), coverage being the share of the ``horizon``
    values present; unparsable text scores 0.

    The forecast is read with :func:`opentslm_hub.parsing.read_forecast` (one channel: numbers separated by commas,
    semicolons or new lines, after a ``Forecast:`` marker if there is one), as the evaluation reads it; ``strict``
    accepts steps that hold nothing but their number.

    The history comes from the constructor or from ``context.extra["history"]``; the numbers the model writes must be
    on the same scale as the history given here.
    """

    def __init__(
        self,
        history: Sequence[float] | np.ndarray | None = None,
        horizon: int | None = None,
        *,
        spectral_weight: float = 0.5,
        temporal_weight: float = 0.5,
        num_frequencies: int = 32,
        tv_scale: float = 0.1,
        strict: bool = False,
    ):
        if spectral_weight < 0 or temporal_weight < 0 or spectral_weight + temporal_weight <= 0:
            raise ValueError(
                f"weights must be >= 0 with a positive sum, got spectral={spectral_weight}, temporal={temporal_weight}."
            )
        total = spectral_weight + temporal_weight
        self.spectral_weight, self.temporal_weight = spectral_weight / total, temporal_weight / total
        self.history = None if history is None else np.asarray(history, dtype=np.float64)
        self.horizon = horizon
        self.frequencies = np.arange(1, num_frequencies + 1) / (2.0 * num_frequencies)
        self.tv_scale = tv_scale
        self.strict = strict

    def forecast(self, text: str, horizon: int | None = None) -> np.ndarray:
        """The values this reward scores: the forecast read from ``text``, at most ``horizon`` of them."""
        horizon = horizon if horizon is not None else self.horizon
        return read_forecast(text, 1, horizon, strict=self.strict).ravel()

    def score(self, text: str, history: np.ndarray, horizon: int | None = None) -> float:
        """Reward of one text; also usable without a search."""
        horizon = horizon if horizon is not None else self.horizon
        f = self.forecast(text, horizon)
        if f.size == 0:
            return 0.0
        h = history
        mean, std = h.mean(), h.std() + 1e-8
        hz, fz = (h - mean) / std, (f - mean) / std
        # Same-length windows (the history, and history + forecast shifted by the forecast's length) leak alike, so
        # a continuation that keeps the history's rhythm leaves the spectrum unchanged.
        shifted = np.concatenate([hz, fz])[-hz.size :]
        tv = 0.5 * np.abs(_power_on_grid(hz, self.frequencies) - _power_on_grid(shifted, self.frequencies)).sum()
        spectral = math.exp(-tv / self.tv_scale)
        steps = np.abs(np.diff(hz))
        big_step = float(np.quantile(steps, 0.9)) + 1e-8
        continuity = math.exp(-max(0.0, abs(fz[0] - hz[-1]) - big_step) / big_step)
        recent = hz[-(horizon or fz.size) :]
        scale = math.exp(-abs(math.log((fz.std() + 1e-3) / (recent.std() + 1e-3))))
        span = hz.max() - hz.min()
        level = float(np.mean((fz >= hz.min() - 0.25 * span) & (fz <= hz.max() + 0.25 * span)))
        temporal = math.sqrt(continuity * scale) * level
        coverage = min(1.0, f.size / horizon) if horizon else 1.0
        return float(coverage * (self.spectral_weight * spectral + self.temporal_weight * temporal))

    def is_complete(self, text: str) -> bool:
        """Whether ``text`` already holds all ``horizon`` numbers, the last one finished (something follows it), so
        that more text cannot change the reward. Pass it as the searches' ``stop_condition``."""
        if self.horizon is None:
            raise ValueError("is_complete needs the horizon: construct SpectralReward(horizon=...).")
        return forecast_is_complete(text, self.horizon, strict=self.strict)

    def __call__(self, texts: list[str], context: RewardContext) -> list[float]:
        history = self.history if self.history is not None else context.get("history")
        if history is None:
            raise ValueError(
                "SpectralReward has no history: pass SpectralReward(history=...) or reward_context={'history': ...}."
            )
        history = np.asarray(history, dtype=np.float64)
        if history.ndim != 1 or history.size < 4:
            raise ValueError(f"history must be a 1-D series of at least 4 values, got shape {history.shape}.")
        horizon = self.horizon if self.horizon is not None else context.get("horizon")
        return [self.score(text, history, horizon) for text in texts]


def forecast_errors(text: str, target: Sequence[float], history: Sequence[float]) -> dict[str, float]:
    """Task metric: MAE and MSE of the parsed forecast against the true continuation. Missing values are filled
    with the last parsed value (or the last history value when nothing parses); ``parsed`` is the share present.
    The forecast is read as :class:`SpectralReward` and the evaluation read it."""
    target = np.asarray(target, dtype=np.float64)
    values = read_forecast(text, 1, len(target)).ravel().tolist()
    fill = values[-1] if values else float(np.asarray(history, dtype=np.float64)[-1])
    forecast = np.asarray(values + [fill] * (len(target) - len(values)), dtype=np.float64)
    error = forecast - target
    return {"mae": float(np.abs(error).mean()), "mse": float((error**2).mean()), "parsed": len(values) / len(target)}


# --------------------------------------------------------------------------------------------------------------------
# Captioning: feature consistency

_NEGATION = re.compile(r"\b(no|not|without|lacks?|lacking|absence of|absent|never|neither|nor)\b(\W+\w+){0,3}\W*$")
_TREND_WORDS = {
    "increasing": r"increas\w*|upward\w*|rising|rises?|rose|grow\w*|climb\w*|ascend\w*|uptrend",
    "decreasing": r"decreas\w*|downward\w*|declin\w*|falling|falls?|fell|drop\w*|descend\w*|downtrend",
    "flat": r"flat|stable|stationary|constant|horizontal|no (?:clear |obvious |significant )?trend",
}
_VOLATILITY_WORDS = {
    "low": r"low (?:volatility|noise|variability)|little (?:noise|variation|fluctuation)|smooth\w*|minimal (?:noise|"
    r"fluctuations?)|calm",
    "high": r"volatil\w*|fluctuat\w*|nois[ey]\w*|erratic|irregular|jagged|spik[ey]\w*|choppy|turbulent",
}
_SEASONAL_WORDS = {
    "no": r"no (?:clear |obvious )?(?:seasonal\w*|periodic\w*|cycl\w*|repeating pattern)|aperiodic|non-?periodic|"
    r"non-?seasonal",
    "yes": r"seasonal\w*|periodic\w*|cycl\w*|oscillat\w*|repeat\w*|recurr\w*|wave\w*|sinusoid\w*",
}
_POSITION_WORDS = {
    "beginning": r"beginning|start\w*|early|first|outset|initial\w*",
    "middle": r"middle|mid\w*|halfway|center|centre",
    "end": r"end\w*|late\w*|last|final\w*",
}
_MAX_WORDS = r"peak\w*|maximum|max|highest|high point|top"
_MIN_WORDS = r"trough\w*|minimum|min|lowest|low point|bottom"


def _claims(text: str, vocabulary: Mapping[str, str]) -> set[str]:
    """Labels whose words occur in ``text`` and are not negated just before; earlier labels mask later overlaps."""
    found, taken = set(), []
    for label, pattern in vocabulary.items():
        for match in re.finditer(rf"\b(?:{pattern})\b", text):
            if any(match.start() < end and start < match.end() for start, end in taken):
                continue
            taken.append((match.start(), match.end()))
            if not _NEGATION.search(text[max(0, match.start() - 40) : match.start()]):
                found.add(label)
    return found


def _claimed_position(text: str, extremum_words: str) -> set[str]:
    """Positions (beginning/middle/end) said near a maximum or minimum word, within a few words after it."""
    positions = set()
    for match in re.finditer(rf"\b(?:{extremum_words})\b", text):
        window = text[match.end() : match.end() + 60]
        for label, pattern in _POSITION_WORDS.items():
            if re.search(rf"\b(?:{pattern})\b", window):
                positions.add(label)
    return positions


def _agreement(claimed: set[str], truth: str | set[str], unclaimed: float) -> float:
    truths = {truth} if isinstance(truth, str) else truth
    if not claimed:
        return unclaimed
    right = len(claimed & truths)
    return right / len(claimed)


class FeatureConsistencyReward:
    """Does a caption say what the series shows? Four aspects, each scored 1 when the claim agrees with the
    feature computed from the series, 0 when it contradicts, ``unclaimed`` when the text says nothing about it:

    - trend direction (``opentslm_hub.features.linear_trend``),
    - volatility (``volatility_ratio`` → low/moderate/high; "moderate" agrees with either claim),
    - seasonality (``seasonality``: a period or none),
    - extrema: where the maximum/minimum lies (beginning/middle/end third).

    The reward is their mean; empty text scores 0. The series comes from the constructor or
    ``context.extra["series"]``.
    """

    def __init__(self, series: Sequence[float] | np.ndarray | None = None, *, unclaimed: float = 0.25):
        self.series = None if series is None else np.asarray(series, dtype=np.float64)
        self.unclaimed = unclaimed

    @staticmethod
    def features(series: np.ndarray) -> dict[str, Any]:
        trend = linear_trend(series)
        level = volatility_level(volatility_ratio(series))
        season = seasonality(series)
        ext = extrema(series)
        return {
            "trend": trend.direction,
            "volatility": {"low", "high"} if level == "moderate" else {level},
            "seasonal": "yes" if season.period is not None else "no",
            "max_position": position_third(ext.max_index, series.size),
            "min_position": position_third(ext.min_index, series.size),
        }

    def aspect_scores(self, text: str, series: np.ndarray) -> dict[str, float]:
        """Per-aspect agreement of one text (the reward is their mean)."""
        truth = self.features(series)
        lowered = text.lower()
        extrema_claims = [
            _agreement(_claimed_position(lowered, words), truth[key], math.nan)
            for words, key in ((_MAX_WORDS, "max_position"), (_MIN_WORDS, "min_position"))
        ]
        said = [value for value in extrema_claims if value == value]
        return {
            "trend": _agreement(_claims(lowered, _TREND_WORDS), truth["trend"], self.unclaimed),
            "volatility": _agreement(_claims(lowered, _VOLATILITY_WORDS), truth["volatility"], self.unclaimed),
            "seasonality": _agreement(_claims(lowered, _SEASONAL_WORDS), truth["seasonal"], self.unclaimed),
            "extrema": sum(said) / len(said) if said else self.unclaimed,
        }

    def score(self, text: str, series: np.ndarray) -> float:
        if not text.strip():
            return 0.0
        scores = self.aspect_scores(text, series)
        return float(sum(scores.values()) / len(scores))

    def __call__(self, texts: list[str], context: RewardContext) -> list[float]:
        series = self.series if self.series is not None else context.get("series")
        if series is None:
            raise ValueError(
                "FeatureConsistencyReward has no series: pass FeatureConsistencyReward(series=...) or "
                "reward_context={'series': ...}."
            )
        series = np.asarray(series, dtype=np.float64)
        return [self.score(text, series) for text in texts]


# --------------------------------------------------------------------------------------------------------------------
# QA / chain of thought: verifier


class AnswerVerifierReward:
    """1 when the answer read from a text is the gold answer, else 0: the sample's accuracy as the evaluation
    (``recipes.evaluation``) counts it, with the same reading (:mod:`opentslm_hub.parsing`).

    - With ``options`` (multiple choice, option texts in letter order): the option letter of
      :func:`~opentslm_hub.parsing.parse_option` against the gold answer's letter (gold ``"(b)"`` or ``"running"``).
    - Otherwise the label of :func:`~opentslm_hub.parsing.read_label`: the first line after the last ``Answer:``,
      through ``canonical`` (:func:`~opentslm_hub.parsing.canonical_sleep_stage` for sleep stages), matched to
      ``labels`` up to spaces, ``_`` and ``-`` when given; the gold answer goes through ``canonical``.

    An empty reading scores 0. The gold answer, options and labels come from the constructor or from
    ``context.extra["answer" | "options" | "labels"]``. ``score_fn(parsed, gold) -> float in [0, 1]`` replaces exact
    matching (e.g. partial credit, numeric tolerance).
    """

    def __init__(
        self,
        answer: str | None = None,
        options: Sequence[str] | None = None,
        score_fn: Callable[[str, str], float] | None = None,
        *,
        labels: Iterable[str] | None = None,
        canonical: Callable[[str], str] = normalize_answer,
    ):
        self.answer, self.options, self.score_fn = answer, options, score_fn
        self.labels = None if labels is None else list(labels)
        self.canonical = canonical

    def read(self, text: str, options: Sequence[str] | None = None, labels: Iterable[str] | None = None) -> str:
        """The answer this reward scores for ``text`` (``""`` when there is none)."""
        if options:
            return parse_option(text, options)
        return read_label(text, labels, canonical=self.canonical)

    def __call__(self, texts: list[str], context: RewardContext) -> list[float]:
        gold = self.answer if self.answer is not None else context.get("answer")
        if gold is None:
            raise ValueError(
                "AnswerVerifierReward has no gold answer: pass AnswerVerifierReward(answer=...) or "
                "reward_context={'answer': ...}."
            )
        options = self.options if self.options is not None else context.get("options")
        labels = self.labels if self.labels is not None else context.get("labels")
        gold = parse_option(str(gold), options) if options else self.canonical(str(gold))
        scores = []
        for text in texts:
            parsed = self.read(text, options, labels)
            if not parsed:
                scores.append(0.0)
            elif self.score_fn is not None:
                scores.append(float(self.score_fn(parsed, gold)))
            else:
                scores.append(1.0 if parsed == gold else 0.0)
        return scores
