"""Decoding speed of OpenTSLM `generate` against the bare LLM's `generate` on prompts of the same length.

Both runs use the same weights (the OpenTSLM model's own LLM is the bare model), greedy decoding, a forced number of
new tokens, and alternate within the same process so machine noise hits both alike. The figure that matters is the
ratio of tokens/s (OpenTSLM / bare); the target is >= 0.9.

    python benchmarks/bench_generate.py                 # SmolLM2-135M (offline), fp32
    python benchmarks/bench_generate.py --tiny          # a tiny random model, seconds
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def build(tiny: bool, dtype: torch.dtype):
    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor

    if tiny:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny import TINY_ENCODER, tiny_text_config, tiny_tokenizer

        from modeling_opentslm import OpenTSLMConfig

        tokenizer = tiny_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
        processor = OpenTSLMProcessor(tokenizer=tokenizer)
        config = OpenTSLMConfig(
            text_config=tiny_text_config("llama", len(tokenizer)),
            encoder_config=TINY_ENCODER,
            ts_token_id=processor.ts_token_id,
        )
        torch.manual_seed(0)
        model = OpenTSLMForCausalLM(config)
    else:
        from opentslm_hub.offline_llm import smollm2_path

        path = str(smollm2_path())
        processor = OpenTSLMProcessor.from_llm(path, use_chat_template=True)
        model = OpenTSLMForCausalLM.from_llm(path, processor, dtype=dtype)
    return model.to(dtype).eval(), processor


def bare_llm(model):
    """The OpenTSLM model's own LLM body and head inside the plain transformers causal-LM class."""
    from transformers import AutoModelForCausalLM

    bare = AutoModelForCausalLM.from_config(model.config.text_config)
    bare.model = model.language_model
    bare.lm_head = model.lm_head
    bare.generation_config = model.generation_config
    return bare.to(model.dtype).eval()


def timed_generate(model, inputs: dict, new_tokens: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    elapsed = time.perf_counter() - start
    assert out.shape[1] == inputs["input_ids"].shape[1] + new_tokens
    return new_tokens * inputs["input_ids"].shape[0] / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model instead of SmolLM2-135M")
    parser.add_argument("--series_length", type=int, default=256)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--output", default="benchmarks/results/bench_generate.json")
    args = parser.parse_args()
    torch.manual_seed(0)

    model, processor = build(args.tiny, getattr(torch, args.dtype))
    bare = bare_llm(model)
    series = [np.sin(np.arange(args.series_length) / 7.0) + 0.1 * np.arange(args.series_length) / args.series_length]
    prompt = processor.format_prompt(
        "You are an expert in time series analysis.",
        "Please generate a detailed caption for this time-series, describing it as accurately as possible.",
    )
    series_inputs = processor(text=[prompt] * args.batch_size, time_series=[series] * args.batch_size)
    prompt_length = series_inputs["input_ids"].shape[1]
    # The bare LLM gets a text prompt of exactly the same token length (the series' placeholder positions become text).
    filler = processor.tokenizer("time series analysis " * prompt_length, add_special_tokens=False)["input_ids"]
    text_ids = torch.tensor([filler[:prompt_length]] * args.batch_size)
    text_inputs = {"input_ids": text_ids, "attention_mask": torch.ones_like(text_ids)}

    timed_generate(model, series_inputs, 4)  # warm-up both
    timed_generate(bare, text_inputs, 4)
    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(timed_generate(model, series_inputs, args.new_tokens))
        theirs.append(timed_generate(bare, text_inputs, args.new_tokens))
    ratios = [a / b for a, b in zip(ours, theirs)]
    result = {
        "model": "tiny-llama" if args.tiny else "SmolLM2-135M-Instruct",
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "prompt_tokens": prompt_length,
        "series_length": args.series_length,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "opentslm_tokens_per_s": statistics.median(ours),
        "bare_llm_tokens_per_s": statistics.median(theirs),
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    print(f"{'':24}{'tokens/s (median)':>20}")
    print(f"{'OpenTSLM generate':24}{result['opentslm_tokens_per_s']:>20.1f}")
    print(f"{'bare LLM generate':24}{result['bare_llm_tokens_per_s']:>20.1f}")
    print(f"{'ratio (target >= 0.9)':24}{result['ratio_median']:>20.3f}   (min {result['ratio_min']:.3f})")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
