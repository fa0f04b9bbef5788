"""The expected best-of-N estimator of benchmarks/best_of_n_pool.py against brute force over all N-subsets."""

from __future__ import annotations

import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmark_runner import run_benchmark

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from bench_search import prompt_seed  # noqa: E402
from best_of_n_pool import expected_max  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_expected_max_is_the_mean_max_over_all_subsets(n):
    values = list(np.random.default_rng(n).random(7).round(2))  # rounding makes ties
    brute = statistics.mean(max(subset) for subset in itertools.combinations(values, n))
    assert expected_max(values, n) == pytest.approx(brute)


def test_expected_max_of_one_is_the_mean_and_of_all_is_the_max():
    values = [0.3, 0.1, 0.9, 0.5]
    assert expected_max(values, 1) == pytest.approx(statistics.mean(values))
    assert expected_max(values, len(values)) == pytest.approx(0.9)


def test_prompt_seeds_differ_across_prompts_and_base_seeds():
    seeds = {prompt_seed(base, index) for base in range(3) for index in range(500)}
    assert len(seeds) == 1500


def _bench(path: Path, split: str, rewards: dict[str, float]) -> Path:
    settings = {"split": split, "prompts": len(rewards), "seed": 0}
    rows = [
        {"task": "forecast", "method": "maxent_ts", "budget": 2, "id": i, "reward": r, "token_evals": 10}
        for i, r in rewards.items()
    ]
    path.write_text(json.dumps({"settings": settings, "rows": rows}))
    return path


def _pool(path: Path, pools: dict[str, list[float]]) -> Path:
    prompts = {i: {"tokens_per_sample": 5.0, "pool_rewards": values} for i, values in pools.items()}
    path.write_text(json.dumps({"pool": 3, "seed": 1, "prompts": prompts}))
    return path


def test_pools_of_two_prompt_sets_are_merged_and_every_prompt_needs_one(tmp_path):
    test = _bench(tmp_path / "test.json", "test", {"a": 0.5, "b": 0.9})
    train = _bench(tmp_path / "train.json", "train", {"c": 0.4})
    test_pool = _pool(tmp_path / "test_pool.json", {"a": [0.1, 0.2, 0.3], "b": [0.5, 0.6, 0.7]})
    train_pool = _pool(tmp_path / "train_pool.json", {"c": [0.4, 0.4, 1.0]})
    output = tmp_path / "both.json"
    done = run_benchmark("best_of_n_pool.py", test, train, "--reuse", test_pool, train_pool, "--output", output)
    assert done.returncode == 0, done.stderr
    (entry,) = json.loads(output.read_text())["summary"]
    expected = [
        0.5 - expected_max([0.1, 0.2, 0.3], 2),
        0.9 - expected_max([0.5, 0.6, 0.7], 2),
        0.4 - 0.8,  # c: the pairs of [0.4, 0.4, 1.0] have maxima 0.4, 1 and 1
    ]
    assert entry["prompts"] == 3 and entry["diff"] == pytest.approx(statistics.mean(expected))

    done = run_benchmark("best_of_n_pool.py", test, train, "--reuse", test_pool, "--output", output)
    assert done.returncode != 0 and "no pool for the prompts ['c']" in done.stderr
    done = run_benchmark("best_of_n_pool.py", test, train, "--output", output)
    assert done.returncode != 0 and "use different prompts" in done.stderr
