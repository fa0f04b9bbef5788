"""The recipes' data collator: records of the shared schema to training batches with labels on the answer only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import tiny_processor

from hub_datasets.schema import RECORD_FEATURES, make_record
from recipes.collator import (
    LossEmphasis,
    OpenTSLMDataCollator,
    encode_prompts,
    encode_with_answers,
    record_inputs,
)


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


def decode(processor, ids):
    return processor.tokenizer.decode(ids, skip_special_tokens=False)


def har_record(answer: str = "It moves a lot. Answer: walking") -> dict:
    return make_record(
        id="har-1",
        task="har_cot",
        pre_prompt="You are given accelerometer data.",
        time_series=[
            (f"{axis}-axis, mean {{mean:.2f}} std {{std:.2f}}:", np.arange(10.0) * (i + 1))
            for i, axis in enumerate("xyz")
        ],
        post_prompt="Rationale:",
        answer=answer,
        label="walking",
    )


def test_labels_cover_answer_and_eos_only(processor):
    inputs = encode_with_answers(
        processor,
        ["<ts> Q1", "<ts> a longer question"],
        ["yes", "(b) no way"],
        [[np.arange(9.0)], [np.arange(4.0)]],
    )
    tokenizer = processor.tokenizer
    for row, answer in enumerate(["yes", "(b) no way"]):
        expected = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = inputs["labels"][row]
        assert labels[labels != -100].tolist() == expected
        assert inputs["input_ids"][row, -len(expected) :].tolist() == expected
    # The prompt part is exactly what the processor gives for generation.
    prompt = processor(text="<ts> a longer question", time_series=[np.arange(4.0)])["input_ids"][0]
    assert inputs["input_ids"][1, : len(prompt)].tolist() == prompt.tolist()


def test_right_padding_keeps_labels_aligned(processor):
    inputs = encode_with_answers(
        processor, ["<ts>", "<ts> longer"], ["a", "bb cc"], [[[1.0]], [[2.0, 3.0]]], padding_side="right"
    )
    for row in range(2):
        real = inputs["attention_mask"][row].bool()
        assert (inputs["labels"][row][~real] == -100).all()
        assert inputs["labels"][row][real][-1] == processor.tokenizer.eos_token_id


def test_records_of_the_shared_schema(processor):
    record = har_record()
    RECORD_FEATURES.encode_example(record)  # the record really fits the schema
    batch = OpenTSLMDataCollator(processor)([record, record])
    assert batch["time_series"].shape == (2, 3, 12)
    text = decode(processor, batch["input_ids"][0])
    assert text.startswith("You are given accelerometer data.\nx-axis, mean 4.50 std 2.87:")
    assert "z-axis, mean 13.50 std 8.62:" in text and "\nRationale:" in text
    answer_ids = processor.tokenizer("It moves a lot. Answer: walking", add_special_tokens=False)["input_ids"]
    assert batch["labels"][0][batch["labels"][0] != -100].tolist() == answer_ids + [processor.tokenizer.eos_token_id]
    generation = encode_prompts(processor, [record])
    assert "labels" not in generation
    assert (
        record_inputs(record, processor)["text"] == "You are given accelerometer data.\n<ts>\n<ts>\n<ts>\nRationale:"
    )


def test_column_oriented_records_as_datasets_gives_them(processor):
    record = har_record()
    columns = {key: [entry[key] for entry in record["time_series"]] for key in ("text", "values")}
    assert record_inputs({**record, "time_series": columns}, processor)["time_series_text"][2].startswith("z-axis")


def test_answer_errors(processor):
    with pytest.raises(ValueError, match="2 answers for 1 prompts"):
        encode_with_answers(processor, ["<ts>"], ["a", "b"], [[[1.0]]])
    with pytest.raises(ValueError, match="answer contains the placeholder"):
        encode_with_answers(processor, ["<ts>"], ["see <ts>"], [[[1.0, 2.0]]])
    with pytest.raises(ValueError, match="more than max_length=5"):
        encode_with_answers(processor, ["<ts>"], ["a b c d e f"], [[[1.0]]], max_length=5)


def test_record_without_answer_for_training(processor):
    record = make_record(
        id="1", task="t", pre_prompt="p", time_series=[("s {mean}", [1.0])], post_prompt="q", answer=""
    )
    with pytest.raises(ValueError, match="no answer"):
        OpenTSLMDataCollator(processor)([record])


@pytest.mark.parametrize("padding_free", [False, True])
def test_loss_emphasis_weighs_the_matched_answer_tokens(processor, padding_free):
    emphasis = LossEmphasis(r"upward trend|Answer: \w+", 8.0)
    answers = ["It follows a weak upward trend over the window.", "It moves a lot. Answer: walking"]
    batch = (processor, ["<ts> caption", "<ts> activity"], answers, [[np.arange(9.0)], [np.arange(4.0)]])
    inputs = encode_with_answers(*batch, padding_free=padding_free, emphasis=emphasis)
    plain = encode_with_answers(*batch, padding_free=padding_free)
    assert inputs["labels"].tolist() == plain["labels"].tolist() and "loss_weights" not in plain
    weights, labels = inputs["loss_weights"], inputs["labels"]
    assert weights.shape == labels.shape and weights.dtype == torch.float32
    labelled = labels != -100
    assert set(weights[labelled].tolist()) == {1.0, 8.0}
    emphasised = labels[(weights == 8.0) & labelled].tolist()
    assert processor.tokenizer.decode(emphasised).replace(" ", "") == "upwardtrendAnswer:walking"
    if not padding_free:  # the prompt weighs nothing; packed rows mask each sample's first label instead
        assert (weights[~labelled] == 0).all()


def test_loss_emphasis_errors():
    with pytest.raises(ValueError, match="not a regular expression"):
        LossEmphasis("(unclosed", 2.0)
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        LossEmphasis("trend", 0.0)
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        LossEmphasis("trend", float("inf"))
    assert LossEmphasis("trend", 3).token_weights("a trend here", [(0, 1), (1, 5), (5, 7), (7, 12)]) == [
        1.0,
        3.0,
        3.0,
        1.0,
    ]
