"""Feature extractor and processor tests: normalisation settings, the mean/std sentence, patch padding, placement of
series, prompt formats, bad input. Labels are the collator's (tests/test_collator.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import CHAT_TEMPLATE, tiny_processor, tiny_tokenizer
from transformers import AutoFeatureExtractor, AutoProcessor

from modeling_opentslm import OpenTSLMFeatureExtractor, OpenTSLMProcessor


@pytest.fixture(scope="module")
def processor():
    return tiny_processor()


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


def test_chat_template_wraps_prompt(processor):
    chat = OpenTSLMProcessor(tokenizer=processor.tokenizer, use_chat_template=True)
    prompt = chat.format_prompt("You are an expert.", "Caption it.", num_series=2)
    assert prompt.startswith("<|im_start|>user\nYou are an expert.\n<ts>\n<ts>\nCaption it.<|im_end|>")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert processor.format_prompt("Pre", "Post") == "Pre\n<ts>\nPost"  # plain text unless asked for
    with pytest.raises(ValueError, match="system_prompt needs the chat template"):
        processor.format_prompt("Pre", "Post", system_prompt="Be brief.")


def bos_processor(use_chat_template: bool) -> OpenTSLMProcessor:
    """A tokenizer that adds BOS to every text, with a chat template that starts with BOS (as Llama 3's does)."""
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "<s>", "additional_special_tokens": ["<ts>"]})
    tokenizer.add_bos_token = True
    tokenizer.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    return OpenTSLMProcessor(tokenizer=tokenizer, use_chat_template=use_chat_template)


@pytest.mark.parametrize("use_chat_template", [True, False])
def test_each_prompt_format_has_exactly_one_bos(use_chat_template):
    processor = bos_processor(use_chat_template)
    bos = processor.tokenizer.bos_token_id
    inputs = processor(text=processor.format_prompt("Pre", "Post"), time_series=[np.arange(8.0)])
    ids = inputs["input_ids"][0].tolist()
    assert ids[0] == bos and ids.count(bos) == 1
    assert ("<|im_start|>user" in decode(processor, ids)) == use_chat_template
    # The setting travels with the processor.
    assert processor.feature_extractor is not None and processor.use_chat_template == use_chat_template
    # Overriding it per call is explicit: templated text tokenised with special tokens gets a second BOS.
    templated = processor.format_prompt("Pre", "Post", num_series=0)
    doubled = processor(text=templated, add_special_tokens=True)["input_ids"][0]
    assert doubled.tolist().count(bos) == (2 if use_chat_template else 1)


def test_chat_format_needs_a_template():
    tokenizer = tiny_tokenizer(chat=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    with pytest.raises(ValueError, match="no chat template"):
        OpenTSLMProcessor(tokenizer=tokenizer, use_chat_template=True)


def test_save_and_reload_keeps_settings(tmp_path, processor):
    extractor = OpenTSLMFeatureExtractor(max_series_length=64, std_ddof=1, std_floor=1e-6, center_only_below_std=1e-6)
    custom = OpenTSLMProcessor(
        extractor, tokenizer=processor.tokenizer, series_text="Series ({mean:.2f}):", use_chat_template=True
    )
    custom.save_pretrained(tmp_path)
    for reloaded in (OpenTSLMProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert isinstance(reloaded, OpenTSLMProcessor)
        assert reloaded.series_text == "Series ({mean:.2f}):" and reloaded.feature_extractor.max_series_length == 64
        assert reloaded.ts_token_id == processor.ts_token_id and reloaded.use_chat_template
        assert reloaded.feature_extractor.to_dict() == extractor.to_dict()
    alone = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert isinstance(alone, OpenTSLMFeatureExtractor) and alone.std_ddof == 1 and alone.std_floor == 1e-6


# ---------------------------------------------------------------------------------------------------------------------
# Feature extractor: the normalisation settings
# ---------------------------------------------------------------------------------------------------------------------
def test_feature_extractor_normalisation_settings():
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    default = OpenTSLMFeatureExtractor()(time_series=[[values]], return_statistics=True, return_tensors="np")
    np.testing.assert_allclose(default["time_series"][0, 0, :5], (values - 6.2) / (values.std() + 1e-8), rtol=1e-6)
    assert default["time_series_mean"][0, 0] == pytest.approx(6.2) and default["time_series_std"][0, 0] == values.std()
    assert default["time_series_num_channels"].tolist() == [[1]]

    unbiased = OpenTSLMFeatureExtractor(std_ddof=1, std_epsilon=0.0)(time_series=[[values]], return_tensors="np")
    np.testing.assert_allclose(unbiased["time_series"][0, 0, :5], (values - 6.2) / values.std(ddof=1), rtol=1e-6)

    constant = np.full(6, 2.5)
    floored = OpenTSLMFeatureExtractor(std_floor=1e-6, std_epsilon=0.0)
    out = floored(time_series=[[constant]], return_statistics=True, return_tensors="np")
    assert out["time_series_std"][0, 0] == 1e-6  # the floored value is the stated one
    assert np.abs(out["time_series"]).max() == 0

    centred = OpenTSLMFeatureExtractor(center_only_below_std=0.5, std_epsilon=0.0)
    small = np.array([1.0, 1.2, 1.0, 1.2])  # std 0.1: only centred
    np.testing.assert_allclose(centred(time_series=[[small]], return_tensors="np")["time_series"][0, 0], small - 1.1)
    raw = OpenTSLMFeatureExtractor(normalize=False)(time_series=[[values]], return_tensors="np")
    np.testing.assert_allclose(raw["time_series"][0, 0, :5], values)


def test_feature_extractor_batches_channels_and_absent_series():
    extractor = OpenTSLMFeatureExtractor(patch_size=4)
    out = extractor(time_series=[[np.zeros((3, 6)), np.arange(9.0)], []], return_statistics=True, return_tensors="pt")
    assert out["time_series"].shape == (2, 4, 12) and out["time_series"].dtype == torch.float32
    assert out["time_series_mask"].sum(-1).tolist() == [[6, 6, 6, 9], [0, 0, 0, 0]]
    assert out["time_series_num_channels"].tolist() == [[3, 1], [0, 0]]
    assert extractor(time_series=[[], []]) == {}
    with pytest.raises(ValueError, match="bare series"):
        extractor(time_series=[np.arange(4.0)])
    with pytest.raises(ValueError, match="std_ddof must be 0"):
        OpenTSLMFeatureExtractor(std_ddof=2)


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
    with pytest.raises(ValueError, match="one text"):
        processor(text="<ts>", time_series=[[1.0]], time_series_text=["a", "b"])
    with pytest.raises(ValueError, match="2 texts for 3 channels"):
        processor(text="<ts>", time_series=[np.zeros((3, 4))], time_series_text=[["a", "b"]])


def test_too_long_prompt_is_an_error_not_a_truncation(processor):
    with pytest.raises(ValueError, match="more than max_length=5"):
        processor(text="<ts>", time_series=[np.arange(100.0)], max_length=5)


def test_tokenizer_without_placeholder_or_pad():
    with pytest.raises(ValueError, match="not a single token"):
        OpenTSLMProcessor(tokenizer=tiny_tokenizer())
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        OpenTSLMProcessor(tokenizer=tokenizer)
