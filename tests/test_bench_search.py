"""benchmarks/bench_search.py and best_of_n_pool.py end to end on the real SmolLM2, at the smallest sizes."""

from __future__ import annotations

import json

import pytest
from benchmark_runner import run_benchmark

from maxent_ts import MaxEntTSConfig

pytestmark = pytest.mark.slow


def run_script(script: str, *args: str) -> None:
    done = run_benchmark(script, *args)
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def bench(tmp_path_factory, smollm2_dir):
    output = tmp_path_factory.mktemp("bench") / "bench.json"
    run_script(
        "bench_search.py",
        *("--tasks", "forecast", "caption", "--prompts", "1", "--budgets", "2", "--max_new_tokens", "16"),
        *("--split", "validation", "--output", str(output)),
    )
    return output


def test_bench_search_runs_every_method_and_keeps_maxent_ts_within_best_of_n_tokens(bench):
    result = json.loads(bench.read_text())
    assert bench.with_suffix(".png").stat().st_size > 0
    rows = result["rows"]
    for task in ("forecast", "caption"):
        methods = {r["method"]: r for r in rows if r["task"] == task}
        assert set(methods) == {"greedy", "nucleus", "beam", "best_of_n", "maxent_ts"}
        assert methods["maxent_ts"]["token_evals"] <= methods["best_of_n"]["token_evals"]
        assert all(0.0 <= r["reward"] <= 1.0 and r["generated_tokens"] <= 16 for r in methods.values())
    forecast = next(r for r in rows if r["task"] == "forecast")
    assert {"mae", "mse", "parsed"} <= set(forecast)
    assert {(s["task"], s["method"]) for s in result["summary"]} >= {("caption", "maxent_ts"), ("forecast", "beam")}
    assert MaxEntTSConfig.from_dict(result["settings"]["search_config"]) == MaxEntTSConfig()  # the defaults ran


def test_best_of_n_pool_pairs_maxent_ts_with_the_expected_best_of_n(bench, tmp_path):
    forecast_only = tmp_path / "forecast.json"
    result = json.loads(bench.read_text())
    result["rows"] = [r for r in result["rows"] if r["task"] == "forecast"]
    forecast_only.write_text(json.dumps(result))
    output = tmp_path / "pool.json"
    run_script("best_of_n_pool.py", str(forecast_only), "--pool", "3", "--output", str(output))
    pool = json.loads(output.read_text())
    (entry,) = pool["summary"]
    prompt = next(iter(pool["prompts"].values()))
    assert len(prompt["pool_rewards"]) == 3 and entry["budget"] == 2
    maxent_ts = next(r["reward"] for r in result["rows"] if r["method"] == "maxent_ts")
    assert entry["diff"] == pytest.approx(maxent_ts - prompt["expected_best_of_n"]["2"])
