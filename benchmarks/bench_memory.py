"""Memory and speed of OpenTSLM-SP against OpenTSLM-Flamingo on the same LLM, as the series get longer.

For each variant and input shape, one training step (forward + backward of the answer loss, after a warm-up step) in
a fresh process: peak resident memory during the step (the high-water mark is reset after loading, so it is the
model plus the step, not the loading), the step's own growth over the loaded model, and seconds per step. Then
greedy decoding speed of both variants against the bare LLM on prompts of the same token length, alternating in one
process so machine noise hits all alike; the decode rate excludes the prefill (tokens between the first and the last).

SP writes one token per patch of 4 samples, so its sequence (and memory) grows with the series; Flamingo resamples
each series to a fixed number of latents, so its text stays short.

    python benchmarks/bench_memory.py                       # SmolLM2-135M (offline), fp32: about 10 minutes
    python benchmarks/bench_memory.py --tiny --shapes 256   # a tiny random model, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHAPES = {"256": (1, 256), "1024": (1, 1024), "4096": (1, 4096), "ecg12x1000": (12, 1000)}
ANSWER = "The series oscillates around its mean with a slow upward drift and a few sharp peaks near the end."


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> None:
    """Reset the process's resident high-water mark (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def build(variant: str, tiny: bool, dtype: torch.dtype):
    from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM, OpenTSLMProcessor

    placeholders = "per_series" if variant == "flamingo" else "per_patch"
    if tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from tiny import TINY_ENCODER, tiny_text_config, tiny_tokenizer

        tokenizer = tiny_tokenizer()
        tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
        processor = OpenTSLMProcessor(tokenizer=tokenizer, placeholders=placeholders)
        encoder = {**TINY_ENCODER, "max_patches": 1024}
        if variant == "flamingo":
            encoder["num_hidden_layers"] = 0
        config = OpenTSLMConfig(
            text_config=tiny_text_config("llama", len(tokenizer)),
            encoder_config=encoder,
            ts_token_id=processor.ts_token_id,
            architecture=variant,
            cross_attention_every_n_layers=1,  # the tiny LLM has 2 layers
        )
        torch.manual_seed(0)
        model = OpenTSLMForCausalLM(config)
    else:
        from opentslm_hub.offline_llm import smollm2_path

        path = str(smollm2_path())
        processor = OpenTSLMProcessor.from_llm(path, use_chat_template=True, placeholders=placeholders)
        torch.manual_seed(0)
        model = OpenTSLMForCausalLM.from_llm(path, processor, architecture=variant, dtype=dtype)
    return model.to(dtype), processor


def shape_series(shape: str) -> list[np.ndarray]:
    channels, length = SHAPES[shape]
    steps = np.arange(length)
    return [np.sin(steps / (9.0 + c)) + 0.01 * steps / length * (c + 1) for c in range(channels)]


def train_step(variant: str, shape: str, tiny: bool, dtype: torch.dtype) -> dict:
    """One measured training step in this process (run it in a fresh one: the peak is per process)."""
    from recipes.collator import encode_with_answers

    model, processor = build(variant, tiny, dtype)
    model.train()
    series = shape_series(shape)
    prompt = processor.format_prompt(
        "You are an expert in time series analysis.",
        "Please generate a detailed caption for this time-series, describing it as accurately as possible.",
        num_series=len(series),
    )
    batch = encode_with_answers(processor, [prompt], [ANSWER], [series])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up: allocates the optimiser state and the kernels' buffers
    loaded = memory_kb("VmRSS")
    reset_peak_memory()
    start = time.perf_counter()
    step()
    elapsed = time.perf_counter() - start
    peak = memory_kb("VmHWM")
    return {
        "variant": variant,
        "shape": shape,
        "tokens": int(batch["input_ids"].shape[1]),
        "s_per_step": elapsed,
        "peak_mb": peak / 1024,
        "step_growth_mb": (peak - loaded) / 1024,
    }


