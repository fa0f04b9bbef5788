"""benchmarks/bench_memory.py end to end on a tiny random model: every variant and shape gives a row and a summary."""

from __future__ import annotations

import json

import pytest
from benchmark_runner import run_benchmark

pytestmark = pytest.mark.slow


def test_bench_memory_runs_and_writes_every_row(tmp_path):
    output = tmp_path / "bench_memory.json"
    done = run_benchmark(
        "bench_memory.py", "--tiny", "--shapes", "1024,4096", "--new_tokens", "4", "--repeats", "1", "--output", output
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    rows = {(row["variant"], row["shape"]): row for row in result["train_steps"]}
    assert set(rows) == {(v, s) for v in ("sp", "flamingo") for s in ("1024", "4096")}
    # SP writes one token per patch, Flamingo one marker per series: only SP's prompt grows with the series.
    assert rows[("sp", "4096")]["tokens"] > rows[("sp", "1024")]["tokens"] + 700
    assert rows[("flamingo", "4096")]["tokens"] == rows[("flamingo", "1024")]["tokens"]
    assert all(row["peak_mb"] > 0 and row["s_per_step"] > 0 for row in rows.values())
    assert result["summary"]["flamingo_peak_growth_1024_to_4096"] > 0
    for variant in ("sp", "flamingo"):
        assert result["decode"][variant]["tokens_per_s"] > 0 and result["decode"][variant]["ratio_median"] > 0
    assert "flamingo_peak_growth_1024_to_4096" in done.stdout
