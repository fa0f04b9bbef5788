"""Numbers as text for text-only LLMs (LLMTime, two-digit integers) and the FLOPs accounting."""

import numpy as np
import pytest

from opentslm_hub.text_series import (
    LLMTimeFormat,
    forward_flops,
    llmtime_decode,
    llmtime_encode,
    llmtime_scales,
    training_flops,
    two_digit_decode,
    two_digit_encode,
)


def test_llmtime_writes_scaled_integers_with_separators():
    values = [[0.734, 1.205], [0.812, 1.1]]
    assert llmtime_encode(values, [1.0, 1.0]) == "73,120;81,110"
    assert llmtime_encode(values, [2.0, 0.5], LLMTimeFormat(precision=1)) == "4,24;4,22"
    spaced = LLMTimeFormat(precision=3, digit_separator=" ", channel_separator=" , ", step_separator=" ; ")
    assert llmtime_encode(values, [1.0, 1.0], spaced) == "7 3 4 , 1 2 0 5 ; 8 1 2 , 1 1 0 0"
    assert llmtime_encode([-0.5, 0.02], 1.0) == "-50;2"  # one channel; the sign stays, leading zeros go


@pytest.mark.parametrize(
    "fmt",
    [
        LLMTimeFormat(),
        LLMTimeFormat(precision=3, digit_separator=" "),
        LLMTimeFormat(precision=1, quantile=0.5, channel_separator="|", step_separator="\n"),
    ],
)
def test_llmtime_round_trip_within_the_precision(fmt):
    rng = np.random.default_rng(0)
    history = rng.uniform(-3, 5, size=(30, 2))
    future = rng.uniform(-3, 5, size=(7, 2))
    scales = llmtime_scales(history, fmt)
    np.testing.assert_allclose(scales, np.quantile(np.abs(history), fmt.quantile, axis=0))
    decoded = llmtime_decode(llmtime_encode(future, scales, fmt), scales, fmt, horizon=7)
    assert decoded.shape == (7, 2)
    assert np.all(np.abs(decoded - future) <= 0.5 * 10.0**-fmt.precision * scales + 1e-12)


def test_llmtime_decode_reads_the_horizon_or_nothing():
    scales = np.array([1.0, 2.0])
    np.testing.assert_allclose(llmtime_decode("73,120;81,110;5", scales, horizon=2), [[0.73, 2.4], [0.81, 2.2]])
    assert llmtime_decode("73,120;81", scales, horizon=2) is None  # the second step lacks the predator
    assert llmtime_decode("no numbers", scales) is None


def test_llmtime_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        llmtime_encode([[1.0, np.nan]], [1.0, 1.0])
    with pytest.raises(ValueError, match="scales"):
        llmtime_encode([[1.0, 2.0]], [1.0, 0.0])
    with pytest.raises(ValueError, match="separators"):
        LLMTimeFormat(channel_separator=";", step_separator=";")
    with pytest.raises(ValueError, match="digits"):
        LLMTimeFormat(digit_separator="0")
    assert llmtime_scales([[0.0, 2.0], [0.0, 4.0]], LLMTimeFormat(quantile=1.0)).tolist() == [1.0, 4.0]


def test_two_digit_tokens_round_trip_within_half_a_step():
    text, low, high = two_digit_encode([10.0, 12.5, 30.0, 20.2])
    assert (text, low, high) == ("00 12 99 50", 10.0, 30.0)
    rng = np.random.default_rng(1)
    values = rng.normal(5, 3, size=50)
    text, low, high = two_digit_encode(values)
    assert len(text.split()) == 50 and all(len(group) == 2 for group in text.split())
    assert np.all(np.abs(two_digit_decode(text, low, high) - values) <= (high - low) / 99 / 2 + 1e-12)
    # The OU set's series are already on the 0–99 grid: fixed bounds write them unchanged.
    assert two_digit_encode([7, 42, 99, 0], low=0, high=99)[0] == "07 42 99 00"
    assert two_digit_encode([3.0, 3.0])[0] == "00 00"


def test_two_digit_tokens_reject_bad_input():
    with pytest.raises(ValueError, match="outside"):
        two_digit_encode([1.0, 120.0], low=0, high=99)
    with pytest.raises(ValueError, match="two-digit"):
        two_digit_decode("07 4 99")
    with pytest.raises(ValueError, match="one channel"):
        two_digit_encode([[1.0, 2.0], [3.0, 4.0]])


def test_token_counts_with_the_offline_tokenizer(smollm2_dir):
    """SmolLM2's tokenizer splits digits: LLMTime text costs one token per character, two-digit text three tokens
    per value (a space token, then one per digit) less the first space."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 3, size=(12, 2))
    text = llmtime_encode(values, llmtime_scales(values))
    assert len(tokenizer(text)["input_ids"]) == len(text)
    two_digit, _, _ = two_digit_encode(values[:, 0])
    assert len(tokenizer(two_digit)["input_ids"]) == 3 * 12 - 1


def test_flops_by_hand():
    # A 135M-parameter model over a 500-token sequence: forward 2·N·T, training 6·N·T.
    assert forward_flops(135_000_000, 500) == 1.35e11
    assert training_flops(135_000_000, 500) == 4.05e11
    assert training_flops(10, 3) == 3 * forward_flops(10, 3) == 180
    with pytest.raises(ValueError, match=">= 0"):
        forward_flops(-1, 10)
