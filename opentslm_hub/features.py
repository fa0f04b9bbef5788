"""Features computed from a series, and the words the data sets and the rewards use for them.

Every caption, rationale and annotation of the offline sets (:mod:`hub_datasets.synthetic`,
:mod:`hub_datasets.bundled`) is written from these functions, so the text is true about the series it comes with.
The same functions let a reward (e.g. MaxEnt-TS feature consistency, :mod:`maxent_ts.rewards`) check what a generated
text claims: compute the feature, map it to its word with the ``*_level`` / ``*_direction`` / ``*_band`` /
:func:`position_third` helpers, compare. This module depends on numpy and scipy only, so data, rewards and
evaluation can all use it without importing each other.

All functions take a 1-D sequence of finite floats (lists, numpy arrays) and return plain Python numbers or frozen
dataclasses; none of them mutates its input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any

import numpy as np
from scipy import signal

# Trend: the linear fit must explain this share of the variance and move the level by this many standard deviations
# of the series before a direction is claimed.
TREND_MIN_R2 = 0.1
TREND_MIN_CHANGE_STD = 0.5

# Volatility = std of the step-to-step changes / std of the series (about 1.41 for white noise, near 0 when smooth).
VOLATILITY_LOW = 0.3
VOLATILITY_HIGH = 0.8

# Seasonality: an autocorrelation peak at least this high counts as a repeating pattern.
SEASONALITY_MIN_ACF = 0.3

# Heart rate bands (beats per minute) and the RR-interval coefficient of variation above which a rhythm is irregular.
BRADYCARDIA_BELOW_BPM = 60.0
TACHYCARDIA_ABOVE_BPM = 100.0
IRREGULAR_RR_CV = 0.15

# EEG frequency bands in Hz (sigma is the sleep-spindle band).
EEG_BANDS: dict[str, tuple[float, float]] = {
    "delta": (0.5, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 12.0),
    "sigma": (12.0, 15.0),
    "beta": (15.0, 25.0),
}


def as_series(values: Sequence[float] | np.ndarray, *, min_length: int = 2, name: str = "series") -> np.ndarray:
    """``values`` as a float64 1-D array, or a ``ValueError`` saying what is wrong with it."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} has shape {array.shape}; expected a 1-D series (pass one channel at a time).")
    if array.size < min_length:
        raise ValueError(f"{name} has {array.size} values; this feature needs at least {min_length}.")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name} has a non-finite value {array[bad]} at index {bad}; clean or drop it first.")
    return array


