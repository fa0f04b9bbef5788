"""From records of the shared schema (`hub_datasets.schema`) to model inputs.

The processor turns text and series into `input_ids` and the series tensors; this module adds what only training
and evaluation need: reading a record, appending the answer, and labels that take the loss on the answer alone.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers.feature_extraction_utils import BatchFeature

from modeling_opentslm import OpenTSLMProcessor

IGNORE_INDEX = -100


def record_inputs(record: Mapping[str, Any], processor: OpenTSLMProcessor) -> dict[str, Any]:
    """One record as the processor's arguments: the prompt with one marker per channel entry (in the processor's
    prompt format), the channels as series, their introducing sentences, and the answer."""
    entries = record["time_series"]
    if isinstance(entries, Mapping):  # column-oriented (datasets' List of dict)
        entries = [dict(zip(entries, values)) for values in zip(*entries.values())]
    return {
        "text": processor.format_prompt(record["pre_prompt"], record["post_prompt"], len(entries)),
        "time_series": [entry["values"] for entry in entries],
        "time_series_text": [entry["text"] for entry in entries],
        "answer": record.get("answer"),
    }


def encode_prompts(processor: OpenTSLMProcessor, records: Sequence[Mapping[str, Any]]) -> BatchFeature:
    """Generation inputs for a batch of records (left-padded prompts, no answers)."""
    prepared = [record_inputs(record, processor) for record in records]
    return processor(
        text=[p["text"] for p in prepared],
        time_series=[p["time_series"] for p in prepared],
        time_series_text=[p["time_series_text"] for p in prepared],
    )


class LossEmphasis:
    """More loss weight on the answer tokens that matter most: every token that overlaps a match of `pattern` in the
    answer weighs `weight` times an ordinary answer token (EOS and the other answer tokens weigh 1).

    A caption's trend is one phrase among some 160 tokens, a rationale's label one word after a paragraph; a
    `pattern` such as `no clear overall trend|(?:upward|downward) trend` or `Answer: \\w+` puts the loss where the
    answer is decided. With `loss_weighting: sample` each sample still counts once: its token weights are normalised
    to sum to one.
    """

    def __init__(self, pattern: str | re.Pattern, weight: float):
        try:
            self.pattern = re.compile(pattern)
        except re.error as error:
            raise ValueError(f"loss emphasis pattern {pattern!r} is not a regular expression: {error}.") from None
        if not (weight > 0 and math.isfinite(weight)):
            raise ValueError(f"loss emphasis weight must be a finite number > 0, got {weight}.")
        self.weight = float(weight)

    def token_weights(self, answer: str, offsets: Sequence[tuple[int, int]]) -> list[float]:
        """One weight per answer token, from the tokens' character `offsets` in `answer`."""
        spans = [match.span() for match in self.pattern.finditer(answer) if match.end() > match.start()]
        return [self.weight if any(s < end and start < e for s, e in spans) else 1.0 for start, end in offsets]

    def __repr__(self) -> str:
        return f"LossEmphasis({self.pattern.pattern!r}, weight={self.weight})"


def answer_sequences(
    processor: OpenTSLMProcessor,
    text: Sequence[str],
    answers: Sequence[str],
    time_series: Sequence[Sequence[Any]] | None = None,
    time_series_text: Sequence[Any] | None = None,
    *,
    max_length: int | None = None,
    emphasis: LossEmphasis | None = None,
) -> tuple[BatchFeature, list[list[int]], list[list[int]], list[list[float]] | None]:
    """Each prompt followed by its answer and EOS, unpadded: the processor's output for the prompts (with the
    series), the token ids of every sample, its labels (-100 except on the answer and its EOS) and, with `emphasis`,
    a loss weight per token (0 on the prompt; see `LossEmphasis`).

    The answer is tokenised on its own, without special tokens, so the prompt's tokens are exactly those the model
    sees at generation time.
    """
    text, answers = list(text), list(answers)
    if len(answers) != len(text):
        raise ValueError(f"Got {len(answers)} answers for {len(text)} prompts; give one answer per prompt.")
    missing = [index for index, answer in enumerate(answers) if not answer]
    if missing:
        raise ValueError(f"Samples at positions {missing} have no answer; training needs one per sample.")
    prompts = processor(
        text=text, time_series=time_series, time_series_text=time_series_text, padding=False, return_tensors=None
    )
    tokenizer = processor.tokenizer
    input_ids, labels, weights = [], [], [] if emphasis is not None else None
    for index, (ids, answer) in enumerate(zip(prompts["input_ids"], answers)):
        encoded = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=emphasis is not None)
        answer_ids = encoded["input_ids"] + [tokenizer.eos_token_id]
        if processor.ts_token_id in answer_ids:
            raise ValueError(f"Sample {index}: the answer contains the placeholder {processor.ts_token!r}.")
        if max_length is not None and len(ids) + len(answer_ids) > max_length:
            raise ValueError(
                f"Sample {index} has {len(ids) + len(answer_ids)} tokens with its answer, more than "
                f"max_length={max_length}; raise max_length or shorten it. Nothing is truncated silently."
            )
        input_ids.append(ids + answer_ids)
        labels.append([IGNORE_INDEX] * len(ids) + answer_ids)
        if weights is not None:
            weights.append([0.0] * len(ids) + emphasis.token_weights(answer, encoded["offset_mapping"]) + [1.0])
    return prompts, input_ids, labels, weights


