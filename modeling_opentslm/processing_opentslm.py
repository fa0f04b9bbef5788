"""Processor for OpenTSLM: turns text plus time series into model inputs.

It owns the text side of the series. For every series it z-normalises the values, writes the sentence that states
the original mean and std (the model sees the scale only there), pads the values to a multiple of the patch size
and writes one placeholder token per patch where the series belongs in the text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

DEFAULT_SERIES_TEXT = "This is the time series, it has mean {mean:.4f} and std {std:.4f}:"
IGNORE_INDEX = -100


class OpenTSLMProcessor(ProcessorMixin):
    r"""
    Constructs an OpenTSLM processor around a tokenizer.

    Args:
        tokenizer: the LLM's tokenizer, holding `ts_token` as a special token (see `from_llm`).
        chat_template (`str`, *optional*): overrides the tokenizer's chat template.
        patch_size (`int`, defaults to 4): samples per encoder patch; must equal the model's.
        max_series_length (`int`, defaults to 4096): longest series accepted (the encoder's `max_patches * patch_size`).
        ts_token (`str`, defaults to `"<ts>"`): the placeholder; in a prompt, one marks where one series goes; in the
            model inputs, one stands for one patch.
        series_text (`str`): default sentence introducing a series, formatted with `mean`, `std` and `channel`.
        normalize_eps (`float`, defaults to 1e-8): added to the std when z-normalising.
    """

    def __init__(
        self,
        tokenizer=None,
        chat_template: str | None = None,
        patch_size: int = 4,
        max_series_length: int = 4096,
        ts_token: str = "<ts>",
        series_text: str = DEFAULT_SERIES_TEXT,
        normalize_eps: float = 1e-8,
        **kwargs,
    ):
        self.patch_size = patch_size
        self.max_series_length = max_series_length
        self.ts_token = ts_token
        self.series_text = series_text
        self.normalize_eps = normalize_eps
        super().__init__(tokenizer, chat_template=chat_template)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token) or build "
                "the processor with OpenTSLMProcessor.from_llm, which does."
            )
        ids = self.tokenizer.encode(ts_token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"The placeholder {ts_token!r} is not a single token of this tokenizer (it encodes to {ids}); add it "
                "with tokenizer.add_special_tokens({'additional_special_tokens': [...]}) or use OpenTSLMProcessor."
                "from_llm."
            )

    @classmethod
    def from_llm(cls, llm_name_or_path: str, *, ts_token: str = "<ts>", **kwargs) -> OpenTSLMProcessor:
        """Load the LLM's tokenizer, add the placeholder token and a pad token if missing, pad on the left."""
        tokenizer_kwargs = {k: kwargs.pop(k) for k in ("revision", "token", "cache_dir") if k in kwargs}
        tokenizer = AutoTokenizer.from_pretrained(llm_name_or_path, **tokenizer_kwargs)
        if ts_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [ts_token]}, replace_extra_special_tokens=False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        return cls(tokenizer=tokenizer, ts_token=ts_token, **kwargs)

    @property
    def ts_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.ts_token)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "time_series", "time_series_mask"]

    # ------------------------------------------------------------------------------------------------------------
    # Series
    # ------------------------------------------------------------------------------------------------------------
    def num_patches(self, length: int) -> int:
        return math.ceil(length / self.patch_size)

    def _as_channels(self, series: Any, where: str) -> np.ndarray:
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

    def normalize(self, values: np.ndarray) -> tuple[np.ndarray, float, float]:
        """z-normalise one channel: `(x - mean) / (std + eps)` with the population std. A constant channel becomes
        zeros (std 0), never NaN."""
        mean = float(values.mean())
        std = float(values.std())
        return (values - mean) / (std + self.normalize_eps), mean, std

    # ------------------------------------------------------------------------------------------------------------
    # Prompts
    # ------------------------------------------------------------------------------------------------------------
    def format_prompt(
        self,
        pre_prompt: str,
        post_prompt: str = "",
        num_series: int = 1,
        *,
        use_chat_template: bool | None = None,
        system_prompt: str | None = None,
    ) -> str:
        """The prompt with one `ts_token` marker per series between `pre_prompt` and `post_prompt`, wrapped in the
        tokenizer's chat template (with the generation prompt) when it has one, unless `use_chat_template=False`."""
        parts = [pre_prompt.strip(), *([self.ts_token] * num_series), post_prompt.strip()]
        content = "\n".join(part for part in parts if part)
        if use_chat_template is None:
            use_chat_template = self.tokenizer.chat_template is not None
        if not use_chat_template:
            return content
        messages = [{"role": "user", "content": content}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prepare_record(self, record: Mapping[str, Any], *, use_chat_template: bool | None = None) -> dict[str, Any]:
        """Turn one record of the shared schema (`hub_datasets.schema`) into the arguments of `__call__`: the text
        with one marker per channel entry, the channels as series and their introducing sentences."""
        entries = record["time_series"]
        if isinstance(entries, Mapping):  # column-oriented (datasets' Sequence of dict)
            entries = [dict(zip(entries, values)) for values in zip(*entries.values())]
        return {
            "text": self.format_prompt(
                record["pre_prompt"], record["post_prompt"], len(entries), use_chat_template=use_chat_template
            ),
            "time_series": [entry["values"] for entry in entries],
            "time_series_text": [entry["text"] for entry in entries],
            "answer": record.get("answer"),
        }

    def encode_records(
        self,
        records: Sequence[Mapping[str, Any]],
        *,
        with_answers: bool = True,
        use_chat_template: bool | None = None,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Batch records for training (`with_answers=True`: labels on the answer only) or for generation."""
        prepared = [self.prepare_record(record, use_chat_template=use_chat_template) for record in records]
        if with_answers:
            missing = [i for i, p in enumerate(prepared) if not p["answer"]]
            if missing:
                raise ValueError(f"Records at positions {missing} have no answer; training needs one per record.")
        return self(
            text=[p["text"] for p in prepared],
            time_series=[p["time_series"] for p in prepared],
            time_series_text=[p["time_series_text"] for p in prepared],
            answers=[p["answer"] for p in prepared] if with_answers else None,
            return_tensors=return_tensors,
        )

    # ------------------------------------------------------------------------------------------------------------
    # Main entry point
    # ------------------------------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | Sequence[str],
        time_series: Any = None,
        time_series_text: Any = None,
        answers: str | Sequence[str] | None = None,
        *,
        padding_side: str = "left",
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            text: one prompt or a batch. Each `ts_token` in a prompt marks where one series goes, in order; a prompt
                without markers gets its series appended at the end.
            time_series: per sample, a list of series; each series a 1-D sequence `(length,)` or a 2-D array
                `(channels, length)` (each channel is introduced and encoded on its own). For a single prompt, a
                single list of series (or one array) is accepted.
            time_series_text: per sample, per series, the sentence introducing it: a template formatted with
                `mean`, `std` (the raw channel's) and `channel`, or for a multi-channel series a list with one
                template per channel. Defaults to `self.series_text`.
            answers: per sample, the target text. When given, the answer tokens and an EOS token follow the
                prompt, and `labels` are returned: -100 everywhere except on the answer and its EOS.
            padding_side: `"left"` (default; right for generation and for training) or `"right"`.
            max_length: if set, a sample longer than this raises an error; nothing is truncated.

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask`, `time_series` `(batch, max_series, length)` (float32,
            z-normalised, zero-padded to a multiple of the patch size), `time_series_mask` (1 where a value is real;
            absent series are all-zero rows), and `labels` when `answers` is given.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not texts:
            raise ValueError("text is empty; give at least one prompt.")
        series_batch = self._batch_series(time_series, len(texts), single)
        texts_batch = self._batch_series_text(time_series_text, series_batch, single)
        if answers is not None:
            answers = [answers] if isinstance(answers, str) else list(answers)
            if len(answers) != len(texts):
                raise ValueError(f"Got {len(answers)} answers for {len(texts)} prompts; give one answer per prompt.")

        rows: list[list[np.ndarray]] = []
        expanded_texts = []
        for index, (prompt, sample_series, sample_texts) in enumerate(zip(texts, series_batch, texts_batch)):
            expansions, channels = [], []
            for k, (series, template) in enumerate(zip(sample_series, sample_texts)):
                values = self._as_channels(series, where=f"Sample {index}, series {k}")
                templates = self._channel_templates(template, values.shape[0], where=f"sample {index}, series {k}")
                pieces = []
                for channel, (raw, channel_template) in enumerate(zip(values, templates)):
                    normalized, mean, std = self.normalize(raw)
                    intro = channel_template.format(mean=mean, std=std, channel=channel)
                    pieces.append(intro + self.ts_token * self.num_patches(raw.shape[0]))
                    channels.append(normalized)
                expansions.append("\n".join(pieces))
            expanded_texts.append(self._insert_series(prompt, expansions, index))
            rows.append(channels)

        input_ids, labels = [], []
        for index, prompt in enumerate(expanded_texts):
            ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
            expected = sum(self.num_patches(len(c)) for c in rows[index])
            found = ids.count(self.ts_token_id)
            if found != expected:
                raise ValueError(
                    f"Sample {index}: the prompt holds {found} placeholder tokens after expansion but its series have "
                    f"{expected} patches. Remove literal {self.ts_token!r} text that is not a series marker."
                )
            target = [IGNORE_INDEX] * len(ids)
            if answers is not None:
                answer_ids = self.tokenizer(answers[index], add_special_tokens=False)["input_ids"]
                answer_ids = answer_ids + [self.tokenizer.eos_token_id]
                if self.ts_token_id in answer_ids:
                    raise ValueError(f"Sample {index}: the answer contains the placeholder {self.ts_token!r}.")
                ids = ids + answer_ids
                target = target + answer_ids
            if max_length is not None and len(ids) > max_length:
                raise ValueError(
                    f"Sample {index} has {len(ids)} tokens, more than max_length={max_length}; raise max_length or "
                    "shorten the prompt or series. Nothing is truncated silently."
                )
            input_ids.append(ids)
            labels.append(target)

        data = self._pad_text(input_ids, labels if answers is not None else None, padding_side)
        data.update(self._pad_series(rows))
        if return_tensors is None:
            data = {key: value.tolist() for key, value in data.items()}
            return BatchFeature(data)
        return BatchFeature(data, tensor_type=return_tensors)

    # ------------------------------------------------------------------------------------------------------------
    # Helpers of __call__
    # ------------------------------------------------------------------------------------------------------------
    def _batch_series(self, time_series: Any, batch_size: int, single: bool) -> list[list[Any]]:
        if time_series is None:
            return [[] for _ in range(batch_size)]
        if single:
            if isinstance(time_series, (np.ndarray, torch.Tensor)) or _is_number_list(time_series):
                time_series = [time_series]
            time_series = [time_series]
        time_series = list(time_series)
        if len(time_series) != batch_size:
            raise ValueError(
                f"Got series for {len(time_series)} samples but {batch_size} prompts; give one list of series per "
                "prompt (an empty list for a prompt without series)."
            )
        batch = []
        for index, sample in enumerate(time_series):
            if isinstance(sample, (np.ndarray, torch.Tensor)) or _is_number_list(sample):
                raise ValueError(
                    f"Sample {index}: time_series must be a list of series per sample, got a bare series; wrap it "
                    "in a list ([series])."
                )
            batch.append(list(sample))
        return batch

    def _batch_series_text(self, time_series_text: Any, series_batch: list[list[Any]], single: bool) -> list[list]:
        if time_series_text is None:
            return [[self.series_text] * len(sample) for sample in series_batch]
        if single:
            time_series_text = [time_series_text]
        time_series_text = [[t] if isinstance(t, str) else list(t) for t in time_series_text]
        if len(time_series_text) != len(series_batch) or any(
            len(t) != len(s) for t, s in zip(time_series_text, series_batch)
        ):
            raise ValueError(
                "time_series_text must give one text (or one list of per-channel texts) per series of each sample; "
                f"got {[len(t) for t in time_series_text]} texts for {[len(s) for s in series_batch]} series."
            )
        return time_series_text

    def _channel_templates(self, template: str | Sequence[str], num_channels: int, where: str) -> list[str]:
        templates = [template] * num_channels if isinstance(template, str) else list(template)
        if len(templates) != num_channels:
            raise ValueError(f"{where}: {len(templates)} texts for {num_channels} channels; give one per channel.")
        return templates

    def _insert_series(self, prompt: str, expansions: list[str], index: int) -> str:
        num_markers = prompt.count(self.ts_token)
        if num_markers == 0:
            return "\n".join([prompt, *expansions]) if expansions else prompt
        if num_markers != len(expansions):
            raise ValueError(
                f"Sample {index}: the text has {num_markers} {self.ts_token!r} markers but {len(expansions)} series "
                "were given; put one marker per series, or none to append the series at the end."
            )
        pieces = prompt.split(self.ts_token)
        out = [pieces[0]]
        for expansion, piece in zip(expansions, pieces[1:]):
            out.extend([expansion, piece])
        return "".join(out)

    def _pad_text(self, input_ids: list[list[int]], labels: list[list[int]] | None, padding_side: str) -> dict:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        longest = max(len(ids) for ids in input_ids)
        pad_id = self.tokenizer.pad_token_id
        ids_out = np.full((len(input_ids), longest), pad_id, dtype=np.int64)
        mask_out = np.zeros((len(input_ids), longest), dtype=np.int64)
        labels_out = np.full((len(input_ids), longest), IGNORE_INDEX, dtype=np.int64)
        for row, ids in enumerate(input_ids):
            span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
            ids_out[row, span] = ids
            mask_out[row, span] = 1
            if labels is not None:
                labels_out[row, span] = labels[row]
        data = {"input_ids": ids_out, "attention_mask": mask_out}
        if labels is not None:
            data["labels"] = labels_out
        return data

    def _pad_series(self, rows: list[list[np.ndarray]]) -> dict:
        max_series = max(len(channels) for channels in rows)
        if max_series == 0:
            return {}
        longest = max(len(c) for channels in rows for c in channels)
        length = self.num_patches(longest) * self.patch_size
        values = np.zeros((len(rows), max_series, length), dtype=np.float32)
        mask = np.zeros((len(rows), max_series, length), dtype=np.int64)
        for row, channels in enumerate(rows):
            for k, channel in enumerate(channels):
                values[row, k, : len(channel)] = channel
                mask[row, k, : len(channel)] = 1
        return {"time_series": values, "time_series_mask": mask}


def _is_number_list(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    )


OpenTSLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["OpenTSLMProcessor"]
