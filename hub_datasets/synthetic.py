"""Seeded synthetic offline sets with known ground truth (no download, no raw files).

- :func:`build_tsqa_synthetic`: stage-1-shaped multiple choice (trend, volatility, season, outlier, noise);
- :func:`build_sleep_cot_synthetic`: stage-4-shaped sleep staging of a synthetic 30 s EEG epoch, with rationale;
- :func:`build_ou_annotations`: Ornstein–Uhlenbeck series with a JSON annotation of trend, noise and extrema, in
  the setup of *Towards Interpretable Time Series Foundation Models* (Boileau et al., 2025, arXiv:2507.07439);
- :func:`build_lotka_volterra_forecast`: predator–prey histories and their continuation as text, the numbers
  written out as in LLMTime (Gruver et al., 2023, arXiv:2310.07820).

Every record is generated from ``numpy.random.default_rng([seed, set_key, index, ...])``, so a record does not
depend on how many others are built. Generated series whose computed features disagree with the generating class
are regenerated (next ``attempt``), so every text is true about its series and consistent with its label.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from datasets import DatasetDict
from scipy.integrate import solve_ivp

from opentslm_hub import features as F

from .bundled import (
    CAPTION_POST_PROMPT,
    CAPTION_PRE_PROMPT,
    CAPTIONS_TASK,
    MIN_CAPTION_LENGTH,
    caption_features,
    write_caption,
)
from .common import records_to_dataset, split_like_upstream, stratified_split_like_upstream
from .schema import DEFAULT_SERIES_TEXT, make_record, option_letters, option_listing
from .sleep_cot import LABELS as SLEEP_LABELS
from .sleep_cot import POST_PROMPT as SLEEP_POST_PROMPT
from .sleep_cot import PRE_PROMPT as SLEEP_PRE_PROMPT
from .sleep_cot import SERIES_TEXT as SLEEP_SERIES_TEXT
from .tsqa import SERIES_TEXT as TSQA_SERIES_TEXT

MAX_ATTEMPTS = 200


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _generate_consistent(
    seed: int, keys: Sequence[int], generate: Callable[[np.random.Generator], Any], what: str
) -> Any:
    """Call ``generate(rng)`` with fresh rngs until it returns something other than ``None``."""
    for attempt in range(MAX_ATTEMPTS):
        result = generate(_rng(seed, *keys, attempt))
        if result is not None:
            return result
    raise RuntimeError(
        f"{what}: no series consistent with its class after {MAX_ATTEMPTS} attempts (seed {seed}, keys {keys}); "
        "the generator and the feature thresholds disagree, adjust the generator's parameter ranges."
    )


def _affine(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Random level and scale, so series differ in the mean/std the prompt states (features are invariant)."""
    return rng.uniform(-50.0, 50.0) + rng.uniform(0.5, 20.0) * x


# ====================================================================================================================
# TSQA-like multiple choice (stage 1 shape)

TSQA_SET = "tsqa_synthetic"
TSQA_TASK = "tsqa"
TSQA_LENGTHS = (64, 128, 256, 512)
# feature -> (question, the three options in canonical order)
TSQA_QUESTIONS: dict[str, tuple[str, tuple[str, str, str]]] = {
    "trend": (
        "What is the overall trend of this time series?",
        ("upward trend", "downward trend", "constant trend"),
    ),
    "volatility": (
        "How does the volatility of this time series change over time?",
        ("increased volatility", "decreased volatility", "constant volatility"),
    ),
    "season": (
        "What kind of seasonality does this time series show?",
        ("fixed seasonality", "shifting seasonality", "no seasonality"),
    ),
    "outlier": (
        "Which kind of outlier does this time series contain?",
        ("sudden spike", "level shift", "no outlier"),
    ),
    "noise": (
        "How strong is the noise in this time series compared with its underlying pattern?",
        ("low noise", "moderate noise", "high noise"),
    ),
}
LETTERS = tuple(option_letters(3))
ANSWER_FORMATS = {"letter_first": "{letter} {option}", "option_first": "{option} {letter}"}

# Feature thresholds that decide whether a generated series really shows its class (see _tsqa_check).
VOLATILITY_CHANGE_MIN = 1.8  # noise std ratio second half / first half
VOLATILITY_CONSTANT_MAX = 1.3
SEASON_SAME_PERIOD_TOLERANCE = 0.2
SEASON_SHIFT_MIN_RATIO = 1.5
LEVEL_SHIFT_MIN_NOISE = 4.0
LEVEL_SHIFT_NONE_MAX_NOISE = 2.0
NOISE_RATIO_BOUNDS = {"low noise": (0.0, 0.15), "moderate noise": (0.25, 0.55), "high noise": (0.65, math.inf)}


def _sine(length: int, period: float, phase: float) -> np.ndarray:
    return np.sin(2 * np.pi * np.arange(length) / period + phase)


