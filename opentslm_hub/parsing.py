"""Reading generated text: forecast numbers, the answer after ``Answer:``, an option letter, a label of a label set.

The evaluation (``recipes.evaluation``) and the MaxEnt-TS rewards (``maxent_ts.rewards``) read text through these
functions only, so a reward scores exactly what a metric counts; the data sets (``hub_datasets``) write their answers
in the formats read here (e.g. ``hub_datasets.synthetic.format_forecast``, read back by :func:`parse_forecast`).

Answers follow the metrics of the original OpenTSLM code with its known defects fixed: the ``Answer:`` marker is
found with or without the space and in any case, an empty or truncated option (``""``, ``"("``) is never an option,
and "non-rem sleep" without a stage number is not read as "rem sleep".

A forecast is the first run of numbers joined by ``,``, ``;`` or new lines after the last ``Forecast:``, read as steps
(``v1,v2;v1,v2;...``; one channel: ``v1, v2, ...``) until a step does not hold one number per channel.

>>> extract_answer("The signal is periodic. Answer: **Running**.")
'running'
>>> parse_option("Answer: (B) downward trend")
'(b)'
>>> parse_forecast("Forecast: 1.0,2.0;3.0,4.0", num_channels=2).tolist()
[[1.0, 2.0], [3.0, 4.0]]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import numpy as np

# ---------------------------------------------------------------------------------------------------------------------
# Special tokens and the answer marker
# ---------------------------------------------------------------------------------------------------------------------
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|]*\|>|</?s>|<eos>|<bos>|<pad>|<unk>|<end_of_turn>|<start_of_turn>", re.I)
_ANSWER_MARKER = re.compile(r"(?<![a-z])answer\s*:", re.IGNORECASE)
_EDGE_CHARACTERS = " \t\r\n*\"'`"
_TRAILING_PUNCTUATION = ".,!?;:"


def strip_special_tokens(text: str) -> str:
    """Remove special-token strings (``<|...|>``, ``<eos>``, ``</s>``, ...) that a decode may leave in the text.

    >>> strip_special_tokens("Answer: lying<|eot_id|><eos>")
    'Answer: lying'
    """
    return _SPECIAL_TOKEN.sub("", text)


def has_answer_marker(text: str) -> bool:
    """Whether ``text`` holds an ``Answer:`` marker (any case, with or without the space).

    >>> has_answer_marker("... answer:walking"), has_answer_marker("the answer is walking")
    (True, False)
    """
    return _ANSWER_MARKER.search(text) is not None


def _after_last(marker: re.Pattern[str], text: str) -> str:
    """The text after the last match of ``marker`` (the whole text without one), special tokens removed."""
    text = strip_special_tokens(text)
    found = list(marker.finditer(text))
    return text[found[-1].end() :] if found else text


def normalize_answer(text: str) -> str:
    """Lower-case, strip whitespace, quotes, markdown emphasis and trailing ``.,!?;:``.

    >>> normalize_answer('  **Walking Up**." ')
    'walking up'
    """
    previous = None
    text = text.lower()
    while text != previous:
        previous = text
        text = text.strip(_EDGE_CHARACTERS).rstrip(_TRAILING_PUNCTUATION)
    return text


def extract_answer(text: str) -> str:
    """The normalised answer of a chain-of-thought output: the first line of text after the LAST ``Answer:``.

    The marker matches with or without the space and in any case (``Answer: x``, ``answer:x``). Without a marker
    the text is read from its start, as the original OpenTSLM evaluation did. Special tokens are removed, then the
    text is normalised (:func:`normalize_answer`). Only the first non-empty line counts, so a model that keeps
    talking after its answer is still read correctly.

    >>> extract_answer("First guess. Answer: running. On reflection... Answer: walking_up\\nI hope this helps.")
    'walking_up'
    >>> extract_answer("walking")
    'walking'
    """
    tail = _after_last(_ANSWER_MARKER, text)
    lines = [line for line in tail.splitlines() if line.strip(_EDGE_CHARACTERS)]
    return normalize_answer(lines[0] if lines else "")


# ---------------------------------------------------------------------------------------------------------------------
# Options and labels
# ---------------------------------------------------------------------------------------------------------------------
_OPTION = re.compile(r"\(\s*([a-z])\s*\)")


def parse_option(text: str, options: Sequence[str] | None = None) -> str:
    """The option letter of a multiple-choice output as ``(x)``, or ``""`` when there is none.

    Read from the text after the last ``Answer:`` (the whole text without one): the first ``(x)``; else a leading
    ``x)`` or a lone letter; else the option whose text the answer equals (``options`` in letter order). An empty or
    truncated output (``""``, ``"("``) has no letter and is never counted as correct (the original OpenTSLM code
    counted any prefix of the gold option, the empty text included, as correct).

    >>> parse_option("Answer: (C)"), parse_option("b) downward"), parse_option("no trend", ["upward", "no trend"])
    ('(c)', '(b)', '(b)')
    >>> parse_option("(")
    ''
    """
    tail = _after_last(_ANSWER_MARKER, text)
    found = _OPTION.search(tail.lower())
    if found:
        return f"({found.group(1)})"
    answer = normalize_answer(tail)
    leading = re.match(r"([a-z])\)", answer) or re.fullmatch(r"([a-z])", answer)
    if leading:
        return f"({leading.group(1)})"
    for index, option in enumerate(options or ()):
        if answer and answer == normalize_answer(option):
            return f"({chr(ord('a') + index)})"
    return ""


def _label_key(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label).strip()


def match_label(answer: str, labels: Iterable[str]) -> str:
    """``answer`` itself when it is in ``labels``, else the label it equals up to spaces, ``_`` and ``-``, else
    ``answer`` unchanged (out of vocabulary).

    >>> match_label("walking up", ["walking", "walking_up"]), match_label("jogging", ["walking"])
    ('walking_up', 'jogging')
    """
    labels = list(labels)
    if answer in labels:
        return answer
    by_key = {_label_key(label): label for label in labels}
    return by_key.get(_label_key(answer), answer)


SLEEP_STAGES = ("wake", "non-rem stage 1", "non-rem stage 2", "non-rem stage 3", "rem sleep", "movement")


def canonical_sleep_stage(text: str) -> str:
    """Map the spellings of a sleep stage onto the six lower-cased labels of :data:`SLEEP_STAGES`.

    NREM / non rem / N2 / S2 → ``non-rem stage 2``, stage 4 → stage 3 (R&K to AASM), awake → ``wake``, mt / mov →
    ``movement``, REM → ``rem sleep``. A non-REM answer without a stage number stays ``non-rem`` (out of
    vocabulary); the original OpenTSLM evaluation turned it into ``rem sleep``.

    >>> canonical_sleep_stage("NREM stage 4"), canonical_sleep_stage("Awake"), canonical_sleep_stage("non-rem sleep")
    ('non-rem stage 3', 'wake', 'non-rem')
    """
    text = re.sub(r"[\s_]+", " ", normalize_answer(text))
    text = re.sub(r"\bnon[\s-]*rem|\bn[\s-]?rem", "non-rem", text)
    stage = re.search(r"(?:\bstage\s*|non-rem\s*|\b[sn])([1-4])\b", text)
    if stage:
        return f"non-rem stage {min(int(stage.group(1)), 3)}"
    if "non-rem" in text:
        return "non-rem"
    if re.search(r"\brem\b|^r$", text):
        return "rem sleep"
    if re.search(r"\b(?:a?wake|wakefulness)\b|^w$", text):
        return "wake"
    if re.search(r"\b(?:movement|mov|mt)\b", text):
        return "movement"
    return text


def read_label(
    text: str, labels: Iterable[str] | None = None, *, canonical: Callable[[str], str] = normalize_answer
) -> str:
    """The label a chain-of-thought output gives: :func:`extract_answer`, then ``canonical`` (e.g.
    :func:`canonical_sleep_stage`), then :func:`match_label` against ``labels`` when given.

    >>> read_label("The magnitude is large. Answer: Walking Up.", ["walking", "walking_up"])
    'walking_up'
    >>> read_label("Answer: N2", canonical=canonical_sleep_stage)
    'non-rem stage 2'
    """
    answer = canonical(extract_answer(text))
    return match_label(answer, labels) if labels is not None else answer


# ---------------------------------------------------------------------------------------------------------------------
# Forecasts
# ---------------------------------------------------------------------------------------------------------------------
_NUMBER_PATTERN = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMBER = re.compile(_NUMBER_PATTERN)
_FORECAST_MARKER = re.compile(r"forecast\s*:", re.IGNORECASE)
_FORECAST_SEPARATOR = r"\s*[)\]]?\s*[,;\n]\s*[(\[]?\s*"  # steps may be bracketed: (1,2); (3,4) or [1,2], [3,4]
_FORECAST_RUN = re.compile(rf"{_NUMBER_PATTERN}(?:{_FORECAST_SEPARATOR}{_NUMBER_PATTERN})*")
_STEP_END = re.compile(r"[;\n)\]]")


class ForecastStep(NamedTuple):
    """One step of a written forecast: its text, its numbers, the offset just after its last number in the
    forecast's run of numbers, and whether it holds one finite number per channel."""

    text: str
    numbers: tuple[float, ...]
    end: int
    valid: bool


