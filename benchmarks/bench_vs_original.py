"""Training speed and peak memory of OpenTSLM-SP here against the original OpenTSLM code, on the very same rows.

Stage-2 shaped batches (synthetic M4-like series with ~60-token captions, SmolLM2-135M-Instruct, encoder and projector
trained, LLM frozen), each side in its own fresh process, the processes alternating so slow drifts of a shared machine
hit both alike. Every side runs the original trainer's loop body (zero_grad, loss, backward, clip_grad_norm_, AdamW
step, linear warm-up scheduler step) with the original's optimiser groups (encoder 2e-4, projector 1e-4, weight decay
0.01), and measures the median step time and the peak resident memory of the training phase (VmHWM, reset just before
training). Ours runs the recipes' training path: padding-free batches (`padding_free: true`) and the loss from the
labelled positions only (`skip_logits`, without keeping their logits), with `opentslm_varlen` attention: each packed
sample's attention on its own, and the prompt text before each sample's series in a first pass without gradients, the
LLM being frozen (`--attention sdpa` or `eager` compute the whole packed row's in one pass; eager, as the original's
LLM, keeps every layer's attention weights, up to twice the peak memory on packed rows).

    # ours only (ratios to the original are then reported as missing)
    python benchmarks/bench_vs_original.py
    # against the original: build its throw-away venv once (see benchmarks/original_opentslm/), then
    python benchmarks/bench_vs_original.py --original-python DIR/venv/bin/python --original-repo DIR/opentslm
    # bf16 rows too (only where the CPU has bf16 units: elsewhere they are very slow for both sides)
    python benchmarks/bench_vs_original.py ... --dtypes float32 bfloat16

Rows (`--rows`): `256` and `1024` are batches of `--batch_size` series of that length; `mix64-256-512-1024` is one
batch whose series have those lengths; `ecg12x256` is a batch of 12-channel series of 256 samples each (ours only: the
original's benchmark tool formats single-series M4 rows). With the original, its tool writes the exact rows it used and
ours trains on those; without it, the same synthetic rows are generated here. The original side runs
`benchmarks/original_opentslm/original_opentslm_bench.py` (unmodified original classes, in the original's own venv).

`--decode_tokens N` also times greedy decoding (batch 1) of ours against the bare LLM on a text prompt of the same
length. Compare ratios from one run; absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
ORIGINAL_BENCH = HERE / "original_opentslm" / "original_opentslm_bench.py"
STAGE2_LEARNING_RATES = {"encoder": 2e-4, "projector": 1e-4}
WEIGHT_DECAY, GRAD_CLIP, WARMUP_FRACTION = 0.01, 1.0, 0.03
CAPTION = (
    "The time series shows a clear upward trend with pronounced seasonal oscillations. "
    "Values start near {a:.1f} and rise steadily to around {b:.1f} by the end of the window, "
    "with a regular cycle of roughly {p} steps. Short-term noise is moderate and there are no "
    "abrupt level shifts, outliers or missing segments. Overall the series is smooth, trending "
    "and strongly periodic, which is typical for monthly demand or production data in the M4 collection."
)
ECG_LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


# ---------------------------------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------------------------------
def synthetic_rows(length: int, count: int, tokenizer, caption_tokens: int, seed: int) -> list[dict]:
    """Trend + season + noise series with a caption cut to `caption_tokens` tokens; the same rows as the original
    side's tool generates for the same arguments (so that runs without the original train on identical data)."""
    rng = np.random.default_rng(seed + length)
    steps = np.arange(length, dtype=np.float64)
    rows = []
    for index in range(count):
        period = 12 + 4 * index
        noise = rng.normal(0.0, 8.0, length)
        values = 1000.0 + 50.0 * index + (0.5 + 0.25 * index) * steps
        values = values + 40.0 * np.sin(2 * np.pi * steps / period) + noise
        text = CAPTION.format(a=values[:period].mean(), b=values[-period:].mean(), p=period)
        caption = tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids[:caption_tokens])
        rows.append(
            {"id": f"synth_L{length}_{index}", "series": values.astype(np.float32).tolist(), "caption": caption}
        )
    return rows


