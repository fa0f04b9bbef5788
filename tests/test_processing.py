"""Processor tests: normalisation, the mean/std sentence, patch padding, placement of series, labels, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_tokenizer

from hub_datasets.schema import RECORD_FEATURES, make_record
from modeling_opentslm import OpenTSLMProcessor


@pytest.fixture(scope="module")
def processor():
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    return OpenTSLMProcessor(tokenizer=tokenizer)


def decode(processor, ids):
    return processor.tokenizer.decode(ids, skip_special_tokens=False)


def test_normalisation_mean_std_sentence_and_patch_padding(processor):
    values = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    inputs = processor(text="Look: <ts> What?", time_series=[values])
    mean, std = values.mean(), values.std()
    assert inputs["time_series"].shape == (1, 1, 8)  # 5 values padded to two patches of 4
    assert inputs["time_series_mask"][0, 0].tolist() == [1] * 5 + [0] * 3
    expected = (values - mean) / (std + 1e-8)
    np.testing.assert_allclose(inputs["time_series"][0, 0, :5].numpy(), expected, rtol=1e-6)
    assert inputs["time_series"][0, 0, 5:].abs().sum() == 0
    text = decode(processor, inputs["input_ids"][0])
    assert f"This is the time series, it has mean {mean:.4f} and std {std:.4f}:" in text
    assert text.count("<ts>") == 2  # one placeholder per patch
    assert text.startswith("Look: This is the time series") and text.endswith(" What?")


def test_multichannel_series_custom_texts_and_order(processor):
    xyz = np.stack([np.arange(8.0), np.arange(8.0) * 2, np.ones(8)])
    texts = [
        f"The following is the accelerometer data on the {axis}-axis, it has mean {{mean:.4f}} and std {{std:.4f}}:"
        for axis in "xyz"
    ]
    inputs = processor(
        text="A <ts> B <ts> C", time_series=[xyz, [5.0, 6.0]], time_series_text=[texts, "Second, mean {mean:.1f}:"]
    )
    assert inputs["time_series"].shape == (1, 4, 8)  # 3 channels + 1 series, padded to the longest
    assert inputs["time_series_mask"].sum(-1).tolist() == [[8, 8, 8, 2]]
    text = decode(processor, inputs["input_ids"][0])
    positions = [text.index(f"on the {axis}-axis, it has mean") for axis in "xyz"]
    assert positions == sorted(positions)
    assert "on the y-axis, it has mean 7.0000 and std 4.5826:" in text
    assert text.index("Second, mean 5.5:") > text.index(" B ") > positions[-1]
    assert text.rstrip().endswith("C")


def test_constant_series_is_zero_not_nan(processor):
    inputs = processor(text="<ts>", time_series=[np.full(12, 3.5)])
    assert torch.isfinite(inputs["time_series"]).all()
    assert inputs["time_series"].abs().sum() == 0
    assert "mean 3.5000 and std 0.0000" in decode(processor, inputs["input_ids"][0])


def test_series_appended_when_text_has_no_marker(processor):
    inputs = processor(text="Describe it.", time_series=[[1.0, 2.0, 3.0, 4.0]])
    text = decode(processor, inputs["input_ids"][0])
    assert text.startswith("Describe it.\nThis is the time series")


def test_left_padding_batch_of_unequal_lengths(processor):
    inputs = processor(
        text=["<ts>", "a much longer prompt here <ts>"], time_series=[[np.arange(3.0)], [np.arange(40.0)]]
    )
    mask = inputs["attention_mask"]
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and mask[1].all()
    assert (inputs["input_ids"][0][mask[0] == 0] == processor.tokenizer.pad_token_id).all()
    right = processor(
        text=["<ts>", "longer <ts>"], time_series=[[np.arange(3.0)], [np.arange(40.0)]], padding_side="right"
    )
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0


def test_samples_without_series_in_a_batch(processor):
    inputs = processor(text=["plain text", "with <ts>"], time_series=[[], [np.arange(6.0)]])
    assert inputs["time_series_mask"][0].sum() == 0 and inputs["time_series_mask"][1].sum() == 6
    assert "time_series" not in processor(text="no series at all")


def test_labels_cover_answer_and_eos_only(processor):
    inputs = processor(
        text=["<ts> Q1", "<ts> a longer question"],
        time_series=[[np.arange(9.0)], [np.arange(4.0)]],
        answers=["yes", "(b) no way"],
    )
    tokenizer = processor.tokenizer
    for row, answer in enumerate(["yes", "(b) no way"]):
        expected = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = inputs["labels"][row]
        assert labels[labels != -100].tolist() == expected
        assert inputs["input_ids"][row, -len(expected) :].tolist() == expected


def test_chat_template_wraps_prompt(processor):
    prompt = processor.format_prompt("You are an expert.", "Caption it.", num_series=2)
    assert prompt.startswith("<|im_start|>user\nYou are an expert.\n<ts>\n<ts>\nCaption it.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert processor.format_prompt("Pre", "Post", use_chat_template=False) == "Pre\n<ts>\nPost"


def test_records_of_the_shared_schema(processor):
    record = make_record(
        id="har-1",
        task="har_cot",
        pre_prompt="You are given accelerometer data.",
        time_series=[
            (f"{axis}-axis, mean {{mean:.2f}} std {{std:.2f}}:", np.arange(10.0) * (i + 1))
            for i, axis in enumerate("xyz")
        ],
        post_prompt="Rationale:",
        answer="It moves a lot. Answer: walking",
        label="walking",
    )
    RECORD_FEATURES.encode_example(record)  # the record really fits the schema
    batch = processor.encode_records([record, record], use_chat_template=False)
    assert batch["time_series"].shape == (2, 3, 12)
    text = decode(processor, batch["input_ids"][0])
    assert text.startswith("You are given accelerometer data.\nx-axis, mean 4.50 std 2.87:")
    assert "z-axis, mean 13.50 std 8.62:" in text and "\nRationale:" in text
    answer_ids = processor.tokenizer("It moves a lot. Answer: walking", add_special_tokens=False)["input_ids"]
    assert batch["labels"][0][batch["labels"][0] != -100].tolist() == answer_ids + [processor.tokenizer.eos_token_id]
    generation = processor.encode_records([record], with_answers=False)
    assert "labels" not in generation


def test_save_and_reload_keeps_settings(tmp_path, processor):
    custom = OpenTSLMProcessor(tokenizer=processor.tokenizer, series_text="Series ({mean:.2f}):", max_series_length=64)
    custom.save_pretrained(tmp_path)
    reloaded = OpenTSLMProcessor.from_pretrained(tmp_path)
    assert reloaded.series_text == "Series ({mean:.2f}):" and reloaded.max_series_length == 64
    assert reloaded.ts_token_id == processor.ts_token_id


# ---------------------------------------------------------------------------------------------------------------------
# Bad input: each gets a ValueError that names the problem.
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("series", "message"),
    [
        ([1.0, float("nan"), 3.0], r"non-finite value \(nan\) at channel 0, step 1"),
        ([1.0, 2.0, float("inf")], r"non-finite value \(inf\) at channel 0, step 2"),
        ([], "empty"),
        (np.zeros((2, 0)), "empty"),
        (np.zeros((2, 3, 4)), r"shape \(2, 3, 4\); expected 1-D"),
        (np.array(3.0), r"shape \(\)"),
        (["1.0", "abc"], "not numeric"),
        ([[1.0, 2.0], [3.0]], "not numeric or not rectangular"),
        (np.zeros(4097), "4097 values, more than max_series_length=4096"),
    ],
)
def test_bad_series(processor, series, message):
    with pytest.raises(ValueError, match=message):
        processor(text="<ts>", time_series=[series])


def test_marker_count_mismatch(processor):
    with pytest.raises(ValueError, match=r"2 '<ts>' markers but 1 series"):
        processor(text="<ts> and <ts>", time_series=[[1.0, 2.0]])


def test_batch_structure_errors(processor):
    with pytest.raises(ValueError, match="series for 1 samples but 2 prompts"):
        processor(text=["<ts>", "<ts>"], time_series=[[[1.0, 2.0]]])
    with pytest.raises(ValueError, match="bare series"):
        processor(text=["<ts>"], time_series=[[1.0, 2.0]])
    with pytest.raises(ValueError, match="2 answers for 1 prompts"):
        processor(text="<ts>", time_series=[[1.0]], answers=["a", "b"])
    with pytest.raises(ValueError, match="one text"):
        processor(text="<ts>", time_series=[[1.0]], time_series_text=["a", "b"])
    with pytest.raises(ValueError, match="2 texts for 3 channels"):
        processor(text="<ts>", time_series=[np.zeros((3, 4))], time_series_text=[["a", "b"]])


def test_too_long_prompt_is_an_error_not_a_truncation(processor):
    with pytest.raises(ValueError, match="more than max_length=5"):
        processor(text="<ts>", time_series=[np.arange(100.0)], max_length=5)


def test_literal_placeholder_in_answer_is_rejected(processor):
    with pytest.raises(ValueError, match="answer contains the placeholder"):
        processor(text="<ts>", time_series=[[1.0, 2.0]], answers=["see <ts>"])


def test_record_without_answer_for_training(processor):
    record = make_record(
        id="1", task="t", pre_prompt="p", time_series=[("s {mean}", [1.0])], post_prompt="q", answer=""
    )
    with pytest.raises(ValueError, match="no answer"):
        processor.encode_records([record])


def test_tokenizer_without_placeholder_or_pad():
    with pytest.raises(ValueError, match="not a single token"):
        OpenTSLMProcessor(tokenizer=tiny_tokenizer())
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        OpenTSLMProcessor(tokenizer=tokenizer)
