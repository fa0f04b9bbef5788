"""benchmarks/bench_vs_original.py without the original, on a tiny random LLM: every row and variant is measured and
the ratios to the original are reported as missing."""

from __future__ import annotations

import json

import pytest
from benchmark_runner import run_benchmark
from tiny import save_tiny_llm

pytestmark = pytest.mark.slow


def test_bench_vs_original_runs_ours_alone(tmp_path):
    output = tmp_path / "bench_vs_original.json"
    done = run_benchmark(
        "bench_vs_original.py",
        *("--llm", save_tiny_llm(tmp_path / "llm"), "--rows", "mix16-48,ecg12x16", "--batch_size", "2"),
        *("--warmup", "0", "--steps", "1", "--threads", "1", "--padded", "--decode_tokens", "2", "--decode_reps", "1"),
        *("--output", output),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratios to the original are missing" in done.stdout
    result = json.loads(output.read_text())
    lines = {line["row"]: line for line in result["table"]}
    assert set(lines) == {"mix16-48", "ecg12x16"}
    for line in lines.values():
        assert line["ours_samples_per_s"] > 0 and line["ours_padded_samples_per_s"] > 0 and line["ours_peak_mb"] > 0
        assert line["speed_ratio"] is None and line["ours_decode_vs_bare"] > 0
    packed = {run["row"]: run["result"] for run in result["runs"] if run["name"] == "ours"}
    padded = {run["row"]: run["result"] for run in result["runs"] if run["name"] == "ours_padded"}
    assert packed["mix16-48"]["tokens"] < padded["mix16-48"]["tokens"]  # no padding in the packed batch
    for row in lines:  # the same rows, the same initial weights: the same first loss
        assert packed[row]["losses"][0] == pytest.approx(padded[row]["losses"][0], abs=1e-4)
    assert "| mix16-48 | float32 | missing |" in done.stdout