def rows_for(spec: str, tokenizer, batch_size: int, caption_tokens: int, seed: int) -> list[dict]:
    if spec.startswith("mix"):
        lengths = [int(n) for n in spec[3:].split("-")]
        return [
            dict(synthetic_rows(n, 1, tokenizer, caption_tokens, seed + i)[0], id=f"synth_{spec}_{i}")
            for i, n in enumerate(lengths)
        ]
    if spec.startswith("ecg12x"):
        length = int(spec.removeprefix("ecg12x"))
        rows = []
        for sample in range(batch_size):
            leads = synthetic_rows(length, len(ECG_LEADS), tokenizer, caption_tokens, seed + 100 * sample)
            rows.append(
                {"id": f"ecg_{sample}", "leads": [lead["series"] for lead in leads], "caption": leads[0]["caption"]}
            )
        return rows
    return synthetic_rows(int(spec), batch_size, tokenizer, caption_tokens, seed)


def as_records(rows: list[dict]) -> list[dict]:
    """The rows as records of the shared schema, with the original M4 prompts (ECG rows: one channel per lead)."""
    from hub_datasets.m4 import POST_PROMPT, PRE_PROMPT
    from hub_datasets.schema import DEFAULT_SERIES_TEXT, make_record

    records = []
    for row in rows:
        if "leads" in row:
            channels = [
                (f"This is ECG lead {name}, it has mean {{mean:.4f}} and std {{std:.4f}}:", values)
                for name, values in zip(ECG_LEADS, row["leads"])
            ]
        else:
            channels = [(DEFAULT_SERIES_TEXT, row["series"])]
        records.append(
            make_record(
                id=row["id"],
                task="m4",
                pre_prompt=PRE_PROMPT,
                time_series=channels,
                post_prompt=POST_PROMPT,
                answer=row["caption"],
            )
        )
    return records


# ---------------------------------------------------------------------------------------------------------------------
# Measuring ours (runs in its own process: `--worker`)
# ---------------------------------------------------------------------------------------------------------------------
def reset_peak_memory() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
        return True
    except OSError:
        return False


