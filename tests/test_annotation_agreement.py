"""Feature-based agreement of a generated description with its series, and MiniLM cosine similarity."""

import json

import numpy as np
import pytest

from hub_datasets.synthetic import ou_annotation
from opentslm_hub.annotation_agreement import (
    SentenceEmbedder,
    annotation_sections,
    claimed_extrema_steps,
    feature_agreement,
    parse_annotation,
)


def known_series(trend: str, noise: float, length: int = 60) -> np.ndarray:
    """A ramp (or a level with a gentle wave, so the extrema are unique) plus seeded Gaussian noise of a known size,
    on the 0–99 grid."""
    wave = 45 + 5 * np.cos(np.linspace(0, 4 * np.pi, length))
    level = {"upward": np.linspace(20, 70, length), "downward": np.linspace(70, 20, length), "none": wave}
    return np.round(level[trend] + np.random.default_rng(0).normal(0, noise, length))


@pytest.mark.parametrize("trend", ["upward", "downward", "none"])
@pytest.mark.parametrize("noise, level", [(0.0, "low"), (5.0, "high")])
def test_true_claims_agree_and_false_claims_do_not(trend, noise, level):
    x = known_series(trend, noise)
    _, measured = ou_annotation(x)
    assert (measured["trend"], measured["noise_level"]) == (trend, level)  # the series is what it was built to be
    top, bottom = int(np.argmax(x)), int(np.argmin(x))
    words = {"upward": "an upward trend", "downward": "a downward trend", "none": "no clear trend"}
    true = {
        "trend": f"The series shows {words[trend]}.",
        "noise": f"The noise level is {level}.",
        "extrema": f"The maximum is reached at time step {top} and the minimum at time step {bottom}.",
    }
    agreement = feature_agreement(json.dumps(true), x)
    assert (agreement["trend"], agreement["noise"], agreement["extrema"]) == (True, True, True)
    assert agreement["computed"] == {"trend": trend, "noise": level, "max_step": top, "min_step": bottom}

    other_trend = "downward" if trend == "upward" else "upward"
    other_level = "moderate"
    far = int(np.argmin(np.abs(x - np.median(x))))  # a step holding a middle value, far from both extrema
    false = {
        "trend": f"The series shows {words[other_trend]}.",
        "noise": f"The noise level is {other_level}.",
        "extrema": f"The maximum is reached at time step {far} and the minimum at time step {bottom}.",
    }
    agreement = feature_agreement(json.dumps(false), x)
    assert (agreement["trend"], agreement["noise"], agreement["extrema"]) == (False, False, False)


def test_the_reference_annotation_agrees_with_its_series():
    x = known_series("upward", 5.0)
    annotation, _ = ou_annotation(x)
    agreement = feature_agreement(json.dumps(annotation), x)
    assert (agreement["trend"], agreement["noise"], agreement["extrema"]) == (True, True, True)


def test_prose_and_missing_claims():
    x = known_series("downward", 0.0)
    prose = "Values are decreasing with low noise; the max sits at step 0 and the min at step 59."
    agreement = feature_agreement(prose, x)
    assert (agreement["trend"], agreement["noise"], agreement["extrema"]) == (True, True, True)
    silent = feature_agreement("A time series.", x)
    assert (silent["trend"], silent["noise"], silent["extrema"]) == (False, False, False)
    # Both directions claimed, or a step outside the series, is no claim.
    both = feature_agreement("It is increasing, then decreasing; max at step 999, min at step 59.", x)
    assert (both["trend"], both["extrema"]) == (False, False)


def test_parsing_the_annotation():
    assert parse_annotation('{"trend": "a", "noise": "b", "extrema": "c"}<|im_end|>') == {
        "trend": "a",
        "noise": "b",
        "extrema": "c",
    }
    assert parse_annotation('{"trend": "a"}') is None
    assert parse_annotation("not json") is None
    assert annotation_sections("plain words")["noise"] == "plain words"
    assert claimed_extrema_steps("The maximum value 80 is first reached at time step 12 and the minimum value 20 at "
                                 "time step 50.") == (12, 50)  # fmt: skip


def test_minilm_cosine_similarity():
    embedder = SentenceEmbedder()
    same = "The series shows an upward trend."
    scores = embedder.cosine([same, same], [same, "Cats sleep most of the day."])
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert scores[1] < 0.5
    with pytest.raises(ValueError, match="pair"):
        embedder.cosine([same], [])