def decode_rates(tiny: bool, dtype: torch.dtype, shape: str, new_tokens: int, repeats: int) -> dict:
    from bench_generate import bare_llm

    series = shape_series(shape)
    rates: dict[str, list[float]] = {"sp": [], "flamingo": [], "bare_sp": [], "bare_flamingo": []}
    runs = {}
    for variant in ("sp", "flamingo"):
        model, processor = build(variant, tiny, dtype)
        model.eval()
        prompt = processor.format_prompt(
            "You are an expert in time series analysis.",
            "Please generate a detailed caption for this time-series, describing it as accurately as possible.",
            num_series=len(series),
        )
        inputs = processor(text=prompt, time_series=[series])
        length = inputs["input_ids"].shape[1]
        filler = processor.tokenizer("time series analysis " * length, add_special_tokens=False)["input_ids"]
        text_ids = torch.tensor([filler[:length]])
        runs[variant] = (
            model,
            inputs,
            bare_llm(model),
            {"input_ids": text_ids, "attention_mask": torch.ones_like(text_ids)},
        )

    def timed(model, inputs, tokens: int) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        return time.perf_counter() - start

    times: dict[tuple[str, int], list[float]] = {}
    for _ in range(repeats + 1):  # the first round is a warm-up
        for variant, (model, inputs, bare, text_inputs) in runs.items():
            for key, (m, i) in ((variant, (model, inputs)), (f"bare_{variant}", (bare, text_inputs))):
                for tokens in (1, new_tokens):
                    times.setdefault((key, tokens), []).append(timed(m, i, tokens))
    for key in rates:
        # Decode rate without the prefill: tokens 2..N over the median time they add to a 1-token generate.
        rates[key] = [
            (new_tokens - 1) / (t - statistics.median(times[(key, 1)][1:])) for t in times[(key, new_tokens)][1:]
        ]
    result = {"shape": shape, "new_tokens": new_tokens, "repeats": repeats}
    for variant in ("sp", "flamingo"):
        ratios = [a / b for a, b in zip(rates[variant], rates[f"bare_{variant}"])]
        result[variant] = {
            "prompt_tokens": int(runs[variant][1]["input_ids"].shape[1]),
            "tokens_per_s": statistics.median(rates[variant]),
            "bare_tokens_per_s": statistics.median(rates[f"bare_{variant}"]),
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny random model instead of SmolLM2-135M")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--shapes", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)} ('' for decoding only)"
    )
    parser.add_argument("--decode_shape", default="1024", help="the input shape of the decoding comparison")
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default="benchmarks/results/bench_memory.json")
    parser.add_argument("--_step", nargs=2, metavar=("VARIANT", "SHAPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    if args._step:
        print(json.dumps(train_step(*args._step, args.tiny, dtype)))
        return

    shapes = [shape for shape in args.shapes.split(",") if shape]
    unknown = [shape for shape in shapes if shape not in SHAPES]
    if unknown:
        raise SystemExit(f"Unknown shapes {unknown}; choose from {', '.join(SHAPES)}.")
    steps = []
    for shape in shapes:
        for variant in ("sp", "flamingo"):
            command = [sys.executable, __file__, "--_step", variant, shape, "--dtype", args.dtype]
            command += ["--tiny"] if args.tiny else []
            result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
            if result.returncode:
                raise SystemExit(f"{variant} {shape} failed:\n{result.stderr[-3000:]}")
            steps.append(json.loads(result.stdout.strip().splitlines()[-1]))
            row = steps[-1]
            print(
                f"{variant:9} {shape:11} {row['tokens']:6d} tokens  {row['s_per_step']:7.2f} s/step  "
                f"peak {row['peak_mb']:8.0f} MB  step +{row['step_growth_mb']:7.0f} MB",
                flush=True,
            )
    decode = decode_rates(args.tiny, dtype, args.decode_shape, args.new_tokens, args.repeats)

    def growth(variant: str, small: str, large: str) -> float | None:
        peak = {row["shape"]: row["peak_mb"] for row in steps if row["variant"] == variant}
        return peak[large] / peak[small] if small in peak and large in peak else None

    summary = {
        "flamingo_peak_growth_1024_to_4096": growth("flamingo", "1024", "4096"),
        "sp_peak_growth_1024_to_4096": growth("sp", "1024", "4096"),
    }
    print()
    print(f"{'variant':9} {'shape':11} {'tokens':>6} {'s/step':>8} {'peak MB':>9} {'step MB':>8}")
    for row in steps:
        print(
            f"{row['variant']:9} {row['shape']:11} {row['tokens']:6d} {row['s_per_step']:8.2f} "
            f"{row['peak_mb']:9.0f} {row['step_growth_mb']:8.0f}"
        )
    print(f"\ndecoding ({args.decode_shape}, {args.new_tokens} new tokens, median of {args.repeats}):")
    for variant in ("sp", "flamingo"):
        row = decode[variant]
        print(
            f"  {variant:9} {row['tokens_per_s']:7.1f} tokens/s, bare LLM {row['bare_tokens_per_s']:7.1f} "
            f"(same prompt length {row['prompt_tokens']}): ratio {row['ratio_median']:.3f} (min {row['ratio_min']:.3f})"
        )
    for key, value in summary.items():
        print(f"{key}: {value:.3f}" if value is not None else f"{key}: not measured")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "model": "tiny-llama" if args.tiny else "SmolLM2-135M-Instruct",
        "dtype": args.dtype,
        "batch_size": 1,
        "train_steps": steps,
        "decode": decode,
        "summary": summary,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