def _tsqa_series(feature: str, option: str, length: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One series showing ``option`` of ``feature`` (noise std 1 before the affine map) and its parameters."""
    steps = np.linspace(0.0, 1.0, length)
    noise = rng.standard_normal(length)
    phase = rng.uniform(0, 2 * np.pi)
    params: dict[str, Any] = {"length": length}
    if feature == "trend":
        change = {"upward trend": 1, "downward trend": -1, "constant trend": 0}[option] * rng.uniform(5.0, 12.0)
        season_amp, period = rng.uniform(0.0, 1.0), rng.uniform(8, length / 3)
        x = change * steps + season_amp * _sine(length, period, phase) + noise
        params.update(total_change=change, season_amplitude=season_amp, period=period)
    elif feature == "volatility":
        ratio = rng.uniform(3.0, 5.0)
        sigma = {
            "increased volatility": np.linspace(1.0, ratio, length),
            "decreased volatility": np.linspace(ratio, 1.0, length),
            "constant volatility": np.full(length, 1.5),
        }[option]
        period = rng.uniform(length / 4, length / 2)
        x = 3.0 * _sine(length, period, phase) + sigma * noise
        params.update(sigma_start=float(sigma[0]), sigma_end=float(sigma[-1]), period=period)
    elif feature == "season":
        amplitude = rng.uniform(2.5, 4.0)
        if option == "no seasonality":
            x = rng.uniform(-3.0, 3.0) * steps + noise
            params.update(amplitude=0.0)
        else:
            first = rng.uniform(6.0, max(6.5, length / 10))
            second = first if option == "fixed seasonality" else first * rng.uniform(1.8, 2.5)
            if rng.random() < 0.5:
                first, second = second, first
            half = length // 2
            frequency = np.where(np.arange(length) < half, 1.0 / first, 1.0 / second)
            x = amplitude * np.sin(2 * np.pi * np.cumsum(frequency) + phase) + noise
            params.update(amplitude=amplitude, period_first_half=first, period_second_half=second)
    elif feature == "outlier":
        period = rng.uniform(length / 8, length / 3)
        x = 2.0 * _sine(length, period, phase) + noise
        params.update(period=period)
        if option == "sudden spike":
            positions = sorted(rng.choice(np.arange(5, length - 5), size=int(rng.integers(1, 3)), replace=False))
            for position in positions:
                x[position] += rng.choice([-1.0, 1.0]) * rng.uniform(9.0, 14.0)
            params.update(spike_positions=[int(p) for p in positions])
        elif option == "level shift":
            position = int(rng.uniform(0.25, 0.75) * length)
            size = rng.choice([-1.0, 1.0]) * rng.uniform(5.0, 9.0)
            x[position:] += size
            params.update(shift_position=position, shift_size=size)
    elif feature == "noise":
        sigma = {"low noise": (0.03, 0.08), "moderate noise": (0.2, 0.35), "high noise": (0.8, 1.2)}[option]
        sigma = rng.uniform(*sigma)
        period = rng.uniform(max(16.0, length / 8), length / 3)
        x = _sine(length, period, phase) + rng.uniform(-1.0, 1.0) * steps + sigma * noise
        params.update(noise_sigma=sigma, period=period)
    else:
        raise ValueError(f"unknown TSQA feature {feature!r}; expected one of {sorted(TSQA_QUESTIONS)}.")
    return x, params


def tsqa_measure(feature: str, values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """The features that decide ``feature``'s class for a series (computed, never taken from the generator)."""
    x = F.as_series(values, min_length=32)
    half = x.size // 2
    if feature == "trend":
        return F.to_dict(F.linear_trend(x))
    if feature == "volatility":
        return {"noise_ratio_second_to_first_half": F.noise_std(x[half:]) / F.noise_std(x[:half])}
    if feature == "season":
        first, second = F.seasonality(x[:half]), F.seasonality(x[half:])
        return {
            "period_first_half": first.period,
            "period_second_half": second.period,
            "period": F.seasonality(x).period,
        }
    if feature == "outlier":
        shift = F.level_shift(x)
        return {"spikes": F.detect_spikes(x), "shift_index": shift.index, "shift_in_noise": shift.size_in_noise}
    if feature == "noise":
        return {"noise_to_std": F.noise_std(x) / float(x.std())}
    raise ValueError(f"unknown TSQA feature {feature!r}; expected one of {sorted(TSQA_QUESTIONS)}.")


def tsqa_class_from_features(feature: str, measured: dict[str, Any]) -> str | None:
    """The option a series' computed features support, or ``None`` when they are ambiguous."""
    if feature == "trend":
        return {"increasing": "upward trend", "decreasing": "downward trend", "flat": "constant trend"}[
            measured["direction"]
        ]
    if feature == "volatility":
        ratio = measured["noise_ratio_second_to_first_half"]
        if ratio >= VOLATILITY_CHANGE_MIN:
            return "increased volatility"
        if ratio <= 1 / VOLATILITY_CHANGE_MIN:
            return "decreased volatility"
        return "constant volatility" if 1 / VOLATILITY_CONSTANT_MAX <= ratio <= VOLATILITY_CONSTANT_MAX else None
    if feature == "season":
        first, second = measured["period_first_half"], measured["period_second_half"]
        if first is None and second is None and measured["period"] is None:
            return "no seasonality"
        if first is None or second is None:
            return None
        ratio = max(first, second) / min(first, second)
        if ratio <= 1 + SEASON_SAME_PERIOD_TOLERANCE:
            return "fixed seasonality"
        return "shifting seasonality" if ratio >= SEASON_SHIFT_MIN_RATIO else None
    if feature == "outlier":
        spikes, shift = measured["spikes"], measured["shift_in_noise"]
        if spikes and shift < LEVEL_SHIFT_MIN_NOISE:
            return "sudden spike"
        if not spikes and shift >= LEVEL_SHIFT_MIN_NOISE:
            return "level shift"
        return "no outlier" if not spikes and shift <= LEVEL_SHIFT_NONE_MAX_NOISE else None
    if feature == "noise":
        ratio = measured["noise_to_std"]
        return next((name for name, (low, high) in NOISE_RATIO_BOUNDS.items() if low <= ratio < high), None)
    raise ValueError(f"unknown TSQA feature {feature!r}; expected one of {sorted(TSQA_QUESTIONS)}.")


def build_tsqa_synthetic(
    *,
    num_per_class: int = 20,
    seed: int = 42,
    lengths: Sequence[int] = TSQA_LENGTHS,
    answer_format: str = "letter_first",
) -> DatasetDict:
    """Multiple-choice questions about synthetic series: 5 features × 3 classes × ``num_per_class`` records.

    Prompt as upstream TSQA: the question lists the options ``(a)``–``(c)`` (order shuffled per record), the
    series text ends with a period, the post-prompt is ``Predict the <feature> Answer:`` and the answer is the
    correct option, e.g. ``(b) downward trend``. Splits as upstream TSQA: 10 % test (seed 42), then 10 % of all for
    validation (seed 42).

    ``answer_format="option_first"`` writes the answer as the option's text, then its letter (``downward trend
    (b)``): a small model first says what it reads in the series, then looks the letter up in the listing, instead
    of choosing the letter in one token. The letter is still the label, and `parse_option` reads it from either form.
    """
    if answer_format not in ANSWER_FORMATS:
        raise ValueError(f"answer_format={answer_format!r}; expected one of {sorted(ANSWER_FORMATS)}.")
    if num_per_class < 2:
        raise ValueError(f"num_per_class={num_per_class}; need at least 2 so every split can be non-trivial.")
    lengths = tuple(int(length) for length in lengths)
    if not lengths or min(lengths) < 64:
        raise ValueError(f"lengths={lengths}; every length must be at least 64 (two halves of two cycles).")
    records = []
    for feature_index, (feature, (question, options)) in enumerate(TSQA_QUESTIONS.items()):
        for option_index, option in enumerate(options):
            for number in range(num_per_class):
                keys = (1, feature_index, option_index, number)

                def generate(rng: np.random.Generator, feature=feature, option=option, options=options):
                    length = int(rng.choice(lengths))
                    raw, params = _tsqa_series(feature, option, length, rng)
                    values = F.as_stored(_affine(rng, raw))
                    measured = tsqa_measure(feature, values)
                    if tsqa_class_from_features(feature, measured) != option:
                        return None
                    order = rng.permutation(3)
                    return values, params, F.jsonable(measured), [options[i] for i in order]

                values, params, measured, shuffled = _generate_consistent(seed, keys, generate, TSQA_SET)
                letter = LETTERS[shuffled.index(option)]
                records.append(
                    make_record(
                        id=f"{TSQA_SET}-{feature}-{option_index}-{number:04d}",
                        task=TSQA_TASK,
                        pre_prompt=f"{question}\n{option_listing(shuffled)}",
                        time_series=[(TSQA_SERIES_TEXT, values)],
                        post_prompt=f"Predict the {feature} Answer:",
                        answer=ANSWER_FORMATS[answer_format].format(letter=letter, option=option),
                        label=letter,
                        metadata={
                            "source_set": TSQA_SET,
                            "tsqa_task": feature,
                            "options": shuffled,
                            "correct_option": option,
                            "generator": F.jsonable(params),
                            "features": measured,
                        },
                    )
                )
    return split_like_upstream(records_to_dataset(records), test_seed=42, val_seed=42)


# ====================================================================================================================
# Synthetic sleep EEG (stage 4 shape)

SLEEP_SET = "sleep_cot_synthetic"
SLEEP_TASK = "sleep_cot"
SLEEP_FS = 50.0
SLEEP_SAMPLES = 1500  # 30 s at 50 Hz, as upstream asserts
REM_MAX_STD = 12.0  # µV: REM epochs are generated, and checked, to be low-amplitude
N1_MIN_STD = 12.0
MOVEMENT_MIN_PEAK_TO_PEAK = 300.0


def _pink_noise(rng: np.random.Generator, std: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(SLEEP_SAMPLES))
    freqs = np.fft.rfftfreq(SLEEP_SAMPLES, 1.0 / SLEEP_FS)
    spectrum[1:] /= np.sqrt(np.maximum(freqs[1:], 0.5))
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, SLEEP_SAMPLES)
    return x / x.std() * std


