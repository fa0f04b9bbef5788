"""The expected best-of-N estimator of benchmarks/best_of_n_pool.py against brute force over all N-subsets."""

from __future__ import annotations

import itertools
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

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
