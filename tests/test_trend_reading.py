"""benchmarks/trend_reading.py: its five held-out sets, and a run end to end on a tiny random model."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from benchmark_runner import ROOT, run_benchmark
from datasets import load_from_disk
from tiny import tiny_opentslm, tiny_processor

from opentslm_hub import features as F
from opentslm_hub.parsing import read_caption_facts


def load_script():
    spec = importlib.util.spec_from_file_location("trend_reading", ROOT / "benchmarks" / "trend_reading.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sets_reverse_the_series_and_recompute_every_answer(tmp_path):
    bench = load_script()
    sets = {name: load_from_disk(str(path))["test"] for name, path in bench.build_sets(tmp_path).items()}
    forward, backward = sets["captions, forward"], sets["captions, reversed"]
    assert len(forward) == len(backward) == len(sets["trend questions, reversed"]) > 30
    flipped = 0
    for before, after, question in zip(forward, backward, sets["trend questions, reversed"]):
        values = np.asarray(before["time_series"][0]["values"])
        assert np.array_equal(np.asarray(after["time_series"][0]["values"]), values[::-1])
        assert after["pre_prompt"] == before["pre_prompt"] and after["post_prompt"] == before["post_prompt"]
        direction = F.linear_trend(values[::-1]).direction
        assert read_caption_facts(after["answer"]).trend == direction
        assert bench.stated_direction("trend questions", question["answer"]) == direction
        assert question["answer"].endswith(question["label"])
        flipped += direction != F.linear_trend(values).direction
    assert flipped >= 10  # the rising co2 windows fall when reversed
    synthetic = [read_caption_facts(row["answer"]).trend for row in sets["captions, synthetic"]]
    assert len(synthetic) == 90 and min(synthetic.count(d) for d in ("increasing", "decreasing", "flat")) > 20
    assert bench.stated_direction("trend questions", "constant trend (c)") == "flat"
    assert bench.stated_direction("trend questions", "upward trend or downward trend") is None


@pytest.mark.slow
def test_trend_reading_runs_on_a_tiny_model(tmp_path):
    processor = tiny_processor(use_chat_template=True)
    tiny_opentslm(processor).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    output = tmp_path / "trend_reading.json"
    done = run_benchmark("trend_reading.py", "--model_path", tmp_path / "model", "--output", output)
    assert done.returncode == 0, done.stderr[-3000:]
    sets = json.loads(output.read_text())["sets"]
    assert list(sets) == [
        "captions, forward",
        "captions, reversed",
        "trend questions, forward",
        "trend questions, reversed",
        "captions, synthetic",
    ]
    for row in sets.values():
        assert row["records"] == sum(row["stated"].values()) > 30 and 0 <= row["trend_accuracy"] <= 1
    assert "trend questions, reversed" in done.stdout