def as_stored(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` rounded to float32, as the record schema stores them (returned as float64).

    Builders compute features from this, so every number a text states is true of the stored series.
    """
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses, numpy scalars/arrays and tuples turned into JSON types, floats to 6 digits."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(f"{float(value):.6g}")
    return value


def to_dict(feature: object) -> dict:
    """A feature dataclass as a JSON-ready dict (floats rounded to 6 significant digits)."""
    if not is_dataclass(feature):
        raise TypeError(f"to_dict expects a feature dataclass, got {type(feature).__name__}; use jsonable() instead.")
    return jsonable(feature)


def format_number(value: float) -> str:
    """A value as captions write it: 4 significant digits, integers above 1000 written in full, no exponent."""
    if not math.isfinite(value):
        raise ValueError(f"cannot format the non-finite value {value}.")
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if value == 0:
        return "0"
    decimals = max(0, 3 - int(math.floor(math.log10(abs(value)))))
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


# --------------------------------------------------------------------------------------------------------------------
# Trend


@dataclass(frozen=True)
class Trend:
    slope: float  # per step
    intercept: float
    r2: float  # share of the variance the straight line explains
    total_change: float  # slope * (n - 1): the fitted change from the first to the last step
    change_in_std: float  # total_change / std of the series
    direction: str  # "increasing" | "decreasing" | "flat"
    strength: str  # "strong" | "moderate" | "weak" | "none"


def linear_trend(values: Sequence[float] | np.ndarray) -> Trend:
    """Least-squares line through the series, its R² and the direction/strength words derived from them."""
    x = as_series(values, min_length=3)
    steps = np.arange(x.size, dtype=np.float64)
    slope, intercept = np.polyfit(steps, x, 1)
    fitted = slope * steps + intercept
    total = float(np.sum((x - x.mean()) ** 2))
    r2 = 0.0 if total == 0 else max(0.0, 1.0 - float(np.sum((x - fitted) ** 2)) / total)
    std = float(x.std())
    total_change = float(slope) * (x.size - 1)
    change_in_std = 0.0 if std == 0 else total_change / std
    return Trend(
        slope=float(slope),
        intercept=float(intercept),
        r2=r2,
        total_change=total_change,
        change_in_std=change_in_std,
        direction=trend_direction(r2, change_in_std),
        strength=trend_strength(r2, change_in_std),
    )


def trend_direction(r2: float, change_in_std: float) -> str:
    """``"increasing"``/``"decreasing"`` when the line explains enough and moves enough, else ``"flat"``."""
    if r2 < TREND_MIN_R2 or abs(change_in_std) < TREND_MIN_CHANGE_STD:
        return "flat"
    return "increasing" if change_in_std > 0 else "decreasing"


def trend_strength(r2: float, change_in_std: float) -> str:
    """How much of the series a straight line explains: strong (R² ≥ 0.7), moderate (≥ 0.3), weak, or none."""
    if trend_direction(r2, change_in_std) == "flat":
        return "none"
    return "strong" if r2 >= 0.7 else "moderate" if r2 >= 0.3 else "weak"


# --------------------------------------------------------------------------------------------------------------------
# Noise and volatility


def noise_std(values: Sequence[float] | np.ndarray, *, window: int = 11, polyorder: int = 3) -> float:
    """Robust estimate of the white-noise std around a smooth signal.

    The residual from a Savitzky–Golay fit (``window``, ``polyorder``) is measured with the MAD and rescaled by
    ``1 / sqrt(1 - h0)`` (``h0``: the filter's centre weight), which makes it unbiased for white noise; smooth
    structure (trends, seasons longer than about ``window`` steps) and isolated spikes barely move it.
    """
    x = as_series(values, min_length=window + 1)
    residual = x - signal.savgol_filter(x, window, polyorder, mode="interp")
    centre = float(signal.savgol_coeffs(window, polyorder)[window // 2])
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return 1.4826 * mad / math.sqrt(1.0 - centre)


def volatility_ratio(values: Sequence[float] | np.ndarray) -> float:
    """Std of the step-to-step changes divided by the std of the series (0 for a constant series)."""
    x = as_series(values, min_length=3)
    std = float(x.std())
    return 0.0 if std == 0 else float(np.diff(x).std()) / std


def volatility_level(ratio: float) -> str:
    """``"low"`` (< 0.3), ``"moderate"`` or ``"high"`` (> 0.8) for a :func:`volatility_ratio`."""
    return "low" if ratio < VOLATILITY_LOW else "high" if ratio > VOLATILITY_HIGH else "moderate"


# --------------------------------------------------------------------------------------------------------------------
# Seasonality and frequency content


def autocorrelation(values: Sequence[float] | np.ndarray, max_lag: int) -> np.ndarray:
    """Sample autocorrelation r(0..max_lag) of the series after removing its least-squares line."""
    x = as_series(values, min_length=3)
    if not 1 <= max_lag < x.size:
        raise ValueError(f"max_lag={max_lag} must be between 1 and len(series) - 1 = {x.size - 1}.")
    steps = np.arange(x.size, dtype=np.float64)
    x = x - np.polyval(np.polyfit(steps, x, 1), steps)
    denominator = float(np.dot(x, x))
    if denominator == 0:
        return np.zeros(max_lag + 1)
    return np.array([1.0] + [float(np.dot(x[:-lag], x[lag:])) / denominator for lag in range(1, max_lag + 1)])


@dataclass(frozen=True)
class Seasonality:
    period: int | None  # steps between repetitions, None when nothing repeats
    acf: float  # autocorrelation at that period (0 when None)


def seasonality(
    values: Sequence[float] | np.ndarray,
    *,
    min_period: int = 2,
    max_period: int | None = None,
    min_acf: float = SEASONALITY_MIN_ACF,
) -> Seasonality:
    """The repeating period of a (linearly detrended) series from its autocorrelation.

    Candidates are local maxima of r(k) for ``min_period <= k <= max_period`` (default: half the length, so at least
    two cycles are seen) that reach ``min_acf``. The shortest candidate within 80 % of the best one wins, so a
    harmonic (2P, 3P) never hides the fundamental P.
    """
    x = as_series(values, min_length=6)
    max_period = x.size // 2 if max_period is None else min(max_period, x.size - 2)
    if max_period < max(min_period, 2):
        return Seasonality(None, 0.0)
    r = autocorrelation(x, max_period + 1)
    peaks = [
        lag
        for lag in range(max(min_period, 2), max_period + 1)
        if r[lag] >= min_acf and r[lag] > r[lag - 1] and r[lag] >= r[lag + 1] and r[1:lag].min() < r[lag] - 0.1
    ]
    if not peaks:
        return Seasonality(None, 0.0)
    best = max(r[lag] for lag in peaks)
    period = next(lag for lag in peaks if r[lag] >= 0.8 * best)
    return Seasonality(int(period), float(r[period]))


@dataclass(frozen=True)
class DominantFrequency:
    frequency: float  # Hz (or cycles per step when fs = 1)
    concentration: float  # share of the (non-DC) power in that single frequency bin


def dominant_frequency(values: Sequence[float] | np.ndarray, fs: float = 1.0) -> DominantFrequency:
    """Strongest non-zero frequency of the periodogram and how concentrated the power is there."""
    x = as_series(values, min_length=4)
    power = np.abs(np.fft.rfft(x - x.mean())) ** 2
    freqs = np.fft.rfftfreq(x.size, d=1.0 / fs)
    total = float(power[1:].sum())
    if total == 0:
        return DominantFrequency(0.0, 0.0)
    index = int(np.argmax(power[1:])) + 1
    return DominantFrequency(float(freqs[index]), float(power[index]) / total)


def band_powers(
    values: Sequence[float] | np.ndarray, fs: float, bands: Mapping[str, tuple[float, float]] = EEG_BANDS
) -> dict[str, float]:
    """Relative Welch power per band (shares of the power summed over ``bands``; they add up to 1)."""
    x = as_series(values, min_length=16)
    freqs, psd = signal.welch(x, fs=fs, nperseg=min(x.size, int(4 * fs)))
    absolute = {name: float(psd[(freqs >= low) & (freqs < high)].sum()) for name, (low, high) in bands.items()}
    total = sum(absolute.values())
    return {name: (power / total if total > 0 else 0.0) for name, power in absolute.items()}


# --------------------------------------------------------------------------------------------------------------------
# Extrema, spikes, level shifts


@dataclass(frozen=True)
class Extrema:
    max_value: float
    max_index: int  # 0-based; the first occurrence
    min_value: float
    min_index: int


def extrema(values: Sequence[float] | np.ndarray) -> Extrema:
    """Maximum and minimum with their (first) 0-based positions."""
    x = as_series(values, min_length=1)
    high, low = int(np.argmax(x)), int(np.argmin(x))
    return Extrema(float(x[high]), high, float(x[low]), low)


def position_third(index: int, length: int) -> str:
    """Which third of a series of ``length`` steps the 0-based ``index`` lies in: ``"beginning"``, ``"middle"`` or
    ``"end"`` (e.g. where an extremum occurs)."""
    position = index / max(length - 1, 1)
    return "beginning" if position < 1 / 3 else "middle" if position < 2 / 3 else "end"


def detect_spikes(values: Sequence[float] | np.ndarray, *, threshold: float = 6.0, window: int = 7) -> list[int]:
    """Positions that stand out of a running median by more than ``threshold`` robust noise stds."""
    x = as_series(values, min_length=window + 2)
    baseline = signal.medfilt(np.pad(x, window // 2, mode="edge"), window)[window // 2 : window // 2 + x.size]
    residual = x - baseline
    scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    if scale == 0:
        return [int(i) for i in np.flatnonzero(residual != 0)]
    return [int(i) for i in np.flatnonzero(np.abs(residual) > threshold * scale)]


@dataclass(frozen=True)
class LevelShift:
    index: int  # first step of the new level
    size: float  # mean after − mean before
    size_in_noise: float  # |size| / robust noise std


def level_shift(values: Sequence[float] | np.ndarray, *, margin: float = 0.1) -> LevelShift:
    """The single change point that best splits the series into two constant levels (least squares).

    Candidates leave ``margin`` of the series on each side. ``size_in_noise`` compares the jump with
    :func:`noise_std`, so a real step stands out (≫ 1) and a trend or noise alone stays small.
    """
    x = as_series(values, min_length=10)
    n = x.size
    low, high = max(2, int(margin * n)), min(n - 2, int((1 - margin) * n))
    cumulative = np.cumsum(x)
    total = cumulative[-1]
    splits = np.arange(low, high)
    left_mean = cumulative[splits - 1] / splits
    right_mean = (total - cumulative[splits - 1]) / (n - splits)
    gain = splits * (n - splits) * (right_mean - left_mean) ** 2
    best = int(np.argmax(gain))
    size = float(right_mean[best] - left_mean[best])
    noise = noise_std(x)
    return LevelShift(int(splits[best]), size, abs(size) / noise if noise > 0 else math.inf)


# --------------------------------------------------------------------------------------------------------------------
# ECG


def detect_r_peaks(ecg: Sequence[float] | np.ndarray, fs: float) -> np.ndarray:
    """0-based sample positions of the R peaks (heartbeats), from ``sleepecg.detect_heartbeats``."""
    from sleepecg import detect_heartbeats

    x = as_series(ecg, min_length=int(2 * fs), name="ECG")
    return np.asarray(detect_heartbeats(x, fs), dtype=np.int64)


@dataclass(frozen=True)
class HeartRate:
    beats: int
    bpm: float  # 60 / mean RR
    rr_mean: float  # seconds
    rr_min: float
    rr_max: float
    rr_cv: float  # std / mean of the RR intervals
    band: str  # "bradycardia" | "normal" | "tachycardia"
    rhythm: str  # "regular" | "irregular"


def heart_rate(r_peaks: Sequence[int] | np.ndarray, fs: float) -> HeartRate:
    """Rate and regularity from R-peak positions (at least 3 peaks, i.e. 2 RR intervals)."""
    peaks = np.asarray(r_peaks, dtype=np.float64)
    if peaks.size < 3:
        raise ValueError(f"got {peaks.size} R peaks; heart rate needs at least 3 (use a longer window).")
    rr = np.diff(peaks) / fs
    if np.any(rr <= 0):
        raise ValueError("R-peak positions must be strictly increasing; sort them and drop duplicates.")
    rr_mean = float(rr.mean())
    bpm = 60.0 / rr_mean
    cv = float(rr.std() / rr_mean)
    return HeartRate(
        beats=int(peaks.size),
        bpm=bpm,
        rr_mean=rr_mean,
        rr_min=float(rr.min()),
        rr_max=float(rr.max()),
        rr_cv=cv,
        band=heart_rate_band(bpm),
        rhythm=rhythm_regularity(cv),
    )


def heart_rate_band(bpm: float) -> str:
    """``"bradycardia"`` (< 60 bpm), ``"normal"`` (60–100) or ``"tachycardia"`` (> 100)."""
    return "bradycardia" if bpm < BRADYCARDIA_BELOW_BPM else "tachycardia" if bpm > TACHYCARDIA_ABOVE_BPM else "normal"


def rhythm_regularity(rr_cv: float) -> str:
    """``"irregular"`` when the RR intervals vary by more than 15 % (coefficient of variation), else ``"regular"``."""
    return "irregular" if rr_cv > IRREGULAR_RR_CV else "regular"


# --------------------------------------------------------------------------------------------------------------------
# Sleep EEG


def _bandpass(x: np.ndarray, fs: float, low: float, high: float, order: int = 4) -> np.ndarray:
    sos = signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")
    return signal.sosfiltfilt(sos, x)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of the runs of True in a boolean array."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def detect_spindles(
    eeg: Sequence[float] | np.ndarray,
    fs: float,
    *,
    band: tuple[float, float] = (11.0, 16.0),
    min_duration: float = 0.5,
    max_duration: float = 3.0,
    threshold: float = 3.0,
    min_amplitude: float = 8.0,
) -> list[tuple[int, int]]:
    """Spindle-like bursts: the 11–16 Hz envelope above ``threshold`` × its median and ``min_amplitude`` (µV).

    Returns (start, stop) sample ranges of bursts lasting ``min_duration``–``max_duration`` seconds.
    """
    x = as_series(eeg, min_length=int(2 * fs), name="EEG")
    envelope = np.abs(signal.hilbert(_bandpass(x, fs, *band)))
    smooth = np.convolve(envelope, np.ones(int(0.1 * fs)) / int(0.1 * fs), mode="same")
    level = max(threshold * float(np.median(smooth)), min_amplitude)
    return [
        (start, stop)
        for start, stop in _runs(smooth > level)
        if min_duration * fs <= stop - start <= max_duration * fs
    ]


def detect_k_complexes(
    eeg: Sequence[float] | np.ndarray, fs: float, *, min_peak_to_peak: float = 75.0, prominence: float = 3.0
) -> list[int]:
    """K-complex-like waves: a sharp negative trough followed within 0.2–1 s by a positive peak.

    In the 0.5–4 Hz band the trough-to-peak swing must reach ``min_peak_to_peak`` µV and the trough must stand
    ``prominence`` times the band's robust std below zero (so continuous slow waves do not count). Returns trough
    positions.
    """
    x = as_series(eeg, min_length=int(2 * fs), name="EEG")
    slow = _bandpass(x, fs, 0.5, 4.0, order=2)
    scale = 1.4826 * float(np.median(np.abs(slow - np.median(slow))))
    troughs, _ = signal.find_peaks(-slow, height=prominence * scale, distance=int(1.0 * fs))
    found = []
    for trough in troughs:
        after = slow[trough + int(0.2 * fs) : trough + int(1.0 * fs)]
        if after.size and after.max() - slow[trough] >= min_peak_to_peak:
            found.append(int(trough))
    return found


def slow_wave_fraction(eeg: Sequence[float] | np.ndarray, fs: float, *, min_peak_to_peak: float = 75.0) -> float:
    """Share of the epoch covered by 0.5–2 Hz waves of at least ``min_peak_to_peak`` µV (the AASM N3 criterion)."""
    x = as_series(eeg, min_length=int(2 * fs), name="EEG")
    envelope = np.abs(signal.hilbert(_bandpass(x, fs, 0.5, 2.0, order=2)))
    return float(np.mean(2.0 * envelope >= min_peak_to_peak))


@dataclass(frozen=True)
class SleepEEGFeatures:
    std: float
    peak_to_peak: float
    band_power: dict[str, float]  # relative, sums to 1
    dominant_band: str
    spindles: int
    k_complexes: int
    slow_wave_fraction: float


def sleep_eeg_features(eeg: Sequence[float] | np.ndarray, fs: float) -> SleepEEGFeatures:
    """The features a sleep-staging rationale talks about, for one EEG epoch in µV."""
    x = as_series(eeg, min_length=int(2 * fs), name="EEG")
    powers = band_powers(x, fs)
    return SleepEEGFeatures(
        std=float(x.std()),
        peak_to_peak=float(np.ptp(x)),
        band_power=powers,
        dominant_band=max(powers, key=powers.get),
        spindles=len(detect_spindles(x, fs)),
        k_complexes=len(detect_k_complexes(x, fs)),
        slow_wave_fraction=slow_wave_fraction(x, fs),
    )
