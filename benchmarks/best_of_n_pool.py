"""A low-variance best-of-N reference for `bench_search.py`: the expected best-of-N reward from a pool of samples.

One best-of-N run per prompt and budget is a single draw of max(r_1..r_N), so paired differences with MaxEnt-TS are
dominated by best-of-N's own luck. This script draws a pool of M > N samples per prompt (the same prompts, proposal and
stop condition as the bench) and uses the unbiased estimator of E[max of N] over all N-subsets of the pool
(sorted rewards r_(1) <= ... <= r_(M)):

    E[max of N] = sum_{i=N..M} C(i-1, N-1) / C(M, N) * r_(i)

It then pairs each MaxEnt-TS row of a bench result file with that expectation (MaxEnt-TS minus expected best-of-N,
mean ± standard error over prompts) and reports the expected token cost of best-of-N (N times the pool's mean).

    OMP_NUM_THREADS=1 python benchmarks/best_of_n_pool.py benchmarks/results/bench_search_forecast.json
    # MaxEnt-TS averaged over three bench seeds, against the pool drawn above:
    python benchmarks/best_of_n_pool.py benchmarks/results/bench_search_forecast{,_seed2,_seed3}.json \\
        --reuse benchmarks/results/bench_search_forecast_pool.json --output benchmarks/results/bench_search_forecast_seeds_pool.json
    # two prompt sets (test and train splits), each with the pool drawn for it:
    python benchmarks/best_of_n_pool.py benchmarks/results/bench_search_forecast{,_seed2,_seed3}.json \\
        benchmarks/results/bench_search_forecast_train{,_seed2,_seed3}.json \\
        --reuse benchmarks/results/bench_search_forecast{,_train}_pool.json \\
        --output benchmarks/results/bench_search_forecast_40_pool.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from math import comb
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_search import build_tasks, encode_prompt, load_smollm2, prompt_seed  # noqa: E402

from maxent_ts import best_of_n_generate  # noqa: E402


def expected_max(values: list[float], n: int) -> float:
    """Unbiased estimate of E[max of n i.i.d. draws] from a pool of ``len(values)`` >= n draws."""
    ordered = sorted(values)
    total = comb(len(ordered), n)
    return sum(comb(i - 1, n - 1) * ordered[i - 1] for i in range(n, len(ordered) + 1)) / total


class RecordingReward:
    """Wraps a reward and keeps every value it returns."""

    def __init__(self, reward):
        self.reward, self.values = reward, []

    def __call__(self, texts, context):
        values = list(self.reward(texts, context))
        self.values.extend(values)
        return values


def draw_pools(settings: dict, task_name: str, pool: int, seed: int) -> dict[str, dict]:
    """``pool`` best-of-N samples for each prompt of the bench: their rewards and the token evaluations per sample."""
    tokenizer, model = load_smollm2()
    pools = {}
    for index, task in enumerate(build_tasks(task_name, settings)):
        recorder = RecordingReward(task["reward"])
        out = best_of_n_generate(
            model,
            encode_prompt(tokenizer, task),
            recorder,
            n=pool,
            temperature=1.0,
            seed=prompt_seed(seed, index),
            max_new_tokens=settings["max_new_tokens"],
            tokenizer=tokenizer,
            stop_condition=task.get("stop"),
        )
        stats = out.stats[0]
        pools[task["id"]] = {
            "tokens_per_sample": (stats.tokens_processed - stats.prompt_tokens) / pool,
            "pool_rewards": recorder.values,
        }
        print(f"{task['id'][-28:]:28} pool mean {statistics.mean(recorder.values):.3f} max {max(recorder.values):.3f}")
    return pools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "bench_json",
        nargs="+",
        help="result files of bench_search.py for one task (e.g. runs with several --seed); MaxEnt-TS is averaged "
        "per prompt over them. Files of other prompt sets (another --split) need --reuse with a pool of each set",
    )
    parser.add_argument("--pool", type=int, default=64, help="samples per prompt")
    parser.add_argument("--seed", type=int, default=1, help="not a bench seed: the pool must be a fresh draw")
    parser.add_argument(
        "--reuse",
        nargs="+",
        default=None,
        help="files this script wrote: pair with their pools (one per prompt set, merged), draw nothing",
    )
    parser.add_argument("--output", default=None, help="default: <first bench_json stem>_pool.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    benches = [json.loads(Path(path).read_text()) for path in args.bench_json]
    settings = benches[0]["settings"]
    rows = [row for bench in benches for row in bench["rows"]]
    tasks = set(r["task"] for r in rows)
    if len(tasks) != 1:
        raise SystemExit(f"{args.bench_json} hold the tasks {sorted(tasks)}; give files of one task.")
    task_name = tasks.pop()
    if any(b["settings"]["seed"] == args.seed for b in benches) and args.reuse is None:
        raise SystemExit(f"a bench ran with --seed {args.seed}; give the pool another --seed so the draws differ.")
    budgets = sorted({r["budget"] for r in rows if r["method"] == "maxent_ts"})
    if args.reuse:
        earlier = [json.loads(Path(path).read_text()) for path in args.reuse]
        if len({e["pool"] for e in earlier}) != 1:
            raise SystemExit(f"the pools of {args.reuse} have different sizes; give pools of one size.")
        pools = {prompt: entry for e in earlier for prompt, entry in e["prompts"].items()}
        args.pool = earlier[0]["pool"]
        seeds = sorted({e["seed"] for e in earlier})
        args.seed = seeds[0] if len(seeds) == 1 else seeds
    else:
        prompt_sets = {(b["settings"]["split"], b["settings"]["prompts"]) for b in benches}
        if len(prompt_sets) != 1:
            raise SystemExit(
                f"{args.bench_json} use different prompts {sorted(prompt_sets)}: draw a pool for each set, then "
                "pair them all with --reuse."
            )
        pools = draw_pools(settings, task_name, args.pool, args.seed)
    missing = sorted({r["id"] for r in rows if r["method"] == "maxent_ts"} - set(pools))
    if missing:
        raise SystemExit(f"no pool for the prompts {missing[:5]} ({len(missing)} in all): --reuse a pool with them.")
    if max(budgets) > args.pool:
        raise SystemExit(f"the pool of {args.pool} is smaller than the largest budget {max(budgets)}.")
    for entry in pools.values():
        entry["expected_best_of_n"] = {n: expected_max(entry["pool_rewards"], n) for n in budgets}

    summary = []
    print(f"\n{'N':>3}{'E[best-of-N]':>14}{'MaxEnt-TS':>11}{'diff ± s.e.':>18}{'W/L':>7}{'tokens BoN/MXT':>17}")
    for n in budgets:
        runs: dict[str, list[dict]] = {}
        for r in rows:
            if r["method"] == "maxent_ts" and r["budget"] == n:
                runs.setdefault(r["id"], []).append(r)
        mxt = {i: statistics.mean(r["reward"] for r in group) for i, group in runs.items()}
        diffs = [mxt[i] - pools[i]["expected_best_of_n"][n] for i in mxt]
        entry = {
            "budget": n,
            "prompts": len(diffs),
            "maxent_ts_runs_per_prompt": statistics.mean(len(group) for group in runs.values()),
            "expected_best_of_n": statistics.mean(pools[i]["expected_best_of_n"][n] for i in mxt),
            "maxent_ts": statistics.mean(mxt.values()),
            "diff": statistics.mean(diffs),
            "diff_stderr": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan"),
            "wins": sum(d > 0 for d in diffs),
            "losses": sum(d < 0 for d in diffs),
            "best_of_n_tokens": statistics.mean(n * pools[i]["tokens_per_sample"] for i in mxt),
            "maxent_ts_tokens": statistics.mean(r["token_evals"] for group in runs.values() for r in group),
        }
        summary.append(entry)
        print(
            f"{n:>3}{entry['expected_best_of_n']:>14.3f}{entry['maxent_ts']:>11.3f}"
            f"{entry['diff']:>+11.3f} ± {entry['diff_stderr']:.3f}{entry['wins']:>4}/{entry['losses']:<3}"
            f"{entry['best_of_n_tokens']:>9.0f} / {entry['maxent_ts_tokens']:.0f}"
        )
    first = Path(args.bench_json[0])
    output = Path(args.output or first.with_name(first.stem + "_pool.json"))
    result = {"bench": args.bench_json, "task": task_name, "pool": args.pool, "seed": args.seed, "summary": summary}
    output.write_text(json.dumps({**result, "prompts": pools}, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
