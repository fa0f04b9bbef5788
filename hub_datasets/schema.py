"""The one record schema shared by every curriculum stage and every offline set.

A record is one prompt with its series and its answer. The processor
(`recipes.collator.record_inputs`) turns it into the processor's arguments.

- ``time_series`` holds one entry per *channel*, in prompt order. A 3-axis accelerometer window is three
  entries, a 12-lead ECG twelve. ``values`` are the raw (un-normalised) samples; the processor z-normalises
  them and fills ``{mean}``/``{std}`` in ``text`` (e.g. ``"This is the time series, it has mean {mean:.4f} and
  std {std:.4f}:"``), so the model sees the original scale only through the text, as upstream.
- ``label`` is the class for classification-like tasks (``""`` otherwise).
- ``metadata`` is a JSON object string with task-specific extras (options, frequency, template id...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Features, List, Value

RECORD_FEATURES = Features(
    {
        "id": Value("string"),
        "task": Value("string"),
        "pre_prompt": Value("string"),
        "time_series": List({"text": Value("string"), "values": List(Value("float32"))}),
        "post_prompt": Value("string"),
        "answer": Value("string"),
        "label": Value("string"),
        "metadata": Value("string"),
    }
)

DEFAULT_SERIES_TEXT = "This is the time series, it has mean {mean:.4f} and std {std:.4f}:"


def option_letters(count: int) -> list[str]:
    """The tags of ``count`` multiple-choice options, as TSQA writes them: ``(a)``, ``(b)``, ..."""
    if not 1 <= count <= 26:
        raise ValueError(f"{count} options; a multiple-choice question takes 1 to 26 (letters a to z).")
    return [f"({chr(ord('a') + k)})" for k in range(count)]


def option_listing(options: Sequence[str]) -> str:
    """The options one per line, each after its letter: ``"(a) upward trend\n(b) constant trend"``."""
    return "\n".join(f"{letter} {option}" for letter, option in zip(option_letters(len(options)), options))


def make_record(
    *,
    id: str,
    task: str,
    pre_prompt: str,
    time_series: Sequence[tuple[str, Sequence[float]]],
    post_prompt: str,
    answer: str,
    label: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and validate one record. ``time_series`` is a list of ``(text_template, values)`` per channel."""
    channels = []
    for index, (text, values) in enumerate(time_series):
        values = [float(v) for v in values]
        if not values:
            raise ValueError(f"record {id!r}: channel {index} is empty; every channel needs at least one value.")
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise ValueError(f"record {id!r}: channel {index} has a non-finite value {values[bad]} at step {bad}.")
        channels.append({"text": text, "values": values})
    return {
        "id": str(id),
        "task": task,
        "pre_prompt": pre_prompt.strip(),
        "time_series": channels,
        "post_prompt": post_prompt.strip(),
        "answer": answer.strip(),
        "label": label,
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True),
    }