def encode_with_answers(
    processor: OpenTSLMProcessor,
    text: Sequence[str],
    answers: Sequence[str],
    time_series: Sequence[Sequence[Any]] | None = None,
    time_series_text: Sequence[Any] | None = None,
    *,
    padding_side: str = "left",
    max_length: int | None = None,
    padding_free: bool = False,
    emphasis: LossEmphasis | None = None,
) -> BatchFeature:
    """Prompts followed by their answers and EOS, with `labels` (-100 everywhere except on the answer and its EOS)
    and, with `emphasis`, `loss_weights` of the labels' shape (see `LossEmphasis`); see `answer_sequences`.

    By default the samples are padded to the longest (`padding_side`). With `padding_free=True` they are packed one
    after the other in a single row, without padding: `input_ids` and `labels` are `(1, total_tokens)` and
    `position_ids` restart at 0 with every sample; there is no `attention_mask`, so transformers reads the sample
    boundaries from the positions and keeps attention within each sample (SDPA, eager and flash attention alike).
    Every sample's first label is -100, so no sample learns to predict the next one's first token. The series keep
    their `(batch, max_series, length)` layout either way: their patches fill the placeholders in text order, which
    packing does not change. Samples that all have the same length need no padding and keep one row each: packing
    them would only make attention scan the whole packed row (what a varlen kernel avoids, SDPA and eager do not).
    """
    prompts, input_ids, labels, weights = answer_sequences(
        processor, text, answers, time_series, time_series_text, max_length=max_length, emphasis=emphasis
    )
    per_token = {"labels": (labels, IGNORE_INDEX, np.int64)}
    if weights is not None:
        per_token["loss_weights"] = (weights, 0.0, np.float32)
    if padding_free and len({len(ids) for ids in input_ids}) > 1:
        for target in labels:
            target[0] = IGNORE_INDEX
        data = {
            "input_ids": np.asarray([[token for ids in input_ids for token in ids]], dtype=np.int64),
            "position_ids": np.asarray([[i for ids in input_ids for i in range(len(ids))]], dtype=np.int64),
        }
        for name, (rows, _, dtype) in per_token.items():
            data[name] = np.asarray([[value for row in rows for value in row]], dtype=dtype)
    else:
        data = processor.pad_text(input_ids, padding_side=padding_side)
        longest = data["input_ids"].shape[1]
        for name, (rows, fill, dtype) in per_token.items():
            data[name] = np.full((len(rows), longest), fill, dtype=dtype)
            for row, values in enumerate(rows):
                span = slice(longest - len(values), longest) if padding_side == "left" else slice(0, len(values))
                data[name][row, span] = values
    for name in ("time_series", "time_series_mask"):
        if name in prompts:
            data[name] = np.asarray(prompts[name], dtype=np.float32 if name == "time_series" else np.int64)
    return BatchFeature(data, tensor_type="pt")


class OpenTSLMDataCollator:
    """Turn a list of records into a training batch: prompt, series, answer, and labels on the answer only.

    With `padding_free=True` the batch is packed into one row without padding (see `encode_with_answers`): the same loss
    and gradients as the padded batch, without computing padding. SP models only (Flamingo's cross-attention needs
    one sample per row). With `emphasis` (a `LossEmphasis`) the batch also holds `loss_weights`, which the trainer's
    loss reads and the model never sees.
    """

    def __init__(
        self,
        processor: OpenTSLMProcessor,
        *,
        padding_side: str = "left",
        max_length: int | None = None,
        padding_free: bool = False,
        emphasis: LossEmphasis | None = None,
    ):
        self.processor = processor
        self.padding_side = padding_side
        self.max_length = max_length
        self.padding_free = padding_free
        self.emphasis = emphasis
        if emphasis is not None and not getattr(processor.tokenizer, "is_fast", False):
            raise ValueError(
                "loss_emphasis needs a fast tokenizer (its character offsets place the weights on the answer's tokens); "
                f"{type(processor.tokenizer).__name__} has none."
            )

    def __call__(self, records: list[dict[str, Any]]) -> BatchFeature:
        prepared = [record_inputs(record, self.processor) for record in records]
        missing = [index for index, p in enumerate(prepared) if not p["answer"]]
        if missing:
            ids = [records[index].get("id") for index in missing]
            raise ValueError(f"Records {ids} (positions {missing}) have no answer; training needs one per record.")
        arguments = (
            self.processor,
            [p["text"] for p in prepared],
            [p["answer"] for p in prepared],
            [p["time_series"] for p in prepared],
            [p["time_series_text"] for p in prepared],
        )
        return encode_with_answers(
            *arguments,
            padding_side=self.padding_side,
            max_length=self.max_length,
            padding_free=self.padding_free,
            emphasis=self.emphasis,
        )