def peak_memory_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_ours(job: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, get_linear_schedule_with_warmup

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
    from recipes.collator import OpenTSLMDataCollator, encode_prompts
    from recipes.sft import parameter_group

    torch.set_num_threads(job["threads"])
    torch.manual_seed(job["seed"])
    dtype = getattr(torch, job["dtype"])
    processor = OpenTSLMProcessor.from_llm(job["llm"], use_chat_template=False)
    model = OpenTSLMForCausalLM.from_llm(job["llm"], processor, dtype=dtype, attn_implementation=job["attention"])
    model.set_trainable(encoder=True, projector=True, llm=False)
    if job["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    records = as_records(job["rows"])
    padding_free = job["variant"] == "packed"
    batch = OpenTSLMDataCollator(processor, padding_free=padding_free)(records)
    groups: dict[str, list] = {name: [] for name in STAGE2_LEARNING_RATES}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups[parameter_group(name)].append(parameter)
    optimizer = torch.optim.AdamW(
        [{"params": p, "lr": STAGE2_LEARNING_RATES[g], "weight_decay": WEIGHT_DECAY} for g, p in groups.items()]
    )
    total = job["warmup"] + job["steps"]
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_FRACTION * total), total)
    model.train()
    trained = [p for p in model.parameters() if p.requires_grad]
    forward = torch.compile(model) if job["compile"] else model  # compiled during the warm-up steps
    times, losses = [], []
    peak_ok = reset_peak_memory()
    for step in range(total):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = forward(**batch, skip_logits=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        if step >= job["warmup"]:
            times.append(time.perf_counter() - start)
        print(f"    ours step {step}: {time.perf_counter() - start:.3f} s, loss {losses[-1]:.4f}", flush=True)
    median = statistics.median(times)
    result = {
        "side": "ours",
        "variant": job["variant"],
        "tokens": int(batch["input_ids"].numel()),
        "step_s_median": median,
        "step_s_all": times,
        "samples_per_s": len(records) / median,
        "peak_rss_train_mb": peak_memory_mb() if peak_ok else float("nan"),
        "losses": losses,
    }
    if job["decode_tokens"]:
        result["decode"] = measure_decoding(model, processor, records[0], job, AutoModelForCausalLM, encode_prompts)
    return result


def measure_decoding(model, processor, record, job, auto_model, encode_prompts) -> dict:
    """Greedy decoding of exactly `decode_tokens` tokens, batch 1: ours against the bare LLM on a text prompt of the
    same length, calls interleaved."""
    import torch

    model.eval()
    inputs = encode_prompts(processor, [record])
    prompt_length = inputs["input_ids"].shape[1]
    bare = auto_model.from_pretrained(
        job["llm"], dtype=getattr(torch, job["dtype"]), attn_implementation=job["attention"]
    ).eval()
    filler = processor.tokenizer(" ".join([record["answer"]] * 200), add_special_tokens=False)["input_ids"]
    bare_ids = torch.tensor([filler[:prompt_length]])
    new = job["decode_tokens"]
    settings = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, num_beams=1)
    calls = {
        "ours": lambda: model.generate(**inputs, **settings),
        "bare": lambda: bare.generate(
            input_ids=bare_ids, attention_mask=torch.ones_like(bare_ids), pad_token_id=0, **settings
        ),
    }
    timings = {name: [] for name in calls}
    with torch.no_grad():
        for call in calls.values():
            call()  # warm-up
        for _ in range(job["decode_reps"]):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                timings[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in timings.items()}
    return {
        "prompt_tokens": prompt_length,
        "new_tokens": new,
        "ours_tokens_per_s": new / medians["ours"],
        "bare_tokens_per_s": new / medians["bare"],
        "ratio_vs_bare": medians["bare"] / medians["ours"],
    }


# ---------------------------------------------------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------------------------------------------------
def llm_for_original(llm: str, workdir: Path) -> str:
    """The LLM folder as transformers 4 (the original's pin) reads it: the same files, linked, except a tokenizer
    config naming `PreTrainedTokenizerFast` where transformers 5 wrote its own `TokenizersBackend` class."""
    source = Path(llm)
    config = json.loads((source / "tokenizer_config.json").read_text())
    if config.get("tokenizer_class") != "TokenizersBackend":
        return llm
    folder = workdir / "llm_for_original"
    folder.mkdir(exist_ok=True)
    for path in source.iterdir():
        if path.name != "tokenizer_config.json" and not (folder / path.name).exists():
            (folder / path.name).symlink_to(path.resolve())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return str(folder)


def run_original(args, spec: str, dtype: str, workdir: Path) -> tuple[dict | None, list[dict] | None]:
    out, inputs = workdir / f"original_{spec}_{dtype}.json", workdir / f"original_inputs_{spec}.json"
    command = [
        args.original_python,
        str(ORIGINAL_BENCH),
        "--repo",
        args.original_repo,
        "--llm",
        llm_for_original(args.llm, workdir),
        "--models",
        "sp",
        "--lengths",
        spec,
        "--dtype",
        dtype,
        "--batch-size",
        str(args.batch_size),
        "--warmup",
        str(args.warmup),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--caption-tokens",
        str(args.caption_tokens),
        "--seed",
        str(args.seed),
        "--gen-tokens",
        str(max(args.decode_tokens, 2)),
        "--gen-reps",
        str(args.decode_reps),
        "--out",
        str(out),
        "--inputs-out",
        str(inputs),
    ]
    print(f"  original {spec} {dtype} ...", flush=True)
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0 or not out.exists():
        print(completed.stdout[-2000:] + completed.stderr[-3000:], file=sys.stderr)
        return None, None
    return read_original(out, inputs, spec)