def _rhythm(rng: np.random.Generator, low: float, high: float, amplitude: float, wobble: float = 0.3) -> np.ndarray:
    """A rhythm whose frequency wanders inside [low, high] Hz and whose amplitude waxes and wanes."""
    t = np.arange(SLEEP_SAMPLES) / SLEEP_FS
    drift = np.cumsum(rng.standard_normal(SLEEP_SAMPLES))
    drift = drift / (np.abs(drift).max() + 1e-9) * (high - low) / 4
    frequency = np.clip(rng.uniform(low, high) + drift, low, high)
    phase = 2 * np.pi * np.cumsum(frequency) / SLEEP_FS + rng.uniform(0, 2 * np.pi)
    envelope = 1 - wobble + wobble * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 7)))
    return amplitude * envelope * np.sin(phase)


def _window(center_s: float, duration_s: float) -> tuple[int, int]:
    start = int((center_s - duration_s / 2) * SLEEP_FS)
    return max(start, 0), min(start + int(duration_s * SLEEP_FS), SLEEP_SAMPLES)


def _spindle(rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(SLEEP_SAMPLES)
    start, stop = _window(rng.uniform(2, 28), rng.uniform(0.8, 1.6))
    t = np.arange(stop - start) / SLEEP_FS
    x[start:stop] = rng.uniform(25, 40) * np.hanning(stop - start) * np.sin(2 * np.pi * rng.uniform(12, 14) * t)
    return x


def _k_complex(rng: np.random.Generator) -> np.ndarray:
    """A sharp negative half wave (0.3 s) followed by a slower positive one (0.6 s)."""
    x = np.zeros(SLEEP_SAMPLES)
    onset = rng.uniform(2, 27)
    for start_s, duration_s, amplitude in (
        (onset, 0.3, -rng.uniform(70, 110)),
        (onset + 0.3, 0.6, rng.uniform(40, 70)),
    ):
        start = int(start_s * SLEEP_FS)
        width = int(duration_s * SLEEP_FS)
        stop = min(start + width, SLEEP_SAMPLES)
        x[start:stop] += amplitude * np.sin(np.pi * np.arange(stop - start) / width)
    return x


def _sawtooth_burst(rng: np.random.Generator) -> np.ndarray:
    x = np.zeros(SLEEP_SAMPLES)
    start, stop = _window(rng.uniform(2, 28), rng.uniform(1.0, 2.0))
    phase = (rng.uniform(2.0, 3.0) * np.arange(stop - start) / SLEEP_FS) % 1.0
    saw = np.where(phase < 0.8, phase / 0.8, (1 - phase) / 0.2) * 2 - 1
    x[start:stop] = rng.uniform(12, 20) * saw * np.hanning(stop - start) ** 0.3
    return x


def synthetic_sleep_epoch(stage: str, rng: np.random.Generator) -> np.ndarray:
    """A 30 s, 50 Hz EEG-like epoch (µV) with the textbook rhythms of ``stage`` (one of the upstream labels).

    Wake: alpha 8.5–11 Hz + beta; N1: theta with a residual alpha; N2: theta background, spindles (12–14 Hz) and
    K-complexes; N3: high-amplitude 0.7–1.8 Hz delta; REM: low-amplitude theta, sawtooth bursts, some beta;
    Movement: large slow drifts and a broadband EMG-like burst. Background is 1/f noise.
    """
    if stage == "Wake":
        x = _pink_noise(rng, rng.uniform(4, 7)) + _rhythm(rng, 8.5, 11, rng.uniform(20, 35))
        x += _rhythm(rng, 17, 23, rng.uniform(5, 8)) + 2.0 * rng.standard_normal(SLEEP_SAMPLES)
    elif stage == "Non-REM stage 1":
        x = _pink_noise(rng, rng.uniform(9, 13)) + _rhythm(rng, 4.5, 7, rng.uniform(18, 28))
        x += _rhythm(rng, 8.5, 10.5, rng.uniform(3, 7))
    elif stage == "Non-REM stage 2":
        x = _pink_noise(rng, rng.uniform(9, 12)) + _rhythm(rng, 4.5, 7, rng.uniform(12, 20))
        for _ in range(int(rng.integers(1, 4))):
            x += _spindle(rng)
        for _ in range(int(rng.integers(1, 3))):
            x += _k_complex(rng)
    elif stage == "Non-REM stage 3":
        x = _pink_noise(rng, rng.uniform(8, 12)) + _rhythm(rng, 0.7, 1.8, rng.uniform(55, 90), wobble=0.2)
        x += _rhythm(rng, 4, 7, rng.uniform(5, 10))
    elif stage == "REM sleep":
        x = _pink_noise(rng, rng.uniform(4, 6)) + _rhythm(rng, 4.5, 7.5, rng.uniform(7, 12))
        x += _rhythm(rng, 16, 22, rng.uniform(2, 4)) + _rhythm(rng, 8, 9.5, rng.uniform(2, 4))
        for _ in range(int(rng.integers(2, 5))):
            x += _sawtooth_burst(rng)
    elif stage == "Movement":
        x = _pink_noise(rng, rng.uniform(6, 12)) + _rhythm(rng, 0.1, 0.5, rng.uniform(100, 250), wobble=0.5)
        start = int(rng.uniform(0, 20) * SLEEP_FS)
        stop = start + int(rng.uniform(3, 10) * SLEEP_FS)
        x[start:stop] += rng.standard_normal(stop - start) * rng.uniform(40, 80)
    else:
        raise ValueError(f"unknown sleep stage {stage!r}; expected one of {SLEEP_LABELS}.")
    return x


def sleep_stage_supported(stage: str, f: F.SleepEEGFeatures) -> bool:
    """Whether an epoch's computed features show what the rationale for ``stage`` says about them."""
    quiet = f.spindles == 0 and f.k_complexes == 0 and f.slow_wave_fraction < 0.05
    power = f.band_power
    if stage == "Wake":
        return quiet and f.dominant_band == "alpha"
    if stage == "Non-REM stage 1":
        return quiet and f.dominant_band == "theta" and power["alpha"] < power["theta"] and f.std >= N1_MIN_STD
    if stage == "Non-REM stage 2":
        return f.spindles >= 1 and f.k_complexes >= 1 and f.slow_wave_fraction < 0.2
    if stage == "Non-REM stage 3":
        return f.slow_wave_fraction >= 0.2 and f.dominant_band == "delta"
    if stage == "REM sleep":
        return quiet and f.std < REM_MAX_STD and power["theta"] > power["alpha"]
    if stage == "Movement":
        return f.peak_to_peak >= MOVEMENT_MIN_PEAK_TO_PEAK
    raise ValueError(f"unknown sleep stage {stage!r}; expected one of {SLEEP_LABELS}.")


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def sleep_rationale(stage: str, f: F.SleepEEGFeatures) -> str:
    """One paragraph that reads the features and ends with ``Answer: <stage>``; every claim is computed.

    The closing sentence for each stage only names features that :func:`sleep_stage_supported` has checked.
    """
    shares = ", ".join(f"{band} {_percent(share)}" for band, share in f.band_power.items())
    spectrum = f"The 0.5–25 Hz power splits into {shares}, so {f.dominant_band} activity dominates."
    amplitude = (
        f"The 30-second segment has a standard deviation of {f.std:.1f} µV and a peak-to-peak range of "
        f"{f.peak_to_peak:.0f} µV."
    )
    if stage == "Movement":
        body = (
            f"{amplitude} A range this large is far beyond ordinary EEG rhythms and points to artifacts that mask "
            f"the background activity. {spectrum} Large artifacts like these come from body movement rather than "
            "from a particular sleep stage."
        )
        return f"{body} Answer: {stage}"
    spindles = (
        "no spindle-like 11–16 Hz bursts"
        if f.spindles == 0
        else f"{f.spindles} spindle-like 11–16 Hz burst{'s' if f.spindles > 1 else ''}"
    )
    k_complexes = (
        "no K-complex-like waves"
        if f.k_complexes == 0
        else f"{f.k_complexes} K-complex-like sharp biphasic wave{'s' if f.k_complexes > 1 else ''}"
    )
    slow = (
        f"high-amplitude slow waves (at least 75 µV peak to peak) cover {_percent(f.slow_wave_fraction)} of the epoch"
    )
    reading = {
        "Wake": "A dominant alpha rhythm without spindles, K-complexes or slow waves suggests a relaxed but awake "
        "state.",
        "Non-REM stage 1": "Theta activity has replaced the alpha rhythm as the main component while spindles, "
        "K-complexes and slow waves are still absent, which fits light, drowsy sleep.",
        "Non-REM stage 2": "Spindles and K-complexes, with slow waves covering well under a fifth of the epoch, are "
        "the hallmarks of stage 2 sleep.",
        "Non-REM stage 3": "Slow waves covering more than a fifth of the epoch indicate deep slow-wave sleep.",
        "REM sleep": f"Low-amplitude activity (standard deviation below {REM_MAX_STD:.0f} µV) with more theta than "
        "alpha power and without spindles, K-complexes or slow waves fits REM sleep.",
    }[stage]
    return f"{amplitude} {spectrum} I find {spindles} and {k_complexes}, and {slow}. {reading} Answer: {stage}"


def build_sleep_cot_synthetic(
    *, num_per_stage: int = 50, seed: int = 42, stages: Sequence[str] = SLEEP_LABELS
) -> DatasetDict:
    """Synthetic sleep-staging epochs with rationale, in upstream Sleep-CoT's prompt format and stratified split.

    The EEG is synthetic (see :func:`synthetic_sleep_epoch`); labels are the generating stages, and only epochs whose
    computed features support their stage are kept (:func:`sleep_stage_supported`).
    """
    unknown = [stage for stage in stages if stage not in SLEEP_LABELS]
    if unknown:
        raise ValueError(f"stages {unknown} are not upstream sleep labels; choose from {SLEEP_LABELS}.")
    if num_per_stage < 10:
        raise ValueError(f"num_per_stage={num_per_stage}; the stratified 80/10/10 split needs at least 10.")
    records = []
    for stage in stages:
        stage_index = SLEEP_LABELS.index(stage)
        for number in range(num_per_stage):

            def generate(rng: np.random.Generator, stage=stage):
                epoch = F.as_stored(synthetic_sleep_epoch(stage, rng))
                measured = F.sleep_eeg_features(epoch, SLEEP_FS)
                return (epoch, measured) if sleep_stage_supported(stage, measured) else None

            epoch, measured = _generate_consistent(seed, (2, stage_index, number), generate, SLEEP_SET)
            records.append(
                make_record(
                    id=f"{SLEEP_SET}-{stage_index}-{number:04d}",
                    task=SLEEP_TASK,
                    pre_prompt=SLEEP_PRE_PROMPT,
                    time_series=[(SLEEP_SERIES_TEXT, epoch)],
                    post_prompt=SLEEP_POST_PROMPT,
                    answer=sleep_rationale(stage, measured),
                    label=stage,
                    metadata={
                        "source_set": SLEEP_SET,
                        "synthetic": True,
                        "sampling_rate_hz": SLEEP_FS,
                        "unit": "µV",
                        "features": F.to_dict(measured),
                    },
                )
            )
    return stratified_split_like_upstream(records_to_dataset(records))


# ====================================================================================================================
# Ornstein–Uhlenbeck series with JSON annotations (interpretable time-series FMs, Boileau et al., 2025)

OU_SET = "ou_annotations"
OU_TASK = "ou_annotation"
OU_SERIES_TEXT = "This is the time series, it has mean {mean:.4f} and std {std:.4f}:"
OU_PRE_PROMPT = (
    "You are an expert in time series analysis. The following series comes from a mean-reverting stochastic "
    "process; its values are integers between 0 and 99, one per time step."
)
OU_POST_PROMPT = (
    'Describe the series as a JSON object with the keys "trend", "noise" and "extrema", one sentence each.'
)
OU_TRENDS = ("upward", "downward", "none")
OU_NOISE_LEVELS = ("low", "moderate", "high")
# Per-step noise (diffusion std per step, in 0–99 units) per class, and the noise_std bounds that confirm the class.
OU_STEP_NOISE = {"low": (0.6, 1.0), "moderate": (2.0, 2.6), "high": (4.0, 5.0)}
OU_NOISE_BOUNDS = {"low": (0.0, 1.0), "moderate": (1.2, 2.2), "high": (2.6, math.inf)}
OU_TREND_MIN_CHANGE = 15.0  # level change (0–99 units) between the first and last tenth to call a trend
OU_FLAT_MAX_CHANGE = 6.0


def ou_path(rng: np.random.Generator, *, length: int, kappa: float, mu: float, x0: float, sigma: float) -> np.ndarray:
    """Exact discretisation of dX = κ(μ − X)dt + σ dW with dt = 1 step."""
    decay = math.exp(-kappa)
    step_std = sigma * math.sqrt((1 - decay**2) / (2 * kappa))
    x = np.empty(length)
    x[0] = x0
    for i in range(1, length):
        x[i] = mu + (x[i - 1] - mu) * decay + step_std * rng.standard_normal()
    return x


def ou_levels(values: Sequence[float] | np.ndarray, fraction: float = 0.1) -> tuple[float, float]:
    """Mean of the first and of the last ``fraction`` of the series (its start and end level)."""
    x = F.as_series(values, min_length=10)
    count = max(2, int(round(fraction * x.size)))
    return float(x[:count].mean()), float(x[-count:].mean())


def ou_annotation(values: Sequence[float] | np.ndarray) -> tuple[dict[str, str], dict[str, Any]]:
    """The JSON annotation (trend, noise, extrema sentences) and the computed features behind it.

    Trend from the start/end levels (mean of the first/last tenth), noise from :func:`features.noise_std`,
    extrema as first positions (0-based time steps).
    """
    x = F.as_series(values, min_length=20)
    start, end = ou_levels(x)
    change = end - start
    if change >= OU_TREND_MIN_CHANGE:
        trend, trend_text = (
            "upward",
            f"The series shows an upward trend: it starts around {start:.0f} and ends around {end:.0f}.",
        )
    elif change <= -OU_TREND_MIN_CHANGE:
        trend, trend_text = (
            "downward",
            f"The series shows a downward trend: it starts around {start:.0f} and ends around {end:.0f}.",
        )
    elif abs(change) <= OU_FLAT_MAX_CHANGE:
        trend = "none"
        trend_text = f"The series shows no clear trend: it fluctuates around {x.mean():.0f} from start to end."
    else:
        trend, trend_text = "ambiguous", ""
    noise = F.noise_std(x)
    level = next((name for name, (low, high) in OU_NOISE_BOUNDS.items() if low <= noise < high), "ambiguous")
    noise_text = f"The noise level is {level}: values scatter around the local level with a typical deviation of about {noise:.1f}."
    ext = F.extrema(x)
    extrema_text = (
        f"The maximum value {ext.max_value:.0f} is first reached at time step {ext.max_index} and the minimum value "
        f"{ext.min_value:.0f} at time step {ext.min_index}."
    )
    measured = {
        "start_level": start,
        "end_level": end,
        "trend": trend,
        "noise_std": noise,
        "noise_level": level,
        "extrema": F.to_dict(ext),
    }
    return {"trend": trend_text, "noise": noise_text, "extrema": extrema_text}, measured


def to_two_digit_tokens(values: Sequence[float] | np.ndarray) -> str:
    """The seed's integer tokenisation: each value (already 0–99) as two digits, space separated (``"07 42 99"``)."""
    x = F.as_series(values, min_length=1)
    if np.any((x < 0) | (x > 99)) or np.any(x != np.round(x)):
        raise ValueError("values must be integers between 0 and 99; build them with build_ou_annotations.")
    return " ".join(f"{int(v):02d}" for v in x)


def build_ou_annotations(*, num_series: int = 200, length: int = 100, seed: int = 42) -> DatasetDict:
    """OU series on the 0–99 integer scale of Boileau et al. (2025) with JSON annotations computed from them.

    Classes are balanced over trend (upward: x0 well below μ, downward: above, none: x0 ≈ μ) × noise level; a
    series is regenerated when its computed trend or noise level disagrees with its generating class, or when it
    leaves 0–99. Splits: 10 % test (seed 42), 10 % validation (seed 43).
    """
    if num_series < 10:
        raise ValueError(f"num_series={num_series}; need at least 10 for an 80/10/10 split.")
    if length < 20:
        raise ValueError(f"length={length}; OU annotations need at least 20 steps.")
    classes = [(trend, noise) for trend in OU_TRENDS for noise in OU_NOISE_LEVELS]
    records = []
    for number in range(num_series):
        trend, noise_level = classes[number % len(classes)]

        def generate(rng: np.random.Generator, trend=trend, noise_level=noise_level):
            kappa = rng.uniform(0.03, 0.08) * 100 / length
            sigma_step = rng.uniform(*OU_STEP_NOISE[noise_level])
            mu = rng.uniform(25, 75)
            gap = {"upward": 1, "downward": -1, "none": 0}[trend] * rng.uniform(25, 45)
            x0 = mu - gap if trend != "none" else mu + rng.uniform(-2, 2)
            sigma = sigma_step * math.sqrt(2 * kappa / (1 - math.exp(-2 * kappa)))
            path = ou_path(rng, length=length, kappa=kappa, mu=mu, x0=x0, sigma=sigma)
            if path.min() < 0 or path.max() > 99:
                return None
            values = np.round(path)
            annotation, measured = ou_annotation(values)
            if measured["trend"] != trend or measured["noise_level"] != noise_level:
                return None
            params = {"kappa": kappa, "mu": mu, "x0": x0, "sigma": sigma, "dt": 1.0, "step_noise": sigma_step}
            return values, annotation, measured, params

        values, annotation, measured, params = _generate_consistent(seed, (3, number), generate, OU_SET)
        records.append(
            make_record(
                id=f"{OU_SET}-{number:04d}",
                task=OU_TASK,
                pre_prompt=OU_PRE_PROMPT,
                time_series=[(OU_SERIES_TEXT, values)],
                post_prompt=OU_POST_PROMPT,
                answer=json.dumps(annotation),
                label="",
                metadata={
                    "source_set": OU_SET,
                    "synthetic": True,
                    "ou_params": F.jsonable(params),
                    "trend_class": trend,
                    "noise_class": noise_level,
                    "features": F.jsonable(measured),
                },
            )
        )
    return split_like_upstream(records_to_dataset(records))


# ====================================================================================================================
# Lotka–Volterra forecasting (numbers as text, LLMTime-style: Gruver et al., 2023)

LV_SET = "lotka_volterra_forecast"
LV_TASK = "forecast"
LV_CHANNELS = ("prey", "predator")
LV_SERIES_TEXTS = tuple(
    f"This is the {name} population, it has mean {{mean:.4f}} and std {{std:.4f}}:" for name in LV_CHANNELS
)
LV_DECIMALS = 3
LV_PRE_PROMPT = (
    "You are an expert in time series forecasting. The two series below are the prey and predator populations of a "
    "Lotka–Volterra predator–prey system, observed at equal time steps."
)


def lv_post_prompt(horizon: int) -> str:
    return (
        f"Forecast the next {horizon} time steps. Write each step as prey,predator with {LV_DECIMALS} decimals and "
        "separate the steps with semicolons. Forecast:"
    )


def format_forecast(values: Sequence[Sequence[float]] | np.ndarray, decimals: int = LV_DECIMALS) -> str:
    """Steps × channels as text: channels joined by ``,``, steps by ``;`` (LLMTime-style), fixed decimals.

    :func:`opentslm_hub.parsing.parse_forecast` reads it back (as the evaluation reads a generated forecast).
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or not np.all(np.isfinite(array)):
        raise ValueError(f"expected a finite [steps, channels] array, got shape {array.shape}.")
    return ";".join(",".join(f"{v:.{decimals}f}" for v in step) for step in array)


def lotka_volterra(
    *, alpha: float, beta: float, delta: float, gamma: float, x0: float, y0: float, times: np.ndarray
) -> np.ndarray:
    """Prey/predator populations at ``times`` (shape [len(times), 2]) of dx = αx − βxy, dy = δxy − γy."""

    def rhs(_t, state):
        prey, predator = state
        return [alpha * prey - beta * prey * predator, delta * prey * predator - gamma * predator]

    solution = solve_ivp(rhs, (times[0], times[-1]), [x0, y0], t_eval=times, rtol=1e-8, atol=1e-10, method="LSODA")
    if not solution.success:
        raise RuntimeError(f"Lotka–Volterra integration failed: {solution.message}")
    return solution.y.T


def build_lotka_volterra_forecast(
    *,
    num_series: int = 200,
    history: int = 80,
    horizon: int = 20,
    time_step: float = 0.3,
    seed: int = 42,
) -> DatasetDict:
    """Predator–prey forecasting: ``history`` steps of both populations in, the next ``horizon`` steps as text out.

    The answer is :func:`format_forecast` of the true continuation; ``metadata["future"]`` keeps it as float lists
    (one per channel, in channel order), with the ODE parameters. Splits: 10 % test (seed 42), 10 % validation
    (seed 43).
    """
    if num_series < 10:
        raise ValueError(f"num_series={num_series}; need at least 10 for an 80/10/10 split.")
    if history < 8 or horizon < 1:
        raise ValueError(f"history={history}, horizon={horizon}; need history >= 8 and horizon >= 1.")
    times = np.arange(history + horizon) * time_step
    records = []
    for number in range(num_series):
        rng = _rng(seed, 4, number)
        params = {
            "alpha": rng.uniform(0.6, 1.4),
            "beta": rng.uniform(0.3, 0.7),
            "delta": rng.uniform(0.3, 0.7),
            "gamma": rng.uniform(0.6, 1.4),
            "x0": rng.uniform(0.5, 2.5),
            "y0": rng.uniform(0.5, 2.5),
        }
        path = lotka_volterra(**params, times=times)
        past, future = path[:history], path[history:]
        records.append(
            make_record(
                id=f"{LV_SET}-{number:04d}",
                task=LV_TASK,
                pre_prompt=LV_PRE_PROMPT,
                time_series=list(zip(LV_SERIES_TEXTS, past.T)),
                post_prompt=lv_post_prompt(horizon),
                answer=format_forecast(future),
                label="",
                metadata={
                    "source_set": LV_SET,
                    "synthetic": True,
                    "channels": list(LV_CHANNELS),
                    "future": [[float(v) for v in channel] for channel in future.T],
                    "horizon": horizon,
                    "time_step": time_step,
                    "answer_format": f"prey,predator;... with {LV_DECIMALS} decimals",
                    "ode_params": {key: float(value) for key, value in params.items()},
                },
            )
        )
    return split_like_upstream(records_to_dataset(records))


# ====================================================================================================================
# Captions of synthetic series (stage 2 shape, the same captions as captions_bundled)

CAPTIONS_SYNTHETIC_SET = "captions_synthetic"
CAPTION_TRENDS = ("increasing", "decreasing", "flat")
CAPTION_MAX_LENGTH = 114  # the longest captions_bundled window


def synthetic_caption_series(direction: str, length: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A series meant to have the trend ``direction``: AR(1) noise, often a sinusoid, and a straight line whose total
    change is 0.6–6 standard deviations of the rest (0 for ``"flat"``), standardised, then at a random level (its
    mean) and scale (its std), so the mean and std do not depend on the direction. The caller checks the computed
    direction; a long cycle can still look like a trend."""
    if direction not in CAPTION_TRENDS:
        raise ValueError(f"direction={direction!r}; expected one of {CAPTION_TRENDS}.")
    phi = rng.uniform(0.0, 0.9)
    shocks = rng.normal(size=length)
    noise = np.empty(length)
    noise[0] = shocks[0]
    for step in range(1, length):
        noise[step] = phi * noise[step - 1] + shocks[step]
    x = noise / noise.std()
    params: dict[str, Any] = {"ar_phi": phi, "length": length}
    if rng.random() < 0.7:
        # mostly at least 2.5 whole cycles in the window, sometimes 2/3 to 2 cycles of a long one
        period = rng.uniform(4.0, length / 2.5) if rng.random() < 0.75 else rng.uniform(length / 2, 1.5 * length)
        amplitude = rng.uniform(0.5, 4.0)
        x = x + amplitude * _sine(length, period, rng.uniform(0.0, 2 * math.pi))
        params |= {"period": period, "amplitude": amplitude}
    sign = {"increasing": 1.0, "decreasing": -1.0, "flat": 0.0}[direction]
    change = sign * rng.uniform(0.6, 6.0) * x.std()
    x = x + change * np.linspace(0.0, 1.0, length)
    x = (x - x.mean()) / x.std()  # the mean and std the prompt states are level and scale alone, whatever the trend
    scale = 10.0 ** rng.uniform(-1.0, 3.0)
    level = scale * rng.uniform(-2.0, 30.0)
    params |= {"total_change": change, "scale": scale, "level": level}
    return F.as_stored(level + scale * x), params


def build_captions_synthetic(*, num_series: int = 900, seed: int = 42) -> DatasetDict:
    """Synthetic series of 24–114 observations with the captions `captions_bundled` writes, balanced over trend
    direction (increasing, decreasing, flat).

    The real windows of `captions_bundled` come from nine sources, so a caption's trend can be told from the level the
    prompt states; here level, scale, noise, cycles and direction vary independently, so the trend can only be read
    from the series. A series whose computed direction disagrees with its class is regenerated. Splits: 10 % test
    (seed 42), 10 % validation (seed 43).
    """
    if num_series < 10:
        raise ValueError(f"num_series={num_series}; need at least 10 for an 80/10/10 split.")
    records = []
    for number in range(num_series):
        direction = CAPTION_TRENDS[number % len(CAPTION_TRENDS)]

        def generate(rng: np.random.Generator, direction=direction):
            values, params = synthetic_caption_series(
                direction, int(rng.integers(MIN_CAPTION_LENGTH, CAPTION_MAX_LENGTH + 1)), rng
            )
            measured = caption_features(values)
            return (values, params, measured) if measured.trend.direction == direction else None

        values, params, measured = _generate_consistent(seed, (5, number), generate, CAPTIONS_SYNTHETIC_SET)
        records.append(
            make_record(
                id=f"{CAPTIONS_SYNTHETIC_SET}-{number:04d}",
                task=CAPTIONS_TASK,
                pre_prompt=CAPTION_PRE_PROMPT,
                time_series=[(DEFAULT_SERIES_TEXT, values)],
                post_prompt=CAPTION_POST_PROMPT,
                answer=write_caption(measured),
                label="",
                metadata={
                    "source_set": CAPTIONS_SYNTHETIC_SET,
                    "synthetic": True,
                    "trend_class": direction,
                    "generator": F.jsonable(params),
                    "features": F.to_dict(measured),
                },
            )
        )
    return split_like_upstream(records_to_dataset(records))
