"""benchmarks/baselines.py end to end at its smallest budget: every method gives a row, the page shows them all."""

from __future__ import annotations

import json

import pytest
from benchmark_runner import run_benchmark

pytestmark = pytest.mark.slow


def test_baselines_smallest_budget_runs_every_method(tmp_path):
    output = tmp_path / "baselines.json"
    done = run_benchmark("baselines.py", "--budget", "smallest", "--output", output)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    rows = {(row["task"], row["method"]): row for row in result["rows"]}
    assert set(rows) == {
        ("lotka_volterra", "last_value"),
        ("lotka_volterra", "statsmodels_arima"),
        ("lotka_volterra", "llmtime_lora"),
        ("lotka_volterra", "opentslm_sp"),
        ("ou_annotation", "two_digit_lora"),
        ("ou_annotation", "opentslm_sp"),
    }
    for (task, _), row in rows.items():
        if row["llm"] is None:
            assert row["train_flops"] == 0 and row["scores"]["num_unparsable"] == 0
            assert row["scores"]["mse"] >= 0
            continue
        # 6·N·T over what was trained on, and a forward pass per series at inference.
        assert row["train_flops"] == 6 * row["total_parameters"] * row["train_tokens"]
        assert row["inference_flops_per_series"] > 2 * row["total_parameters"] * 10
        assert 0 < row["trained_parameters"] < row["total_parameters"]
        if task == "ou_annotation":
            assert 0 <= row["scores"]["trend_agreement"] <= 1 and -1 <= row["scores"]["cosine_similarity"] <= 1
    # The LoRA adapters are the same in every LLM row; OpenTSLM-SP trains its encoder and projector on top.
    assert (
        rows[("lotka_volterra", "opentslm_sp")]["trained_parameters"]
        > rows[("lotka_volterra", "llmtime_lora")]["trained_parameters"]
    )
    page = output.with_suffix(".md").read_text()
    assert "| llmtime_lora | SmolLM2-135M-Instruct |" in page and "| two_digit_lora |" in page
    assert "statsmodels_arima" in done.stdout

    notes = tmp_path / "notes.md"
    notes.write_text("What the table shows.")
    again = run_benchmark("baselines.py", "--render", output, "--notes", notes)
    assert again.returncode == 0, again.stderr[-3000:]
    assert output.with_suffix(".md").read_text().rstrip().endswith("What the table shows.")