def read_original(out: Path, inputs: Path, spec: str) -> tuple[dict | None, list[dict] | None]:
    """The original side's JSON report as a result of this script, and the rows it trained on."""
    report = json.loads(out.read_text())
    if not report["results"] or "train" not in report["results"][0]:
        print(f"  original {out.name} failed: {report.get('errors')}", file=sys.stderr)
        return None, None
    result = report["results"][0]
    train = result["train"]
    measured = {
        "side": "original",
        "sequence_length_padded": result["seq"]["total_len"],
        "step_s_median": train["step_s_median"],
        "step_s_all": train["step_s_all"],
        "samples_per_s": train["samples_per_s"],
        "peak_rss_train_mb": train["peak_rss_train_mb"],
        "losses": train["losses"],
        "decode_ratio_vs_bare": result.get("gen_ratio_vs_bare"),
    }
    rows = json.loads(inputs.read_text())["rows_by_ts_len"][spec]
    return measured, rows


def run_ours(args, spec: str, dtype: str, rows: list[dict], variant: str, workdir: Path) -> dict | None:
    job = {
        "llm": args.llm,
        "rows": rows,
        "dtype": dtype,
        "variant": variant,
        "warmup": args.warmup,
        "steps": args.steps,
        "threads": args.threads,
        "seed": args.seed,
        "decode_tokens": args.decode_tokens,
        "decode_reps": args.decode_reps,
        "attention": args.attention,
        "gradient_checkpointing": args.gradient_checkpointing,
        "compile": args.compile,
    }
    job_file, out = (
        workdir / f"ours_{spec}_{dtype}_{variant}.job.json",
        workdir / f"ours_{spec}_{dtype}_{variant}.json",
    )
    job_file.write_text(json.dumps(job))
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    print(f"  ours {spec} {dtype} {variant} ...", flush=True)
    completed = subprocess.run(
        [sys.executable, __file__, "--worker", str(job_file), "--worker_out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    if completed.returncode != 0 or not out.exists():
        print(completed.stdout[-2000:] + completed.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(out.read_text())


def ratio(numerator, denominator):
    return numerator / denominator if numerator and denominator else None


def summarise(entries: list[dict]) -> list[dict]:
    """One line per (row, dtype): median over rounds of each side, and ours/original ratios."""
    table = []
    keys = sorted({(e["row"], e["dtype"]) for e in entries}, key=lambda k: (k[1], k[0]))
    for row, dtype in keys:
        same = [e for e in entries if e["row"] == row and e["dtype"] == dtype]
        line = {"row": row, "dtype": dtype}
        for side in ("original", "ours", "ours_padded"):
            measured = [e["result"] for e in same if e["name"] == side and e["result"]]
            if measured:
                line[f"{side}_samples_per_s"] = statistics.median(m["samples_per_s"] for m in measured)
                line[f"{side}_peak_mb"] = statistics.median(m["peak_rss_train_mb"] for m in measured)
                decode = [m["decode"]["ratio_vs_bare"] for m in measured if "decode" in m]
                if decode:
                    line[f"{side}_decode_vs_bare"] = statistics.median(decode)
        line["speed_ratio"] = ratio(line.get("ours_samples_per_s"), line.get("original_samples_per_s"))
        line["peak_ratio"] = ratio(line.get("ours_peak_mb"), line.get("original_peak_mb"))
        table.append(line)
    return table


def format_table(table: list[dict]) -> str:
    def cell(value, fmt, unit=""):
        return format(value, fmt) + unit if value is not None else "missing"

    lines = [
        "| rows | dtype | original samples/s | ours samples/s | ours speed | original peak MB | ours peak MB | "
        "ours peak | ours padded samples/s | ours decoding vs bare LLM |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in table:
        lines.append(
            f"| {line['row']} | {line['dtype']} | {cell(line.get('original_samples_per_s'), '.3f')} | "
            f"{cell(line.get('ours_samples_per_s'), '.3f')} | {cell(line['speed_ratio'], '.2f', 'x')} | "
            f"{cell(line.get('original_peak_mb'), '.0f')} | {cell(line.get('ours_peak_mb'), '.0f')} | "
            f"{cell(line['peak_ratio'], '.2f', 'x')} | {cell(line.get('ours_padded_samples_per_s'), '.3f')} | "
            f"{cell(line.get('ours_decode_vs_bare'), '.2f', 'x')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="256,1024,mix64-256-512-1024,ecg12x256")
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="alternations of the two sides per row")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--caption_tokens", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--padded", action="store_true", help="also time ours with padded batches")
    parser.add_argument(
        "--gradient_checkpointing", action="store_true", help="ours recomputes each LLM layer in the backward pass"
    )
    parser.add_argument("--compile", action="store_true", help="ours runs torch.compile(model) (compiled in warm-up)")
    parser.add_argument(
        "--attention",
        default="opentslm_varlen",
        choices=["eager", "sdpa", "opentslm_varlen"],
        help="ours' attention: opentslm_varlen computes each packed sample's attention on its own; the original "
        "loads its LLM with eager (a little faster than sdpa on CPU, far more memory)",
    )
    parser.add_argument("--decode_tokens", type=int, default=0, help="time greedy decoding of this many tokens")
    parser.add_argument("--decode_reps", type=int, default=3)
    parser.add_argument("--llm", default=None, help="HF folder of the LLM (default: the offline SmolLM2-135M)")
    parser.add_argument("--original_python", "--original-python", default=None, help="python of the original's venv")
    parser.add_argument("--original_repo", "--original-repo", default=None, help="the original's source tree")
    parser.add_argument("--output", default=str(HERE / "results" / "bench_vs_original.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker_out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        result = measure_ours(json.loads(Path(args.worker).read_text()))
        Path(args.worker_out).write_text(json.dumps(result))
        return
    if args.llm is None:
        from opentslm_hub.offline_llm import smollm2_path

        args.llm = str(smollm2_path())
    with_original = bool(args.original_python and args.original_repo)
    if not with_original:
        print("No --original_python/--original_repo: measuring ours only; the ratios to the original are missing.")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.llm)
    entries, exact_rows = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        for round_index in range(args.rounds):
            for dtype in args.dtypes:
                for spec in args.rows.split(","):
                    rows = exact_rows.get(spec) or rows_for(
                        spec, tokenizer, args.batch_size, args.caption_tokens, args.seed
                    )
                    plan = [("ours", "packed")] + ([("ours_padded", "padded")] if args.padded else [])
                    original_ok = with_original and not spec.startswith("ecg")
                    if original_ok:
                        plan.insert(0 if round_index % 2 == 0 else len(plan), ("original", None))
                    for name, variant in plan:
                        if name == "original":
                            result, used = run_original(args, spec, dtype, workdir)
                            if used:  # train ours on exactly the rows the original trained on
                                rows = exact_rows[spec] = used
                        else:
                            result = run_ours(args, spec, dtype, rows, variant, workdir)
                        entries.append(
                            {"row": spec, "dtype": dtype, "name": name, "round": round_index, "result": result}
                        )
                        write_report(args, entries, with_original)  # after every run: a cut-short run keeps its rows
    print("\n" + format_table(summarise(entries)))
    print(f"wrote {args.output}")


def write_report(args, entries: list[dict], with_original: bool) -> None:
    table = summarise(entries)
    report = {
        "table": table,
        "markdown": format_table(table),
        "runs": entries,
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "worker_out")},
        "with_original": with_original,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
