"""Feature extractor for OpenTSLM: turns raw time series into the encoder's padded, normalised input.

It owns everything numeric about a series: checking it (numbers, finite, not empty, not too long), splitting it into
channels, z-normalising each channel (the statistics are settings, saved with the processor, so a checkpoint trained
with another normalisation is reproduced exactly), padding to a multiple of the patch size and the padding mask. The
processor asks it for the per-channel mean and std, which the prompt states in words.
"""

from __future__ import annotations

from .compat_opentslm import SUPPORTED_TRANSFORMERS  # noqa: F401  first: stops a too-old transformers clearly

# isort: split
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin


class OpenTSLMFeatureExtractor(FeatureExtractionMixin):
    r"""
    Constructs an OpenTSLM feature extractor.

    Every channel of every series becomes one row of `time_series`, z-normalised on its own:
    `(x - mean) / (max(std, std_floor) + std_epsilon)`, with `std` computed with `std_ddof` degrees of freedom. A channel
    whose std is at most `center_only_below_std` is only centred (divided by 1). The defaults are the population std plus
    1e-8, which turns a constant channel into zeros, never NaN.

    Args:
        patch_size (`int`, defaults to 4): samples per encoder patch; rows are zero-padded to a multiple of it. Must
            equal the model's `encoder_config.patch_size`.
        max_series_length (`int`, defaults to 4096): the longest channel accepted (the encoder's
            `max_patches * patch_size`); longer input is an error, never truncated.
        normalize (`bool`, defaults to `True`): z-normalise each channel. When `False`, values pass through unchanged
            (the stated mean and std are still computed).
        std_ddof (`int`, defaults to 0): delta degrees of freedom of the std (0: population, 1: unbiased).
        std_epsilon (`float`, defaults to 1e-8): added to the std before dividing.
        std_floor (`float`, defaults to 0.0): the std is raised to at least this value before dividing; the raised
            value is also the one the prompt states.
        center_only_below_std (`float`, *optional*): a channel whose std is at most this value is only centred.
        padding_value (`float`, defaults to 0.0): value of padded steps (masked out by `time_series_mask` anyway).
        statistics_dtype (`str`, defaults to `"float64"`): precision of the statistics and the normalisation.
            `"float32"` computes them with torch in float32, as the original OpenTSLM data sets do, so the mean and std
            the prompt states (4 decimals) and the normalised values match theirs exactly.
        pad_within_sample (`bool`, defaults to `False`): the original OpenTSLM layout: every channel of a sample is
            zero-padded to the sample's longest channel (rounded up to the patch size) and the padding counts as data
            (`time_series_mask` 1), so each series of a sample gets the same number of patches, as in the original.
            Only for running converted original checkpoints; new models keep the default.
    """

    model_input_names = ["time_series", "time_series_mask"]

    def __init__(
        self,
        patch_size: int = 4,
        max_series_length: int = 4096,
        normalize: bool = True,
        std_ddof: int = 0,
        std_epsilon: float = 1e-8,
        std_floor: float = 0.0,
        center_only_below_std: float | None = None,
        padding_value: float = 0.0,
        statistics_dtype: str = "float64",
        pad_within_sample: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
        if max_series_length < patch_size:
            raise ValueError(f"max_series_length ({max_series_length}) must be >= patch_size ({patch_size}).")
        if std_ddof not in (0, 1):
            raise ValueError(f"std_ddof must be 0 (population std) or 1 (unbiased std), got {std_ddof}.")
        if std_epsilon < 0 or std_floor < 0:
            raise ValueError(f"std_epsilon and std_floor must be >= 0, got {std_epsilon} and {std_floor}.")
        self.patch_size = patch_size
        self.max_series_length = max_series_length
        self.normalize = normalize
        self.std_ddof = std_ddof
        self.std_epsilon = std_epsilon
        self.std_floor = std_floor
        self.center_only_below_std = center_only_below_std
        self.padding_value = padding_value
        if statistics_dtype not in ("float64", "float32"):
            raise ValueError(f"statistics_dtype must be 'float64' or 'float32', got {statistics_dtype!r}.")
        self.statistics_dtype = statistics_dtype
        self.pad_within_sample = pad_within_sample

    def num_patches(self, length: int) -> int:
        """Patches the encoder makes of a channel of `length` samples (the last one zero-padded)."""
        return math.ceil(length / self.patch_size)

    def to_channels(self, series: Any, where: str = "The series") -> np.ndarray:
        """One series as a float64 array `(channels, length)`, after checking every way it can be wrong."""
        if isinstance(series, torch.Tensor):
            series = series.detach().cpu().numpy()
        try:
            values = np.asarray(series, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"{where} is not numeric or not rectangular ({error}); give a 1-D sequence of numbers or a 2-D "
                "(channels, length) array."
            ) from None
        if values.ndim == 1:
            values = values[None, :]
        if values.ndim != 2:
            raise ValueError(f"{where} has shape {values.shape}; expected 1-D (length,) or 2-D (channels, length).")
        if values.shape[0] == 0 or values.shape[1] == 0:
            raise ValueError(f"{where} is empty (shape {values.shape}); every series needs at least one value.")
        if values.shape[1] > self.max_series_length:
            raise ValueError(
                f"{where} has {values.shape[1]} values, more than max_series_length={self.max_series_length} "
                f"({self.max_series_length // self.patch_size} patches of {self.patch_size}); shorten or downsample "
                "it. Nothing is truncated silently."
            )
        finite = np.isfinite(values)
        if not finite.all():
            channel, step = (int(i[0]) for i in np.nonzero(~finite))
            raise ValueError(
                f"{where} has a non-finite value ({values[channel, step]}) at channel {channel}, step {step}; "
                "remove or impute NaN/inf before processing."
            )
        return values

    def statistics(self, channel: np.ndarray) -> tuple[float, float]:
        """The mean and the std of one channel as the prompt states them (the std after `std_floor`)."""
        if self.statistics_dtype == "float32":
            mean, std, _ = self._statistics_float32(channel)
            return float(mean), float(std)
        mean = float(channel.mean())
        std = float(channel.std(ddof=self.std_ddof)) if channel.shape[-1] > self.std_ddof else 0.0
        return mean, max(std, self.std_floor)

    def normalize_channel(self, channel: np.ndarray) -> tuple[np.ndarray, float, float]:
        """z-normalise one channel; returns the values and the stated mean and std."""
        if self.statistics_dtype == "float32":
            mean, std, values = self._statistics_float32(channel)
            if not self.normalize:
                return channel, float(mean), float(std)
            if self.center_only_below_std is not None and std <= self.center_only_below_std:
                return (values - mean).double().numpy(), float(mean), float(std)
            return ((values - mean) / (std + self.std_epsilon)).double().numpy(), float(mean), float(std)
        mean, std = self.statistics(channel)
        if not self.normalize:
            return channel, mean, std
        if self.center_only_below_std is not None and std <= self.center_only_below_std:
            return channel - mean, mean, std
        return (channel - mean) / (std + self.std_epsilon), mean, std

    def _statistics_float32(self, channel: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values = torch.as_tensor(channel, dtype=torch.float32)
        mean = values.mean()
        std = values.std(correction=self.std_ddof) if len(values) > self.std_ddof else values.new_zeros(())
        return mean, torch.clamp(std, min=self.std_floor), values

    def __call__(
        self,
        time_series: Sequence[Sequence[Any]],
        *,
        return_statistics: bool = False,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            time_series: a batch: per sample, a list of series (an empty list for a sample without series); each
                series a 1-D sequence `(length,)` or a 2-D array `(channels, length)`.
            return_statistics: also return, per row, the stated `time_series_mean` and `time_series_std` (float64)
                and, per series, `time_series_num_channels` (0 for absent series): what the processor writes in the
                prompt. They are not model inputs.
            return_tensors: `"pt"`, `"np"` or `None` (nested lists).

        Returns:
            `BatchFeature` with `time_series` `(batch, max_rows, length)` (float32; the length is the longest channel
            rounded up to a multiple of `patch_size`) and `time_series_mask` (same shape, 1 where a value is real; an
            absent row is all zeros). Empty when no sample has a series.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        if isinstance(time_series, (np.ndarray, torch.Tensor, str)):
            raise ValueError(
                "time_series must be a list with one list of series per sample, got a bare "
                f"{type(time_series).__name__}; wrap it: [[series]]."
            )
        rows, means, stds, num_channels = [], [], [], []
        for index, sample in enumerate(time_series):
            if isinstance(sample, (np.ndarray, torch.Tensor, str)) or _is_number_list(sample):
                raise ValueError(
                    f"Sample {index}: time_series must be a list of series per sample, got a bare series; wrap it "
                    "in a list ([series])."
                )
            sample_rows, sample_means, sample_stds, sample_channels = [], [], [], []
            for k, series in enumerate(sample):
                channels = self.to_channels(series, where=f"Sample {index}, series {k}")
                sample_channels.append(channels.shape[0])
                for channel in channels:
                    normalized, mean, std = self.normalize_channel(channel)
                    sample_rows.append(normalized)
                    sample_means.append(mean)
                    sample_stds.append(std)
            rows.append(sample_rows)
            means.append(sample_means)
            stds.append(sample_stds)
            num_channels.append(sample_channels)

        data = self._pad(rows)
        if return_statistics:
            width = max((len(r) for r in rows), default=0)
            data["time_series_mean"] = _pad_2d(means, width, np.float64)
            data["time_series_std"] = _pad_2d(stds, width, np.float64)
            data["time_series_num_channels"] = _pad_2d(
                num_channels, max((len(c) for c in num_channels), default=0), np.int64
            )
        if return_tensors is None:
            return BatchFeature({key: value.tolist() for key, value in data.items()})
        return BatchFeature(data, tensor_type=return_tensors)

    def _pad(self, rows: list[list[np.ndarray]]) -> dict[str, np.ndarray]:
        max_rows = max((len(r) for r in rows), default=0)
        if max_rows == 0:
            return {}
        longest = max(len(row) for sample in rows for row in sample)
        length = self.num_patches(longest) * self.patch_size
        values = np.full((len(rows), max_rows, length), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(rows), max_rows, length), dtype=np.int64)
        for b, sample in enumerate(rows):
            sample_length = self.num_patches(max((len(row) for row in sample), default=0)) * self.patch_size
            for k, row in enumerate(sample):
                values[b, k, : len(row)] = row
                mask[b, k, : sample_length if self.pad_within_sample else len(row)] = 1
        return {"time_series": values, "time_series_mask": mask}


def _pad_2d(values: list[list[float]], width: int, dtype) -> np.ndarray:
    out = np.zeros((len(values), width), dtype=dtype)
    for row, items in enumerate(values):
        out[row, : len(items)] = items
    return out


def _is_number_list(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    )


OpenTSLMFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = ["OpenTSLMFeatureExtractor"]
