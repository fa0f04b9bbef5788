"""MaxEnt-TS against greedy, beam, nucleus and best-of-N at equal compute, with the real SmolLM2-135M-Instruct.

Two held-out offline tasks, prompts as text with the numbers written out (LLMTime-style):

- forecasting: the prey channel of the Lotka–Volterra test split (`hub_datasets.synthetic`): the last ``history``
  steps written as ``1.23, 1.31, ...,`` are the whole prompt and the model continues the list; the first
  ``horizon`` numbers are the forecast; reward `SpectralReward`, task metric MAE against the true continuation;
- captioning: the test split of `hub_datasets.bundled.build_captions_bundled` (windows of real series); reward
  `FeatureConsistencyReward`, task metrics ROUGE-L F1 against the reference caption and claim accuracy.

For each budget N, best-of-N draws N samples from the proposal p̃ (temperature 1, no nucleus); MaxEnt-TS gets the
same number of token evaluations after the prompt (``token_budget``); beam search uses N beams. Greedy and nucleus
(p = 0.9, the mean reward over N samples, i.e. one sample's expected reward) are single-sample references.
"Equal NFE" here is NFE per sequence position (token evaluations): best-of-N evaluates its N rows in one batched call
per position, so its forward *calls* are fewer; both counts are reported.

    python benchmarks/bench_search.py --prompts 1 --budgets 4     # a smoke run
    # the committed results, one process per task (about 35 minutes side by side on 2 cores):
    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --tasks forecast --prompts 20 \
        --output benchmarks/results/bench_search_forecast.json
    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --tasks caption --prompts 16 \
        --output benchmarks/results/bench_search_caption.json
    # MaxEnt-TS (and the best-of-N run that sets its token budget) only: 20 more forecasts that no setting was
    # chosen on, and the test split at N = 32 (about 20 minutes each)
    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --tasks forecast --prompts 20 --split train \
        --methods maxent_ts --output benchmarks/results/bench_search_forecast_train.json
    OMP_NUM_THREADS=1 python benchmarks/bench_search.py --tasks forecast --prompts 20 --budgets 32 \
        --methods maxent_ts --output benchmarks/results/bench_search_forecast_n32.json
    # bench_search_caption_train.json: --tasks caption --prompts 16 --split train --methods maxent_ts
    # the *_seed2 / *_seed3 files: the same commands with --seed 2 / --seed 3 (and --methods maxent_ts)

MaxEnt-TS runs with the defaults of `MaxEntTSConfig` (probability-mass widening anywhere in the tree, no cap on
children, unexplored tokens valued at the mean reward so far, ``min_branch_mass=0.02``, λ = 100: settings chosen on
the validation split; ``--search KEY=VALUE`` overrides one for tuning), ``num_rollouts = 8 N`` and best-of-N's token
count as ``token_budget``; the JSON's ``settings`` record the whole search config. Forecast outputs of every method
end once all ``horizon`` numbers are written (``SpectralReward.is_complete`` as ``stop_condition``), so no method
spends tokens that cannot change the reward. The token budget is a hard cap: MaxEnt-TS never evaluates more tokens
than best-of-N did. The summary pairs MaxEnt-TS with best-of-N on each prompt: mean difference, its standard error
and wins/ties/losses. Each prompt has its own seed, shared by every method (`prompt_seed`). `best_of_n_pool.py` adds
a lower-variance best-of-N reference to a result file.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maxent_ts import (  # noqa: E402
    FeatureConsistencyReward,
    MaxEntTSConfig,
    SpectralReward,
    beam_generate,
    best_of_n_generate,
    forecast_errors,
    greedy_generate,
    maxent_ts_generate,
    nucleus_generate,
)

METHODS = ("greedy", "nucleus", "beam", "best_of_n", "maxent_ts")


def forecast_tasks(count: int, history: int, horizon: int, split: str) -> list[dict[str, Any]]:
    from hub_datasets.synthetic import build_lotka_volterra_forecast

    test = build_lotka_volterra_forecast()[split]
    tasks = []
    for record in test.select(range(count)):
        prey = np.asarray(record["time_series"][0]["values"], dtype=np.float64)[-history:]
        future = json.loads(record["metadata"])["future"][0][:horizon]
        # LLMTime-style: the numbers themselves are the prompt and the model continues the list
        prompt = ", ".join(f"{v:.2f}" for v in prey) + ","
        history_values = np.round(prey, 2)
        reward = SpectralReward(history=history_values, horizon=horizon)
        tasks.append(
            {
                "id": record["id"],
                "prompt": prompt,
                "chat": False,
                "reward": reward,
                "stop": reward.is_complete,  # every method stops once the forecast has all its numbers
                "metric": lambda text, h=history_values, f=future: forecast_errors(text, f, h),
            }
        )
    return tasks


def caption_tasks(count: int, split: str) -> list[dict[str, Any]]:
    from hub_datasets.bundled import build_captions_bundled

    test = build_captions_bundled()[split]
    # the shortest windows first (shorter prompts), deterministic order
    records = sorted(test, key=lambda r: (len(r["time_series"][0]["values"]), r["id"]))[:count]
    tasks = []
    for record in records:
        series = np.asarray(record["time_series"][0]["values"], dtype=np.float64)
        values = ", ".join(f"{v:.4g}" for v in series)
        prompt = (
            f"Here is a time series of {series.size} observations: {values}\n"
            "Describe it in two sentences: its overall trend (increasing, decreasing or flat), how volatile it is, "
            "whether a pattern repeats, and where its maximum and minimum occur (early, middle or late)."
        )
        reward = FeatureConsistencyReward(series=series)
        tasks.append(
            {
                "id": record["id"],
                "prompt": prompt,
                "chat": True,
                "reward": reward,
                "metric": lambda text, s=series, ref=record["answer"], r=reward: caption_metrics(text, ref, s, r),
            }
        )
    return tasks


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 of the local `rouge` metric module (`rouge-score`), the one the evaluation's captioning uses."""
    from recipes.metrics import load_metric

    scores = load_metric("rouge").compute(predictions=[candidate], references=[reference], rouge_types=["rougeL"])
    return scores["rougeL"]


