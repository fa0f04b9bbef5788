"""The offline default model shipped with the package: only OpenTSLM's own weights (fp16, a few MB) next to a
processor, loaded in one call on the offline SmolLM2, and it captions held-out series in the trained style."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from opentslm_hub import default_model


def test_the_shipped_folder_holds_only_own_weights():
    folder = default_model.MODEL_DIR
    config = json.loads((folder / "config.json").read_text())
    assert config["llm_weights"] == "base"
    assert config["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert config["architecture"] == "sp" and config["lora"] is not None
    weights = folder / "model.safetensors"
    assert weights.stat().st_size < 16e6  # encoder + projector + LoRA r16 in fp16; the whole model is ~270 MB
    with safe_open(weights, "pt") as tensors:
        names = list(tensors.keys())
        assert {tensors.get_tensor(name).dtype for name in names} == {torch.float16}
    assert not [name for name in names if name.startswith("model.language_model.") and "lora_" not in name]
    for name in ("processor_config.json", "tokenizer_config.json", "README.md", "stage_info.json"):
        assert (folder / name).is_file(), name


@pytest.mark.slow  # SmolLM2-135M writes 8 captions
def test_the_default_model_captions_held_out_series(smollm2_dir):
    from recipes.evaluation import evaluate_records
    from recipes.run_eval import load_split

    model, processor = default_model.load()
    assert model.config.llm_weights == "base" and next(model.parameters()).dtype == torch.float32
    records = list(load_split("captions_bundled", "test", max_samples=8))
    metrics = evaluate_records(model, processor, records, batch_size=8, max_new_tokens=200, with_loss=False)
    # An untrained model (random encoder and projector) scores ROUGE-L 0.19 and never states periodicity right.
    assert metrics["rougeL"] >= 0.5 and metrics["periodicity_accuracy"] >= 0.6, metrics


@pytest.mark.slow  # SmolLM2-135M answers 6 questions
def test_the_default_model_answers_held_out_questions_with_an_option(smollm2_dir):
    from recipes.evaluation import evaluate_records, split_labels
    from recipes.run_eval import load_split

    model, processor = default_model.load()
    split = load_split("tsqa_synthetic", "test")
    records = list(split.select(range(6)))
    metrics = evaluate_records(
        model, processor, records, batch_size=6, max_new_tokens=16, with_loss=False, labels=split_labels(split)
    )
    # It names an option, then its letter; an untrained model names none.
    assert metrics["num_out_of_vocabulary"] == 0, metrics


@pytest.mark.slow  # SmolLM2-135M writes 8 rationales
def test_the_default_model_reasons_to_a_label_on_held_out_recordings(smollm2_dir):
    from recipes.evaluation import evaluate_records, split_labels
    from recipes.run_eval import load_split

    model, processor = default_model.load()
    split = load_split("har_cot_bundled", "test")
    by_label: dict[str, list[int]] = {}
    for index, record in enumerate(split):
        by_label.setdefault(record["label"], []).append(index)
    records = list(split.select([index for indices in by_label.values() for index in indices[:2]]))
    metrics = evaluate_records(
        model, processor, records, batch_size=8, max_new_tokens=200, with_loss=False, labels=split_labels(split)
    )
    # Every rationale ends in "Answer: <activity>"; an untrained model ends none (chance is 25%).
    assert metrics["num_missing_answer_marker"] == 0 and metrics["num_out_of_vocabulary"] == 0, metrics
    assert metrics["accuracy"] >= 0.5, metrics
