"""The one reader of generated text (`opentslm_hub.parsing`): answers, option letters, labels and forecasts, and
the check that the MaxEnt-TS rewards and the evaluation's metrics read the same text the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hub_datasets.schema import DEFAULT_SERIES_TEXT, make_record
from hub_datasets.synthetic import build_lotka_volterra_forecast, format_forecast
from maxent_ts import AnswerVerifierReward, RewardContext, SpectralReward, forecast_errors
from opentslm_hub.parsing import (
    canonical_sleep_stage,
    extract_answer,
    forecast_is_complete,
    forecast_steps,
    has_answer_marker,
    match_label,
    parse_forecast,
    parse_option,
    read_forecast,
    read_label,
)
from recipes.evaluation import score_samples


# ---------------------------------------------------------------------------------------------------------------------
# Answers, options and labels
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, answer",
    [
        ("The signal is periodic and strong. Answer: walking", "walking"),
        ("Answer:walking.", "walking"),
        ("answer : Walking!", "walking"),
        ("First guess. Answer: running. On reflection... Answer: walking_up", "walking_up"),
        ("Rationale here. Answer: lying<|eot_id|><|end_of_text|>", "lying"),
        ("Answer: sitting<eos>", "sitting"),
        ("Answer: standing </s>", "standing"),
        ("Answer: **biking**.\n\nI hope this helps.", "biking"),
        ("Answer:\nwalking", "walking"),
        ("walking", "walking"),
        ("The data show no clear pattern", "the data show no clear pattern"),
        ("", ""),
        ("Answer:", ""),
    ],
)
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize(
    "text, stage",
    [
        ("Non-REM stage 2", "non-rem stage 2"),
        ("NREM stage 1", "non-rem stage 1"),
        ("non rem stage 3", "non-rem stage 3"),
        ("Non-REM stage 4", "non-rem stage 3"),
        ("N2", "non-rem stage 2"),
        ("REM sleep", "rem sleep"),
        ("REM", "rem sleep"),
        ("Awake", "wake"),
        ("Wake", "wake"),
        ("MT", "movement"),
        ("mov", "movement"),
        ("Movement", "movement"),
        ("non-rem sleep", "non-rem"),  # no stage number: out of vocabulary (the original code read "rem sleep")
        ("NREM", "non-rem"),
    ],
)
def test_sleep_canonicalisation(text, stage):
    assert canonical_sleep_stage(text) == stage


@pytest.mark.parametrize(
    "text, letter",
    [
        ("(b) downward trend", "(b)"),
        ("Answer: (C)", "(c)"),
        ("b) downward trend", "(b)"),
        ("downward trend", "(b)"),
        ("", ""),
        ("(", ""),
        ("(b", ""),
        ("a downward trend", ""),
    ],
)
def test_parse_option(text, letter):
    assert parse_option(text, ["upward trend", "downward trend", "no trend"]) == letter


def test_options_are_read_as_letters_never_guessed_from_words():
    options = ["walking", "running", "sitting"]
    assert parse_option("Reasoning... Answer: **Running**.", options) == "(b)"
    assert parse_option("so the answer is (b)", options) == "(b)"
    # The answer only mentions an option: out of vocabulary, as accuracy counts it (no guess from its words).
    assert parse_option("answer: I think it's sitting\nmore text", options) == ""
    # Without a marker the text is read from its start (as the original evaluation); it names no option.
    assert not has_answer_marker("no final answer given here") and parse_option("no final answer given here") == ""
    assert parse_option("nothing to see", options) == ""


def test_labels_match_up_to_separators_and_sleep_stages_are_canonical():
    assert match_label("walking up", ["walking", "walking_up"]) == "walking_up"
    assert match_label("jogging", ["walking"]) == "jogging"
    assert read_label("Answer: Walking-Up.", ["walking_up"]) == "walking_up"
    assert read_label("Answer: NREM 2<eos>", canonical=canonical_sleep_stage) == "non-rem stage 2"
    assert read_label("", ["walking"]) == ""


# ---------------------------------------------------------------------------------------------------------------------
# Forecasts
# ---------------------------------------------------------------------------------------------------------------------
def test_forecast_is_the_first_run_of_numbers():
    assert read_forecast("1, 2.5, -3, .5 and 7").ravel().tolist() == [1.0, 2.5, -3.0, 0.5]
    assert parse_forecast("no numbers") is None and parse_forecast("x 1, 2", strict=True) is None
    assert read_forecast("Sure! Forecast: 1e2, 2;3\n4<|im_end|>").ravel().tolist() == [100.0, 2.0, 3.0, 4.0]
    assert read_forecast("1.0,2.0;3.0,4.0]\n\nThen 5.0, 6.0", 2).tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert read_forecast("1, 2, 3, 4", horizon=2).ravel().tolist() == [1.0, 2.0]
    assert read_forecast("nothing", 2).shape == (0, 2)
    assert parse_forecast("1.0,2.0;3.0,4.0", 2, horizon=3) is None
    assert parse_forecast("first guess 9, 9. Forecast: 1, 2", horizon=2).ravel().tolist() == [1.0, 2.0]


def test_forecast_steps_name_the_bad_step():
    assert format_forecast([[1.0, 2.0], [3.25, 4.5]]) == "1.000,2.000;3.250,4.500"
    steps = forecast_steps("1.0,2.0;3.0", num_channels=2)
    assert [(step.text, step.numbers, step.valid) for step in steps] == [
        ("1.0,2.0", (1.0, 2.0), True),
        ("3.0", (3.0,), False),
    ]
    assert parse_forecast("1.0,2.0;3.0", num_channels=2, horizon=2) is None
    with pytest.raises(ValueError, match="num_channels=0"):
        forecast_steps("1", num_channels=0)


def test_forecast_is_complete_once_its_last_number_is_closed():
    texts = (" 1.2, 3.4, 5.", " 1.2, 3.4, 5.6", " 1.2, 3.4, 5.6,", "1, 2, 3, 4", "1, 2, 3 and more", "1, 2")
    assert [forecast_is_complete(text, 3) for text in texts] == [False, False, True, True, True, False]
    assert forecast_is_complete("1,2;3,4;", 2, num_channels=2) and not forecast_is_complete("1,2;3,4", 2, 2)


# ---------------------------------------------------------------------------------------------------------------------
# The rewards read as the metrics count
# ---------------------------------------------------------------------------------------------------------------------
GENERATED_FORECASTS = [
    " 10.50, 11.25, 12.00, 12.75",
    "Forecast: 10.5, 11, 12.5, 13<|im_end|>",
    "10.5, 11.0, 12.0, 13.0]\n\nThe series keeps rising by about 1 per step.",
    "10.5, 11.0 and then 12",
    "I cannot forecast this series.",
]


def test_the_spectral_reward_scores_the_forecast_the_evaluation_counts():
    history = np.linspace(0.0, 10.0, 32)
    future = [10.4, 11.2, 12.1, 13.0]
    record = make_record(
        id="forecast-0",
        task="forecast",
        pre_prompt="Forecast.",
        time_series=[(DEFAULT_SERIES_TEXT, history)],
        post_prompt="Forecast:",
        answer=", ".join(map(str, future)),
        metadata={"future": [future]},
    )
    reward = SpectralReward(history=history, horizon=len(future))
    samples = score_samples("forecast", GENERATED_FORECASTS, [record["answer"]] * 5, [record] * 5)
    for text, sample in zip(GENERATED_FORECASTS, samples):
        read = reward.forecast(text)
        errors = forecast_errors(text, future, history)
        # The evaluation counts a forecast when all its steps are read; the reward scores what it read.
        assert sample["parsed"] == (read.size == len(future)) == (errors["parsed"] == 1.0)
        if sample["parsed"]:
            assert np.ravel(sample["parsed_prediction"]).tolist() == read.tolist()
            assert sample["mse"] == pytest.approx(errors["mse"]) and sample["mae"] == pytest.approx(errors["mae"])
    assert [sample["parsed"] for sample in samples] == [True, True, True, False, False]


def test_lotka_volterra_answers_read_back_as_the_evaluation_reads_them():
    record = build_lotka_volterra_forecast(num_series=10, history=8, horizon=4)["train"][0]
    future = np.asarray(json.loads(record["metadata"])["future"]).T
    parsed = parse_forecast(record["answer"], num_channels=2, horizon=4, strict=True)
    assert np.abs(parsed - future).max() <= 5e-4 + 1e-12
    assert score_samples("forecast", [record["answer"]], [record["answer"]], [record])[0]["mse"] <= 2.5e-7


CHAIN_OF_THOUGHT = [
    "The magnitude is large and rhythmic. Answer: Walking Up.",
    "answer:walking_up<|eot_id|>",
    "Answer: walking\nOn reflection it may be walking up.",
    "walking up",
    "The answer is walking up",
    "Answer: I think it's walking up",
    "",
]


def test_the_answer_reward_scores_what_accuracy_counts():
    labels = ["walking", "walking_up", "lying"]
    records = [
        make_record(
            id=f"har-{index}",
            task="har_cot",
            pre_prompt="Classify.",
            time_series=[(DEFAULT_SERIES_TEXT, np.sin(np.arange(12.0)))],
            post_prompt="Rationale:",
            answer="... Answer: walking_up",
            label="walking_up",
        )
        for index in range(len(CHAIN_OF_THOUGHT))
    ]
    samples = score_samples("har_cot", CHAIN_OF_THOUGHT, [r["answer"] for r in records], records, labels=labels)
    reward = AnswerVerifierReward(answer="walking_up", labels=labels)
    scores = reward(CHAIN_OF_THOUGHT, RewardContext([[]] * len(CHAIN_OF_THOUGHT)))
    assert scores == [float(sample["correct"]) for sample in samples] == [1, 1, 0, 1, 0, 0, 0]
    assert [reward.read(text, labels=labels) for text in CHAIN_OF_THOUGHT] == [s["parsed_prediction"] for s in samples]

    options = ["upward trend", "downward trend", "no trend"]
    tsqa = [
        make_record(
            id=f"tsqa-{index}",
            task="tsqa",
            pre_prompt="What is the trend?",
            time_series=[(DEFAULT_SERIES_TEXT, np.linspace(0, 1, 16))],
            post_prompt="Predict the trend Answer:",
            answer="(b) downward trend",
            label="(b)",
            metadata={"options": options},
        )
        for index in range(5)
    ]
    texts = ["(b) downward trend", "Answer: downward trend", "b", "(", "a downward trend"]
    samples = score_samples("tsqa", texts, [r["answer"] for r in tsqa], tsqa)
    choice = AnswerVerifierReward(answer="(b)", options=options)
    scores = choice(texts, RewardContext([[]] * len(texts)))
    assert scores == [float(sample["correct"]) for sample in samples] == [1, 1, 1, 0, 0]
    assert AnswerVerifierReward(answer="downward trend", options=options)(texts, RewardContext([[]] * 5)) == scores


def test_caption_facts_agree_with_the_features_of_every_offline_caption():
    from hub_datasets.offline import load_offline
    from opentslm_hub.parsing import read_caption_facts

    for split in load_offline("captions_bundled").values():
        for record in split:
            facts, features = read_caption_facts(record["answer"]), json.loads(record["metadata"])["features"]
            assert facts.trend == features["trend"]["direction"], record["answer"]
            assert facts.mean == pytest.approx(features["mean"], rel=0.01, abs=1e-6)
            assert facts.periodic == (features["seasonality"]["period"] is not None)
            if facts.periodic:
                assert facts.period == features["seasonality"]["period"]


def test_caption_fact_metrics_count_unstated_facts_as_wrong():
    from recipes.evaluation import caption_fact_metrics

    reference = "The mean is 10. It follows a strong upward trend. A pattern repeats roughly every 12 observations."
    metrics = caption_fact_metrics(
        [
            "It has a mean of 10.5 and a weak upward trend; the cycle repeats every 13 steps.",
            "A downward trend with mean 20. No regular repeating pattern stands out.",
            "Nothing to say.",
        ],
        [reference] * 3,
    )
    assert metrics["trend_accuracy"] == pytest.approx(1 / 3) and metrics["trend_accuracy_count"] == 3
    assert metrics["mean_within_10pct"] == pytest.approx(1 / 3)
    assert metrics["periodicity_accuracy"] == pytest.approx(1 / 3)
    assert metrics["period_within_20pct"] == pytest.approx(1 / 3)
    assert caption_fact_metrics(["x"], ["y"])["trend_accuracy"] is None
