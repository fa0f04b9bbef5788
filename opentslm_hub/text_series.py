"""Time series written as plain text for a text-only LLM, and the compute such a model spends on them.

Two published ways of feeding numbers to an LLM without a time-series encoder:

- **LLMTime** (Gruver et al., 2023): each channel is divided by a scale fitted on the history (a quantile of its
  absolute values), written with a fixed number of decimals and the decimal point dropped, digits optionally
  separated (for tokenizers that merge digits), channels joined by ``,`` and time steps by ``;``:
  ``[[0.734, 1.205], [0.812, 1.1]]`` with scales 1 and precision 2 → ``"73,120;81,110"``.
  :func:`llmtime_decode` inverts it within half a unit of the last digit (times the scale).
- **Two-digit integers** (Boileau et al., 2025): values rescaled linearly to 0–99, rounded, written as two digits
  each, space separated (``"07 42 99"``); :func:`two_digit_decode` inverts it within half a step of the grid.

FLOPs follow the LLMTime study's accounting: a forward pass over T tokens costs ≈ 2·N·T and a training step
≈ 6·N·T (forward plus backward), N the model's parameters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hub_datasets.synthetic import to_two_digit_tokens
from opentslm_hub.parsing import parse_forecast

# The LLMTime study's compute budget, shown as a reference line next to measured runs.
LLMTIME_FLOP_BUDGET = 1e17


@dataclass(frozen=True)
class LLMTimeFormat:
    """How numbers are written: ``precision`` digits kept after the scaled value's decimal point (the point itself is
    dropped), the scale's ``quantile`` of the history's absolute values, and the separators."""

    precision: int = 2
    quantile: float = 0.9
    digit_separator: str = ""  # "" for tokenizers that split digits themselves (SmolLM2, Llama, Qwen); " " for GPT-2
    channel_separator: str = ","
    step_separator: str = ";"

    def __post_init__(self):
        if self.precision < 0:
            raise ValueError(f"precision={self.precision}; it counts decimals, so it must be >= 0.")
        if not 0 < self.quantile <= 1:
            raise ValueError(f"quantile={self.quantile}; it must be in (0, 1].")
        separators = (self.channel_separator, self.step_separator)
        if not all(separators) or self.channel_separator == self.step_separator:
            raise ValueError(f"channel and step separators must be non-empty and differ, got {separators}.")
        if any(char.isdigit() or char == "-" for char in self.digit_separator + "".join(separators)):
            raise ValueError("separators cannot contain digits or '-'; they would be read as numbers.")


def _as_steps(values: Sequence[Sequence[float]] | Sequence[float] | np.ndarray) -> np.ndarray:
    """Steps × channels (a 1-D input is one channel); finite values only."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[0] == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"expected a non-empty finite [steps, channels] array, got shape {array.shape}.")
    return array


def llmtime_scales(
    history: Sequence[Sequence[float]] | np.ndarray, fmt: LLMTimeFormat = LLMTimeFormat()
) -> np.ndarray:
    """One scale per channel: the ``fmt.quantile`` of the history's absolute values (1 for an all-zero channel)."""
    steps = _as_steps(history)
    scales = np.quantile(np.abs(steps), fmt.quantile, axis=0)
    return np.where(scales > 0, scales, 1.0)


def llmtime_encode(
    values: Sequence[Sequence[float]] | np.ndarray,
    scales: Sequence[float] | np.ndarray,
    fmt: LLMTimeFormat = LLMTimeFormat(),
) -> str:
    """``values`` (steps × channels, or 1-D) as LLMTime text with the given per-channel ``scales``."""
    steps = _as_steps(values)
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float64), (steps.shape[1],))
    if not np.all(np.isfinite(scales) & (scales > 0)):
        raise ValueError(f"scales must be finite and > 0, got {scales.tolist()}.")
    integers = np.rint(steps / scales * 10**fmt.precision).astype(np.int64)

    def number(value: int) -> str:
        return ("-" if value < 0 else "") + fmt.digit_separator.join(str(abs(value)))

    return fmt.step_separator.join(fmt.channel_separator.join(number(v) for v in step) for step in integers)


def llmtime_decode(
    text: str,
    scales: Sequence[float] | np.ndarray,
    fmt: LLMTimeFormat = LLMTimeFormat(),
    horizon: int | None = None,
) -> np.ndarray | None:
    """The steps × channels written in ``text`` (the inverse of :func:`llmtime_encode`), or ``None`` when it does not
    hold ``horizon`` complete steps (without ``horizon``: when it holds none). Steps after ``horizon`` are ignored."""
    scales = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    body = text
    if fmt.digit_separator:
        body = re.sub(rf"(?<=\d){re.escape(fmt.digit_separator)}(?=\d)", "", body)
    body = body.replace(fmt.step_separator, ";").replace(fmt.channel_separator, ",")
    integers = parse_forecast(body, num_channels=scales.size, horizon=horizon)
    if integers is None:
        return None
    return integers / 10**fmt.precision * scales


def two_digit_encode(
    values: Sequence[float] | np.ndarray, low: float | None = None, high: float | None = None
) -> tuple[str, float, float]:
    """``values`` rescaled so that ``low`` → 0 and ``high`` → 99 (default: the series' own minimum and maximum),
    rounded and written as two-digit integers; returns the text and the ``low``, ``high`` that invert it."""
    x = _as_steps(values)
    if x.shape[1] != 1:
        raise ValueError(f"two-digit tokens write one channel; got {x.shape[1]} channels.")
    x = x[:, 0]
    low = float(x.min()) if low is None else float(low)
    high = float(x.max()) if high is None else float(high)
    if high < low:
        raise ValueError(f"high={high} is below low={low}.")
    if x.min() < low or x.max() > high:
        raise ValueError(f"values span [{x.min()}, {x.max()}], outside low={low}, high={high}; widen them.")
    grid = np.zeros_like(x) if high == low else np.rint((x - low) / (high - low) * 99)
    return to_two_digit_tokens(grid), low, high


def two_digit_decode(text: str, low: float = 0.0, high: float = 99.0) -> np.ndarray:
    """The values written by :func:`two_digit_encode` (every two-digit group of ``text``), mapped back to
    ``[low, high]``. A group that is not exactly two digits is an error, not a value."""
    groups = text.split()
    bad = [group for group in groups if not re.fullmatch(r"\d\d", group)]
    if bad or not groups:
        raise ValueError(f"expected space-separated two-digit integers, found {bad[:3] or 'no values'}.")
    return low + np.array([int(group) for group in groups], dtype=np.float64) / 99 * (high - low)


def forward_flops(num_parameters: int, num_tokens: int) -> float:
    """Forward pass over ``num_tokens`` tokens: 2·N·T (one multiply and one add per parameter and token)."""
    _check_counts(num_parameters, num_tokens)
    return 2.0 * num_parameters * num_tokens


def training_flops(num_parameters: int, num_tokens: int) -> float:
    """Training on ``num_tokens`` tokens: 6·N·T (forward 2·N·T plus backward 4·N·T)."""
    _check_counts(num_parameters, num_tokens)
    return 6.0 * num_parameters * num_tokens


def _check_counts(num_parameters: int, num_tokens: int) -> None:
    if num_parameters < 0 or num_tokens < 0:
        raise ValueError(f"parameter and token counts must be >= 0, got {num_parameters} and {num_tokens}.")


__all__ = [
    "LLMTIME_FLOP_BUDGET",
    "LLMTimeFormat",
    "forward_flops",
    "llmtime_decode",
    "llmtime_encode",
    "llmtime_scales",
    "training_flops",
    "two_digit_decode",
    "two_digit_encode",
]