def _forecast_run(text: str, strict: bool) -> tuple[str, str]:
    """The forecast's run of numbers and separators, and the text after it."""
    body = _after_last(_FORECAST_MARKER, text)
    if strict:
        run = _FORECAST_RUN.match(body, len(body) - len(body.lstrip()))
    else:
        run = _FORECAST_RUN.search(body)
    return (run.group(), body[run.end() :]) if run else ("", "")


def forecast_steps(text: str, num_channels: int = 1, *, strict: bool = False) -> list[ForecastStep]:
    """The steps of a forecast written ``v1,v2;v1,v2;...`` (LLMTime style), valid or not, in order.

    Special tokens are removed and the text after the last ``Forecast:`` (any case) is read. The forecast is the
    first run of numbers joined by ``,``, ``;`` or new lines (with ``strict`` it must start the text): the first
    other character ends it, so prose after the numbers is never read as values. ``;``, new lines and closing
    brackets separate steps (``(1,2); (3,4)`` and ``[1,2], [3,4]`` read as two steps), ``,`` the channels of a step;
    with one channel every number is a step. A step is valid when it holds exactly ``num_channels`` finite numbers.

    >>> [(step.text, step.valid) for step in forecast_steps("1.0,2.0;3.0", num_channels=2)]
    [('1.0,2.0', True), ('3.0', False)]
    """
    if num_channels < 1:
        raise ValueError(f"num_channels={num_channels}; a forecast has at least one channel.")
    run, _ = _forecast_run(text, strict)
    groups: list[list[re.Match[str]]] = []
    previous_end = None
    for number in _NUMBER.finditer(run):
        gap = run[previous_end : number.start()] if previous_end is not None else ";"  # the first number opens a step
        if num_channels == 1 or _STEP_END.search(gap):
            groups.append([])
        groups[-1].append(number)
        previous_end = number.end()
    steps = []
    for numbers in groups:
        values = tuple(float(number.group()) for number in numbers)
        valid = len(values) == num_channels and all(np.isfinite(values))
        steps.append(ForecastStep(run[numbers[0].start() : numbers[-1].end()], values, numbers[-1].end(), valid))
    return steps