def caption_metrics(text: str, reference: str, series: np.ndarray, reward: FeatureConsistencyReward) -> dict:
    scores = reward.aspect_scores(text, series)
    claimed = [v for v in scores.values() if v != reward.unclaimed]
    return {
        "rouge_l": rouge_l(text, reference),
        "claim_accuracy": sum(claimed) / len(claimed) if claimed else 0.0,
        "claims": len(claimed),
    }


def build_tasks(name: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The held-out prompts of one task, from the bench's settings (``prompts``, ``split``, ``history``, ``horizon``)."""
    if name == "forecast":
        return forecast_tasks(settings["prompts"], settings["history"], settings["horizon"], settings["split"])
    return caption_tasks(settings["prompts"], settings["split"])


def load_smollm2():
    """(tokenizer, model) of the offline SmolLM2-135M-Instruct in float32, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opentslm_hub.offline_llm import smollm2_path

    path = smollm2_path()
    return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def encode_prompt(tokenizer, task: dict[str, Any]):
    """The task's prompt as model inputs, through the chat template when the task is a chat."""
    text = task["prompt"]
    if task["chat"]:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return tokenizer(text, return_tensors="pt")


def prompt_seed(seed: int, index: int) -> int:
    """A seed per prompt. One seed for every prompt would give every prompt the same random numbers, so similar prompts
    draw similar samples and the average over prompts is nearly one draw (a lucky or unlucky stream for all)."""
    return seed * 1_000_003 + index


def run_method(method: str, model, inputs, task, budget: int, args, token_budget: int | None):
    seed = task["seed"]
    common = dict(max_new_tokens=args.max_new_tokens, tokenizer=args.tokenizer, stop_condition=task.get("stop"))
    reward = task["reward"]
    if method == "greedy":
        return greedy_generate(model, inputs, reward, **common)
    if method == "nucleus":
        samples = max(args.budgets)
        return nucleus_generate(model, inputs, reward, top_p=0.9, num_samples=samples, seed=seed, **common)
    if method == "beam":
        return beam_generate(model, inputs, reward, num_beams=budget, **common)
    if method == "best_of_n":
        return best_of_n_generate(model, inputs, reward, n=budget, temperature=1.0, seed=seed, **common)
    return maxent_ts_generate(
        model,
        inputs,
        reward,
        search_config=args.search_config,
        num_rollouts=8 * budget,
        token_budget=token_budget,
        temperature=1.0,
        seed=seed,
        **common,
    )


def search_config(overrides: list[str]) -> MaxEntTSConfig:
    """The default search config with ``KEY=VALUE`` overrides (values in JSON: ``lam=50``, ``max_depth=null``,
    ``widening="fixed"``; a bare word is a string)."""
    values = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--search takes KEY=VALUE, got {item!r}")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    try:
        return MaxEntTSConfig.from_dict(values)
    except ValueError as error:
        raise SystemExit(f"--search: {error}") from error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["forecast", "caption"], choices=["forecast", "caption"])
    parser.add_argument("--prompts", type=int, default=12, help="held-out series per task")
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16], help="N of best-of-N / beams")
    parser.add_argument("--history", type=int, default=32)
    parser.add_argument("--horizon", type=int, default=6)
    parser.add_argument("--max_new_tokens", type=int, default=40)
    parser.add_argument(
        "--search",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="MaxEnt-TS settings other than its defaults (fields of MaxEntTSConfig), e.g. lam=50 widening=fixed "
        "expansion_k=3 max_depth=5; num_rollouts and token_budget are set per budget",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "validation", "train"],
        help="validation: for tuning; train: more prompts none of the settings were chosen on (the bench's SmolLM2 "
        "was never trained on any split)",
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 is far faster on a busy 2-core machine, try 2 if idle"
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks/results/bench_search.json"))
    args = parser.parse_args()
    args.search_config = search_config(args.search)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tokenizer, model = load_smollm2()
    args.tokenizer = tokenizer
    task_sets = {name: build_tasks(name, vars(args)) for name in args.tasks}

    rows = []
    start = time.perf_counter()
    for task_name, tasks in task_sets.items():
        for index, task in enumerate(tasks):
            task["seed"] = prompt_seed(args.seed, index)  # the same for every method: paired comparisons
            inputs = encode_prompt(tokenizer, task)
            for budget in args.budgets:
                token_budget = None
                for method in METHODS:
                    if method not in args.methods and not (method == "best_of_n" and "maxent_ts" in args.methods):
                        continue
                    if method in ("greedy", "nucleus") and budget != args.budgets[0]:
                        continue  # single-sample references
                    out = run_method(method, model, inputs, task, budget, args, token_budget)
                    stats = out.stats[0]
                    if method == "best_of_n":
                        token_budget = stats.tokens_processed - stats.prompt_tokens
                    reward = stats.mean_reward if method == "nucleus" else out.rewards[0]
                    token_evals = stats.tokens_processed - stats.prompt_tokens
                    if method == "nucleus":  # one sample's expected reward, at one sample's cost
                        token_evals = round(token_evals / stats.rollouts)
                    row = {
                        "task": task_name,
                        "id": task["id"],
                        "method": method,
                        "budget": 1 if method in ("greedy", "nucleus") else budget,
                        "reward": reward,
                        "best_reward": stats.best_reward,
                        "calls": stats.nfe,
                        "token_evals": token_evals,
                        "prompt_tokens": stats.prompt_tokens,
                        "generated_tokens": stats.generated_tokens,
                        "token_cost": token_evals / max(stats.generated_tokens, 1),
                        "rollouts": stats.rollouts,
                        "tree_size": stats.tree_size,
                        "wall_time": stats.wall_time,
                        "text": out.texts[0],
                        **task["metric"](out.texts[0]),
                    }
                    rows.append(row)
                    print(
                        f"[{time.perf_counter() - start:6.0f}s] {task_name:8} {task['id'][-28:]:28} N={budget:<2} "
                        f"{method:10} reward={reward:.3f} calls={stats.nfe:4d} tokens={row['token_evals']:4d} "
                        f"{stats.wall_time:5.1f}s  {out.texts[0][:50]!r}",
                        flush=True,
                    )
    summary = summarise(rows)
    print_table(summary)
    result = {
        "model": "SmolLM2-135M-Instruct (fp32)",
        "settings": {
            **{k: v for k, v in vars(args).items() if k not in ("tokenizer", "search_config")},
            "search_config": args.search_config.to_dict(),  # num_rollouts and token_budget: per budget, as above
        },
        "summary": summary,
        "rows": rows,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "total_seconds": time.perf_counter() - start,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    plot(summary, output.with_suffix(".png"))
    print(f"wrote {output} and {output.with_suffix('.png')}")


def summarise(rows: list[dict]) -> list[dict]:
    metric_keys = {"forecast": ("mae", "parsed"), "caption": ("rouge_l", "claim_accuracy")}
    summary = []
    for task in dict.fromkeys(r["task"] for r in rows):
        plain = [r["token_cost"] for r in rows if r["task"] == task and r["method"] == "nucleus"]
        plain_cost = statistics.mean(plain) if plain else 1.0
        for method in METHODS:
            for budget in sorted({r["budget"] for r in rows if r["task"] == task and r["method"] == method}):
                chosen = [r for r in rows if r["task"] == task and r["method"] == method and r["budget"] == budget]
                entry = {
                    "task": task,
                    "method": method,
                    "budget": budget,
                    "prompts": len(chosen),
                    "reward": statistics.mean(r["reward"] for r in chosen),
                    "calls": statistics.mean(r["calls"] for r in chosen),
                    "token_evals": statistics.mean(r["token_evals"] for r in chosen),
                    "token_cost": statistics.mean(r["token_cost"] for r in chosen),
                    "token_cost_vs_sampling": statistics.mean(r["token_cost"] for r in chosen) / plain_cost,
                    "wall_time": statistics.mean(r["wall_time"] for r in chosen),
                }
                for key in metric_keys[task]:
                    entry[key] = statistics.mean(r[key] for r in chosen)
                if method == "maxent_ts":
                    entry.update(paired_with_best_of_n(rows, task, budget))
                summary.append(entry)
    return summary


def paired_with_best_of_n(rows: list[dict], task: str, budget: int) -> dict:
    """MaxEnt-TS minus best-of-N reward on the same prompts at the same budget."""
    by_id = {(r["id"], r["method"]): r["reward"] for r in rows if r["task"] == task and r["budget"] == budget}
    diffs = [
        by_id[(i, "maxent_ts")] - by_id[(i, "best_of_n")]
        for i, m in by_id
        if m == "maxent_ts" and (i, "best_of_n") in by_id
    ]
    if not diffs:
        return {}
    stderr = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else float("nan")
    return {
        "vs_best_of_n": statistics.mean(diffs),
        "vs_best_of_n_stderr": stderr,
        "wins_ties_losses": [
            sum(d > 1e-9 for d in diffs),
            sum(abs(d) <= 1e-9 for d in diffs),
            sum(d < -1e-9 for d in diffs),
        ],
    }


def print_table(summary: list[dict]) -> None:
    header = (
        f"{'task':9}{'method':11}{'N':>3}{'reward':>8}{'metric1':>9}{'metric2':>9}{'calls':>7}{'tok.evals':>10}"
        f"{'cost/tok':>9}{'vs samp':>8}{'wall s':>8}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for e in summary:
        m1, m2 = (e["mae"], e["parsed"]) if e["task"] == "forecast" else (e["rouge_l"], e["claim_accuracy"])
        print(
            f"{e['task']:9}{e['method']:11}{e['budget']:>3}{e['reward']:>8.3f}{m1:>9.3f}{m2:>9.3f}{e['calls']:>7.0f}"
            f"{e['token_evals']:>10.0f}{e['token_cost']:>9.2f}{e['token_cost_vs_sampling']:>8.2f}{e['wall_time']:>8.1f}"
            + (
                f"   vs best-of-N {e['vs_best_of_n']:+.3f} ± {e['vs_best_of_n_stderr']:.3f}, W/T/L "
                + "/".join(str(n) for n in e["wins_ties_losses"])
                if "vs_best_of_n" in e
                else ""
            )
        )
    print("metric1/metric2: forecast MAE/parsed share; caption ROUGE-L/claim accuracy. cost/tok: token evaluations")
    print("after the prompt per generated token; 'vs samp' divides it by nucleus sampling's.")


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    tasks = list(dict.fromkeys(e["task"] for e in summary))
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.5 * len(tasks), 7), squeeze=False)
    metric = {"forecast": ("mae", "MAE (lower is better)"), "caption": ("rouge_l", "ROUGE-L F1")}
    for column, task in enumerate(tasks):
        for method in METHODS:
            points = sorted(
                (e for e in summary if e["task"] == task and e["method"] == method), key=lambda e: e["budget"]
            )
            if not points:
                continue
            xs = [e["token_evals"] for e in points]
            style = "o-" if len(points) > 1 else "s"
            axes[0][column].plot(xs, [e["reward"] for e in points], style, label=method)
            axes[1][column].plot(xs, [e[metric[task][0]] for e in points], style, label=method)
        axes[0][column].set_title(f"{task}: reward vs compute")
        axes[0][column].set_ylabel("reward of the returned output")
        axes[1][column].set_ylabel(metric[task][1])
        for row in (0, 1):
            axes[row][column].set_xlabel("token evaluations after the prompt (NFE per position)")
            axes[row][column].set_xscale("log")
            axes[row][column].xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short range
            axes[row][column].grid(alpha=0.3)
        axes[0][column].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
