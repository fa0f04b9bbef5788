"""Training-step throughput and peak memory: SmolLM2-135M, a stage-2 shaped batch of 4 (caption records).

Each configuration runs warm-up steps, then timed steps (forward, backward, AdamW step) in the same process; the
table gives samples/s, the resident memory once the model is built and the largest growth during one step
(activations and gradients at the end of backward). Compare rows within one
run: the machine is noisy, ratios are what carry over.

    python benchmarks/bench_train.py                          # fp32 LLM, encoder+projector trained
    python benchmarks/bench_train.py --lora                   # add a row with LoRA adapters on the LLM
    python benchmarks/bench_train.py --dtypes float32 bfloat16   # bf16 too (very slow on CPUs without bf16 units)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def rss_mb() -> float:
    """Current resident memory of this process (Linux), in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def caption_batch(processor, batch_size: int):
    from hub_datasets.offline import load_offline
    from recipes.collator import OpenTSLMDataCollator

    records = list(load_offline("captions_bundled")["train"].select(range(batch_size)))
    return OpenTSLMDataCollator(processor)(records), records


def measure(dtype: torch.dtype, lora: bool, steps: int, warmup: int, batch_size: int) -> dict:
    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
    from opentslm_hub.offline_llm import smollm2_path

    path = str(smollm2_path())
    torch.manual_seed(0)
    processor = OpenTSLMProcessor.from_llm(path, use_chat_template=True)
    model = OpenTSLMForCausalLM.from_llm(path, processor, dtype=dtype)
    if lora:
        model.add_lora()
    model.set_trainable(encoder=True, projector=True, llm=False)
    model.train()
    batch, _ = caption_batch(processor, batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times, step_memory = [], []
    resident = rss_mb()
    for step in range(warmup + steps):
        start = time.perf_counter()
        before = rss_mb()
        loss = model(**batch).loss
        loss.backward()
        step_memory.append(rss_mb() - before)  # activations and gradients held at the end of backward
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return {
        "llm_dtype": str(dtype).removeprefix("torch."),
        "lora": lora,
        "batch_size": batch_size,
        "tokens_per_sample": int(batch["attention_mask"].sum() / batch_size),
        "series_patches_per_sample": int((batch["input_ids"] == processor.ts_token_id).sum() / batch_size),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "step_seconds_median": statistics.median(times),
        "samples_per_second": batch_size / statistics.median(times),
        "model_rss_mb": resident,
        "step_peak_growth_mb": max(step_memory),
        "final_loss": float(loss.detach()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--lora", action="store_true", help="also measure with LoRA adapters (first dtype)")
    parser.add_argument("--output", default="benchmarks/results/bench_train.json")
    args = parser.parse_args()

    dtypes = [getattr(torch, name) for name in args.dtypes]
    rows = [measure(dtype, False, args.steps, args.warmup, args.batch_size) for dtype in dtypes]
    if args.lora:
        rows.append(measure(dtypes[0], True, args.steps, args.warmup, args.batch_size))
    print(
        f"{'LLM dtype':10}{'LoRA':>6}{'tokens':>8}{'trainable':>12}{'s/step':>9}{'samples/s':>11}"
        f"{'RSS MB':>9}{'step +MB':>10}"
    )
    for row in rows:
        print(
            f"{row['llm_dtype']:10}{str(row['lora']):>6}{row['tokens_per_sample']:>8}{row['trainable_params']:>12,}"
            f"{row['step_seconds_median']:>9.2f}{row['samples_per_second']:>11.2f}{row['model_rss_mb']:>9.0f}"
            f"{row['step_peak_growth_mb']:>10.0f}"
        )
    for row in rows[1:]:
        ratio = row["samples_per_second"] / rows[0]["samples_per_second"]
        print(f"{row['llm_dtype']}{' + LoRA' if row['lora'] else ''} / {rows[0]['llm_dtype']} samples/s: {ratio:.2f}x")
    result = {
        "rows": rows,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