def read_forecast(text: str, num_channels: int = 1, horizon: int | None = None, *, strict: bool = False) -> np.ndarray:
    """The forecast written so far: steps × channels, read in order until a step is not valid (see
    :func:`forecast_steps`), cut to ``horizon``. Possibly no step at all (shape ``(0, num_channels)``).

    >>> read_forecast("Here you go: 1, 2.5, -3, and 4 more").ravel().tolist()
    [1.0, 2.5, -3.0]
    >>> read_forecast("1.0,2.0; 3.0,4.0; 5.0", num_channels=2).tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    rows = []
    for step in forecast_steps(text, num_channels, strict=strict):
        if not step.valid or (horizon is not None and len(rows) == horizon):
            break
        rows.append(step.numbers)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), num_channels)


def parse_forecast(
    text: str, num_channels: int = 1, horizon: int | None = None, *, strict: bool = False
) -> np.ndarray | None:
    """A complete forecast (steps × channels): the first ``horizon`` steps of :func:`read_forecast`, or ``None`` when
    fewer can be read (without ``horizon``: ``None`` when no step can be read).

    >>> parse_forecast("0.5;0.7", num_channels=1, horizon=3) is None
    True
    """
    values = read_forecast(text, num_channels, horizon, strict=strict)
    if len(values) == 0 or (horizon is not None and len(values) < horizon):
        return None
    return values


def forecast_is_complete(text: str, horizon: int, num_channels: int = 1, *, strict: bool = False) -> bool:
    """Whether ``text`` already holds ``horizon`` valid steps, the last one finished (something follows its last
    number), so that more text cannot change what :func:`read_forecast` reads.

    >>> forecast_is_complete("1.2, 3.4, 5.6", 3), forecast_is_complete("1.2, 3.4, 5.6,", 3)
    (False, True)
    """
    steps = forecast_steps(text, num_channels, strict=strict)
    valid = next((index for index, step in enumerate(steps) if not step.valid), len(steps))
    if valid != horizon:
        return valid > horizon
    run, after = _forecast_run(text, strict)
    return steps[horizon - 1].end < len(run) or bool(after)


class CaptionFacts(NamedTuple):
    """What a caption says about its series, as far as it can be read (``None``: not stated)."""

    trend: str | None  # "increasing", "decreasing" or "flat"
    mean: float | None
    periodic: bool | None
    period: float | None


_TREND_WORDS = (
    (re.compile(r"\b(?:no (?:clear |overall |obvious )*trend|trendless|flat|stable|stationary)\b", re.I), "flat"),
    (re.compile(r"\b(?:upward|increasing|rising|growing|uptrend)\b", re.I), "increasing"),
    (re.compile(r"\b(?:downward|decreasing|falling|declining|downtrend)\b", re.I), "decreasing"),
)
_MEAN = re.compile(
    rf"\b(?:mean|average)(?: value| level)?(?: of| is| around| about|:|=)?\s*(?:about |around )?({_NUMBER_PATTERN})",
    re.I,
)
_PERIOD = re.compile(
    rf"\b(?:repeats|cycles?|periodic\w*|period)\b[^.]*?\bevery\s+(?:about\s+|roughly\s+)?({_NUMBER_PATTERN})", re.I
)
_NOT_PERIODIC = re.compile(
    r"\bno (?:regular |clear |obvious )*(?:repeating pattern|seasonality|periodicity|cycle)", re.I
)


def read_caption_facts(text: str) -> CaptionFacts:
    """The trend direction, level (mean), and periodicity (and period) a caption states.

    The trend is the first trend statement (a sentence with "trend", or the first direction word); the mean the
    number after "mean"/"average"; periodicity is "repeats ... every N" (period N) or "no regular repeating pattern".

    >>> read_caption_facts("It follows a weak upward trend. A pattern repeats roughly every 12 observations.")
    CaptionFacts(trend='increasing', mean=None, periodic=True, period=12.0)
    >>> read_caption_facts("with a mean of 4.5. It shows no clear overall trend. No regular repeating pattern.")
    CaptionFacts(trend='flat', mean=4.5, periodic=False, period=None)
    """
    text = strip_special_tokens(text)
    sentences = [sentence for sentence in re.split(r"(?<=[.!?])\s+", text) if sentence]
    trend = None
    for sentence in [s for s in sentences if re.search(r"\btrend", s, re.I)] + sentences:
        found = [
            (match.start(), word) for pattern, word in _TREND_WORDS for match in [pattern.search(sentence)] if match
        ]
        if found:
            trend = min(found)[1]
            break
    mean = _MEAN.search(text)
    period = _PERIOD.search(text)
    periodic = True if period else (False if _NOT_PERIODIC.search(text) else None)
    return CaptionFacts(
        trend=trend,
        mean=float(mean.group(1)) if mean else None,
        periodic=periodic,
        period=float(period.group(1)) if period else None,
    )


__all__ = [
    "SLEEP_STAGES",
    "CaptionFacts",
    "ForecastStep",
    "canonical_sleep_stage",
    "extract_answer",
    "forecast_is_complete",
    "forecast_steps",
    "has_answer_marker",
    "match_label",
    "normalize_answer",
    "parse_forecast",
    "parse_option",
    "read_caption_facts",
    "read_forecast",
    "read_label",
    "strip_special_tokens",
]
