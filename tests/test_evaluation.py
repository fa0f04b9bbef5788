"""Evaluation: local metric modules, answer parsing, metrics per task family, generation and the CLI (tiny models)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny import TINY_ENCODER, save_toy_records, tiny_text_config, tiny_tokenizer

from hub_datasets.schema import DEFAULT_SERIES_TEXT, make_record
from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM, OpenTSLMProcessor
from recipes import evaluation
from recipes.collator import encode_prompts
from recipes.evaluation import compute_metrics, evaluate_records, generate_predictions
from recipes.metrics import METRIC_NAMES, load_metric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------------------------------
# Metric modules
# ---------------------------------------------------------------------------------------------------------------------
def test_metric_modules_load_offline_without_network(monkeypatch):
    """evaluate.load reads the local modules with the Hub switched off and every socket connection refused."""

    def refuse(*args, **kwargs):
        raise OSError("network access attempted while loading a local metric module")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    load_metric.cache_clear()
    text = "the series rises steadily then falls sharply"
    assert load_metric("bleu").compute(predictions=[text], references=[text])["bleu"] == pytest.approx(100)
    assert load_metric("rouge").compute(predictions=[text], references=[text])["rougeL"] == 1.0
    assert load_metric("accuracy").compute(predictions=["a"], references=["a"])["accuracy"] == 1.0
    assert load_metric("f1").compute(predictions=["a", "b"], references=["a", "b"])["f1"] == 1.0


def test_metric_values_on_hand_made_inputs():
    rouge = load_metric("rouge").compute(
        predictions=["the series rises", "a b c d"], references=["the series rises", "w x y z"]
    )
    assert rouge["rougeL"] == pytest.approx(0.5) and rouge["rouge1"] == pytest.approx(0.5)
    bleu = load_metric("bleu")
    assert bleu.compute(predictions=["one two three four five"], references=["six seven eight nine ten"])["bleu"] < 1
    several = bleu.compute(predictions=["one two three four five"], references=[["x y", "one two three four five"]])
    assert several["bleu"] == pytest.approx(100)
    assert load_metric("accuracy").compute(predictions=["a", "b", "c", "d"], references=["a", "b", "x", "y"]) == {
        "accuracy": 0.5
    }
    with pytest.raises(ValueError, match="Unknown metric 'meteor'"):
        load_metric("meteor")
    assert set(METRIC_NAMES) == {"rouge", "bleu", "accuracy", "f1"}


def test_macro_f1_counts_out_of_vocabulary_only_as_a_false_negative():
    # Class a: tp 1 (a→a), fn 1 (a→x, x is out of vocabulary), fp 1 (b→a): P = R = F1 = 1/2.
    # Class b: tp 1, fn 1 (b→a), fp 0: P = 1, R = 1/2, F1 = 2/3. Macro = (1/2 + 2/3) / 2 = 7/12.
    # Counting x as a third class (F1 0) would give 7/18.
    predictions, references = ["a", "x", "b", "a"], ["a", "a", "b", "b"]
    f1 = load_metric("f1")
    assert f1.compute(predictions=predictions, references=references, labels=["a", "b"])["f1"] == pytest.approx(7 / 12)
    per_class = f1.compute(predictions=predictions, references=references, labels=["a", "b"], average=None)["f1"]
    assert per_class == pytest.approx([1 / 2, 2 / 3])
    # A label of the set that nobody predicts or has scores 0 in the macro average, as upstream.
    assert f1.compute(predictions=predictions, references=references, labels=["a", "b", "c"])["f1"] == pytest.approx(
        7 / 18
    )


def tsqa_record(index: int, label: str) -> dict:
    return make_record(
        id=f"tsqa-{index}",
        task="tsqa",
        pre_prompt="What is the trend?\n(a) upward trend\n(b) downward trend\n(c) no trend",
        time_series=[(DEFAULT_SERIES_TEXT, np.linspace(0, 1, 16))],
        post_prompt="Predict the trend Answer:",
        answer=f"{label} " + {"(a)": "upward trend", "(b)": "downward trend", "(c)": "no trend"}[label],
        label=label,
        metadata={"options": ["upward trend", "downward trend", "no trend"]},
    )


def test_tsqa_empty_and_prefix_predictions_are_wrong():
    records = [tsqa_record(i, label) for i, label in enumerate(["(a)", "(b)", "(c)", "(a)"])]
    predictions = ["", "(", "(c) no trend", "(a"]
    metrics = compute_metrics("tsqa", predictions, [r["answer"] for r in records], records)
    assert metrics["accuracy"] == pytest.approx(1 / 4)
    assert metrics["labels"] == ["(a)", "(b)", "(c)"]
    # Upstream's `gold.startswith(pred)` would have counted "", "(" and "(a" as correct: 4/4.


def cot_record(task: str, index: int, label: str, answer: str, **metadata) -> dict:
    return make_record(
        id=f"{task}-{index}",
        task=task,
        pre_prompt="Classify.",
        time_series=[(DEFAULT_SERIES_TEXT, np.sin(np.arange(12) + index))],
        post_prompt="Rationale:",
        answer=answer,
        label=label,
        metadata=metadata,
    )


def test_cot_gold_comes_from_the_label_field_and_sleep_is_canonicalised():
    labels = ["Non-REM stage 4", "REM sleep", "Wake", "Non-REM stage 2"]
    # The rationales end in misleading text: the label field is what counts.
    records = [cot_record("sleep_cot", i, label, "Answer: Movement") for i, label in enumerate(labels)]
    predictions = ["... Answer: NREM stage 3.", "Answer: non-rem sleep", "Answer:awake<eos>", "no marker at all"]
    metrics = compute_metrics("sleep_cot", predictions, [r["answer"] for r in records], records)
    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["labels"] == ["non-rem stage 2", "non-rem stage 3", "rem sleep", "wake"]
    assert metrics["num_out_of_vocabulary"] == 2 and metrics["num_missing_answer_marker"] == 1
    # stage 3 and wake are right (F1 1 each); rem sleep and stage 2 are missed (F1 0 each).
    assert metrics["macro_f1"] == pytest.approx(0.5)


def test_har_labels_match_up_to_separators():
    records = [cot_record("har_cot", i, label, f"Answer: {label}") for i, label in enumerate(["walking_up", "lying"])]
    metrics = compute_metrics(
        "har_cot", ["Answer: walking up", "Answer: Lying."], [r["answer"] for r in records], records
    )
    assert metrics["accuracy"] == 1.0 and metrics["macro_f1"] == 1.0
    samples = evaluation.score_samples("har_cot", ["Answer: walking up"], ["Answer: walking_up"], records[:1])
    assert samples[0]["parsed_prediction"] == "walking_up" and samples[0]["correct"] is True


def test_a_part_of_a_split_is_scored_against_the_whole_splits_classes():
    split = [cot_record("har_cot", i, label, f"Answer: {label}") for i, label in enumerate(["standing", "walking"])]
    labels = evaluation.split_labels(split)
    assert labels == ["standing", "walking"] and evaluation.split_labels([{"label": ""}]) is None
    # Only the first record is evaluated: "walking" is a wrong answer, not an unknown one.
    alone = compute_metrics("har_cot", ["Answer: walking"], [split[0]["answer"]], split[:1])
    scored = compute_metrics("har_cot", ["Answer: walking"], [split[0]["answer"]], split[:1], labels=labels)
    assert alone["num_out_of_vocabulary"] == 1 and scored["num_out_of_vocabulary"] == 0
    assert scored["accuracy"] == 0.0


def test_ecg_per_template_accuracy_and_weighted_macro_f1():
    rate = {"template_id": 1, "possible_answers": ["bradycardia", "normal", "tachycardia"]}
    rhythm = {"template_id": 2, "possible_answers": ["regular", "irregular"]}
    specs = [
        ("tachycardia", rate, "Answer: tachycardia"),
        ("normal", rate, "Answer: Normal."),
        ("normal", rate, "Answer: bradycardia"),
        ("regular", rhythm, "Answer: regular"),
    ]
    records = [
        cot_record("ecg_qa_cot", i, label, f"Answer: {label}", **meta) for i, (label, meta, _) in enumerate(specs)
    ]
    metrics = compute_metrics("ecg_qa_cot", [s[2] for s in specs], [r["answer"] for r in records], records)
    template_1, template_2 = metrics["per_template"]["1"], metrics["per_template"]["2"]
    assert template_1["accuracy"] == pytest.approx(2 / 3) and template_2["accuracy"] == 1.0
    # Template 1 over its 3 answers: bradycardia F1 0 (1 fp), normal P 1 R 1/2 F1 2/3, tachycardia F1 1 → 5/9.
    # Template 2 over its 2 answers: regular F1 1, irregular F1 0 → 1/2.
    assert template_1["macro_f1"] == pytest.approx(5 / 9) and template_2["macro_f1"] == pytest.approx(1 / 2)
    assert metrics["macro_f1"] == pytest.approx((3 * 5 / 9 + 1 * 1 / 2) / 4)
    assert metrics["macro_f1_unweighted"] == pytest.approx((5 / 9 + 1 / 2) / 2)
    assert metrics["accuracy"] == pytest.approx(3 / 4)
    assert metrics["template_accuracy_mean"] == pytest.approx((2 / 3 + 1) / 2)


def test_captioning_metrics():
    references = ["the series rises steadily and then falls sharply", "a flat series with small noise around zero"]
    metrics = compute_metrics("m4", list(references), references)
    assert metrics["bleu"] == pytest.approx(100) and metrics["rougeL"] == pytest.approx(1.0)
    assert metrics["length_ratio"] == pytest.approx(1.0)
    short = compute_metrics("m4", ["the series rises", "flat"], references)
    assert short["length_ratio"] == pytest.approx(4 / 16) and short["rougeL"] < 1


def forecast_record(index: int, future: list[list[float]]) -> dict:
    steps = np.asarray(future).T
    return make_record(
        id=f"forecast-{index}",
        task="forecast",
        pre_prompt="Forecast.",
        time_series=[(DEFAULT_SERIES_TEXT, np.arange(8.0)), (DEFAULT_SERIES_TEXT, np.arange(8.0))],
        post_prompt="Forecast:",
        answer=";".join(",".join(f"{v:.3f}" for v in step) for step in steps),
        metadata={"future": future},
    )


def test_forecast_mse_mae_and_unparsable_count():
    records = [forecast_record(0, [[1.0, 2.0], [3.0, 4.0]]), forecast_record(1, [[0.0, 0.0], [0.0, 0.0]])]
    predictions = ["1.0,3.0;3.0,5.0<|im_end|>", "garbage"]
    metrics = compute_metrics("forecast", predictions, [r["answer"] for r in records], records)
    # Prediction 0: steps (1,3), (3,5) vs truth (1,3), (2,4): errors 0, 0, 1, 1.
    assert metrics["mse"] == pytest.approx(0.5) and metrics["mae"] == pytest.approx(0.5)
    assert metrics["num_unparsable"] == 1 and metrics["num_samples"] == 2
    too_short = compute_metrics("forecast", ["1.0,3.0", "0,0;0,0;9,9"], [r["answer"] for r in records], records)
    assert too_short["num_unparsable"] == 1 and too_short["mse"] == 0.0


def test_unknown_task_names_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown task 'weather'.*'har_cot'.*'tsqa'"):
        compute_metrics("weather", ["x"], ["y"])


# ---------------------------------------------------------------------------------------------------------------------
# Generation with a tiny random OpenTSLM model
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processor():
    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    return OpenTSLMProcessor(tokenizer=tokenizer)


@pytest.fixture(scope="module")
def model(processor):
    torch.manual_seed(0)
    config = OpenTSLMConfig(
        text_config=tiny_text_config("llama", len(processor.tokenizer)),
        encoder_config=TINY_ENCODER,
        ts_token_id=processor.ts_token_id,
    )
    return OpenTSLMForCausalLM(config).eval()


def caption_records(count: int = 5) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        make_record(
            id=f"caption-{i}",
            task="m4",
            pre_prompt="You are an expert in time series analysis.",
            time_series=[(DEFAULT_SERIES_TEXT, rng.normal(size=int(rng.integers(9, 30))))],
            post_prompt="Please generate a detailed caption for this time-series.",
            answer="The series rises steadily" if i % 2 else "The series falls sharply",
        )
        for i in range(count)
    ]


def test_evaluate_records_writes_metrics_and_predictions(tmp_path, model, processor):
    records = caption_records()
    metrics = evaluate_records(model, processor, records, "m4", tmp_path, batch_size=2, max_new_tokens=6)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert {"bleu", "rougeL", "length_ratio", "test_loss", "test_perplexity"} <= set(written)
    assert written["test_perplexity"] == pytest.approx(math.exp(written["test_loss"]))
    assert written["decoding"]["do_sample"] is False and written["num_samples"] == len(records)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    assert all({"id", "prompt", "reference", "prediction"} <= set(row) for row in rows)
    assert rows[1]["reference"] == "The series rises steadily" and "<ts>" in rows[0]["prompt"]


def test_predictions_file_holds_parsed_prediction_and_label(tmp_path, model, processor):
    records = [tsqa_record(i, label) for i, label in enumerate(["(a)", "(b)", "(c)"])]
    metrics = evaluate_records(model, processor, records, output_dir=tmp_path, max_new_tokens=3, with_loss=False)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [row["label"] for row in rows] == ["(a)", "(b)", "(c)"]
    assert all({"parsed_prediction", "correct"} <= set(row) for row in rows)
    assert metrics["task"] == "tsqa" and "test_loss" not in metrics
    assert metrics["accuracy"] == pytest.approx(np.mean([row["correct"] for row in rows]))


def test_batched_generation_equals_one_by_one(model, processor):
    records = caption_records(4)
    batched = generate_predictions(model, processor, records, batch_size=4, max_new_tokens=5)
    single = generate_predictions(model, processor, records, batch_size=1, max_new_tokens=5)
    assert [row["prediction"] for row in batched] == [row["prediction"] for row in single]


def test_decoding_is_explicit_not_inherited_from_generation_config(model, processor):
    """A model whose generation_config samples still decodes greedily unless sampling is asked for."""
    records = caption_records(3)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 5.0
    model.generation_config.top_k = 1
    model.generation_config.repetition_penalty = 3.0
    try:
        first = generate_predictions(model, processor, records, batch_size=3, max_new_tokens=8, seed=0)
        second = generate_predictions(model, processor, records, batch_size=3, max_new_tokens=8, seed=1)
        assert [r["prediction"] for r in first] == [r["prediction"] for r in second]
        # ...and the greedy output is the argmax path of the model, with no repetition penalty applied.
        inputs = encode_prompts(processor, records[:1])
        ids = inputs["input_ids"]
        expected = []
        with torch.no_grad():
            for _ in range(8):
                logits = model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids)}).logits
                token = int(logits[0, -1].argmax())
                if token == processor.tokenizer.eos_token_id:
                    break
                expected.append(token)
                ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
        assert first[0]["prediction"] == processor.tokenizer.decode(expected, skip_special_tokens=True)
        # Sampling, when asked for, changes with the seed (so the check above could fail); the model's top_k=1, which
        # would make sampling greedy, is not inherited either.
        sampled = [
            generate_predictions(
                model, processor, records, batch_size=3, max_new_tokens=8, do_sample=True, temperature=5.0, seed=s
            )
            for s in (0, 1)
        ]
        assert [r["prediction"] for r in sampled[0]] != [r["prediction"] for r in sampled[1]]
    finally:
        model.generation_config.do_sample = False
        model.generation_config.temperature = None
        model.generation_config.top_k = None
        model.generation_config.repetition_penalty = None


def test_sampling_arguments_without_do_sample_are_refused(model, processor):
    with pytest.raises(ValueError, match="only apply when sampling"):
        generate_predictions(model, processor, caption_records(1), max_new_tokens=2, top_p=0.9)


def test_test_loss_is_the_mean_over_answer_tokens(model, processor):
    records = caption_records(3)
    together = evaluation.test_loss(model, processor, records, batch_size=3)
    parts = [evaluation.test_loss(model, processor, [record], batch_size=1) for record in records]
    mean = sum(p["loss"] * p["num_tokens"] for p in parts) / sum(p["num_tokens"] for p in parts)
    assert together["loss"] == pytest.approx(mean, rel=1e-5)
    assert together["perplexity"] == pytest.approx(math.exp(together["loss"]))


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------
def test_cli_help():
    result = subprocess.run(
        [sys.executable, "-m", "recipes.run_eval", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "--model_path" in result.stdout and "--max_new_tokens" in result.stdout


def test_cli_evaluates_a_saved_model_on_a_saved_dataset(tmp_path, model, processor):
    from recipes.run_eval import main

    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = save_toy_records(tmp_path / "data", sizes=(2, 2, 3))
    out = tmp_path / "eval"
    metrics = main(
        ["--model_path", str(tmp_path / "model"), "--dataset", data, "--split", "test", "--output_dir", str(out)]
        + ["--max_samples", "2", "--batch_size", "2", "--max_new_tokens", "4"]
    )
    assert metrics["task"] == "m4" and metrics["num_samples"] == 2
    assert (out / "metrics.json").exists() and len((out / "predictions.jsonl").read_text().splitlines()) == 2
