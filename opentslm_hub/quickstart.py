"""The offline quickstart: build OpenTSLM on SmolLM2-135M-Instruct and caption a real series.

    python -m opentslm_hub.quickstart                     # the Nile's annual flow (statsmodels ships it)
    python -m opentslm_hub.quickstart --csv my.csv        # any one-column (or date,value) CSV

The encoder and projector are freshly initialised here: until they are trained (recipes/, stages 1–2), the caption
reflects what the LLM makes of the mean/std sentence and untrained series embeddings, not a trained reading.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

PRE_PROMPT = "You are an expert in time series analysis."
POST_PROMPT = "Please generate a detailed caption for this time-series, describing it as accurately as possible."


def nile_flow() -> np.ndarray:
    """Annual flow of the Nile at Aswan, 1871–1970 (100 values, 10^8 m^3), as shipped by statsmodels."""
    from statsmodels.datasets import nile

    return nile.load_pandas().data["volume"].to_numpy(dtype=np.float64)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", help="caption this CSV's series instead of the Nile's flow")
    parser.add_argument("--column", help="CSV column name or index (default: the last column)")
    parser.add_argument("--llm", help="LLM id or folder (default: the offline SmolLM2-135M-Instruct)")
    parser.add_argument("--max_new_tokens", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
    from opentslm_hub.offline_llm import smollm2_path
    from opentslm_hub.series_io import read_series_csv

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    llm = args.llm or str(smollm2_path())
    processor = OpenTSLMProcessor.from_llm(llm)
    model = OpenTSLMForCausalLM.from_llm(llm, processor, dtype=torch.float32).eval()
    counts = {
        "encoder": sum(p.numel() for p in model.time_series_encoder.parameters()),
        "projector": sum(p.numel() for p in model.projector.parameters()),
        "llm": sum(p.numel() for p in model.language_model.parameters()),
    }
    print(
        f"Built OpenTSLM-SP on {llm} in {time.perf_counter() - start:.1f} s: "
        + ", ".join(f"{name} {n / 1e6:.2f}M" for name, n in counts.items())
    )

    series = np.asarray(read_series_csv(args.csv, args.column)) if args.csv else nile_flow()
    source = args.csv or "Nile flow at Aswan 1871-1970 (statsmodels)"
    print(f"Series: {source}, {len(series)} values, mean {series.mean():.4f}, std {series.std():.4f}")

    inputs = processor(text=processor.format_prompt(PRE_PROMPT, POST_PROMPT), time_series=[series])
    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    caption = processor.decode(new_tokens, skip_special_tokens=True).strip()
    elapsed = time.perf_counter() - start
    print(
        f"Prompt: {inputs['input_ids'].shape[1]} tokens ({int((inputs['input_ids'] == processor.ts_token_id).sum())}"
        f" series patches). Generated {len(new_tokens)} tokens in {elapsed:.1f} s (greedy)."
    )
    print("Note: encoder and projector are untrained here; train them with the recipes for a real caption.")
    print(f"\nCaption:\n{caption}")
    return caption


if __name__ == "__main__":
    main()
