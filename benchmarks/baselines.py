"""Is the encoder worth it? Text-only LLM baselines, OpenTSLM and a statistical floor on the same data and LLM.

Two tasks from the offline sets, every LLM row on SmolLM2-135M-Instruct (offline) with the same LoRA adapters:

- **Lotka–Volterra forecasting** (`lotka_volterra_forecast`): the last value and a statsmodels ARIMA(2,0,1) per
  channel (floors); LLMTime text (scaled integers, digits as tokens) + LoRA; OpenTSLM-SP (encoder + projector +
  LoRA) reading the series as patches and writing the set's own `prey,predator;...` answers. MSE and MAE on the
  held-out series, in the populations' units.
- **OU annotation** (`ou_annotations`): two-digit integer text (00–99) + LoRA; OpenTSLM-SP. Feature agreement of
  the generated JSON with the series (trend, noise, extrema; `opentslm_hub.annotation_agreement`), cosine
  similarity to the reference with all-MiniLM-L6-v2, and the share of valid JSON.

FLOPs use the LLMTime study's accounting (training 6·N·T, inference 2·N·T over prompt and generated tokens, N all
parameters the tokens pass through), next to its 1e17 budget. The page and JSON go to benchmarks/results/.

    OMP_NUM_THREADS=1 python benchmarks/baselines.py --budget smallest   # a few minutes: the CI check
    OMP_NUM_THREADS=1 python benchmarks/baselines.py --budget small      # the committed table (~27 min on a shared 2-core CPU)
    python benchmarks/baselines.py --budget large --device cuda          # every training series, more epochs
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_datasets.synthetic import LV_PRE_PROMPT, OU_POST_PROMPT, OU_PRE_PROMPT, format_forecast, to_two_digit_tokens  # noqa: E402
from opentslm_hub.text_series import (  # noqa: E402
    LLMTIME_FLOP_BUDGET,
    LLMTimeFormat,
    forward_flops,
    llmtime_decode,
    llmtime_encode,
    llmtime_scales,
    training_flops,
)

LV_METHODS = ("last_value", "statsmodels_arima", "llmtime_lora", "opentslm_sp")
OU_METHODS = ("two_digit_lora", "opentslm_sp")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLM_NAME = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Budget:
    """Data sizes and training schedule of one run (the same for every LLM row)."""

    lv_series: int  # series built (80/10/10 split)
    lv_train: int
    lv_test: int
    lv_history: int
    lv_horizon: int
    ou_series: int
    ou_length: int
    ou_train: int
    ou_test: int
    epochs: int
    batch_size: int = 4
    generation_batch_size: int = 10
    learning_rate: float = 2e-4  # LoRA, and OpenTSLM-SP's encoder
    lora_r: int = 8
    lora_alpha: int = 16


BUDGETS = {
    "smallest": Budget(
        lv_series=40, lv_train=4, lv_test=2, lv_history=16, lv_horizon=2,
        ou_series=20, ou_length=30, ou_train=4, ou_test=2, epochs=1, batch_size=2, learning_rate=1e-3,
    ),
    "small": Budget(
        lv_series=100, lv_train=12, lv_test=6, lv_history=24, lv_horizon=4,
        ou_series=60, ou_length=30, ou_train=12, ou_test=6, epochs=1, batch_size=1, learning_rate=1e-3,
    ),
    "large": Budget(
        lv_series=200, lv_train=160, lv_test=20, lv_history=80, lv_horizon=20,
        ou_series=200, ou_length=100, ou_train=160, ou_test=20, epochs=10, batch_size=8, learning_rate=2e-4,
    ),
}  # fmt: skip


@dataclass
class Row:
    task: str
    method: str
    llm: str | None
    trained_parameters: int
    total_parameters: int
    train_tokens: int
    train_flops: float
    inference_flops_per_series: float
    tokens_per_series: float  # prompt + answer tokens the LLM reads per series (training layout)
    wall_seconds: float
    scores: dict[str, Any]
    note: str = ""


# ---------------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------------
def build_sets(budget: Budget) -> dict[str, dict[str, list[dict]]]:
    from hub_datasets.offline import load_offline

    lv = load_offline(
        "lotka_volterra_forecast", num_series=budget.lv_series, history=budget.lv_history, horizon=budget.lv_horizon
    )
    ou = load_offline("ou_annotations", num_series=budget.ou_series, length=budget.ou_length)
    sets = {}
    for name, data, train, test in (
        ("lotka_volterra", lv, budget.lv_train, budget.lv_test),
        ("ou_annotation", ou, budget.ou_train, budget.ou_test),
    ):
        for split, wanted in (("train", train), ("test", test)):
            if len(data[split]) < wanted:
                raise ValueError(f"{name}: the budget asks {wanted} {split} records, the set has {len(data[split])}.")
        sets[name] = {
            "train": list(data["train"].select(range(train))),
            "validation": list(data["validation"].select(range(1))),
            "test": list(data["test"].select(range(test))),
        }
    return sets


def series_of(record: dict) -> np.ndarray:
    """The record's series as steps × channels."""
    return np.asarray([channel["values"] for channel in record["time_series"]], dtype=np.float64).T


def metadata_of(record: dict) -> dict[str, Any]:
    """The record's metadata (stored as a JSON string in the shared schema)."""
    metadata = record["metadata"]
    return json.loads(metadata) if isinstance(metadata, str) else dict(metadata)


def future_of(record: dict) -> np.ndarray:
    return np.asarray(metadata_of(record)["future"], dtype=np.float64).T


def forecast_scores(records: Sequence[dict], forecasts: Sequence[np.ndarray | None]) -> dict[str, Any]:
    """MSE and MAE over the forecasts that could be read, with evaluation's own scoring of the set's format."""
    from recipes.evaluation import compute_metrics

    texts = [format_forecast(f, decimals=6) if f is not None else "" for f in forecasts]
    metrics = compute_metrics("forecast", texts, [r["answer"] for r in records], records)
    return {key: metrics[key] for key in ("mse", "mae", "num_unparsable", "num_samples")}


# ---------------------------------------------------------------------------------------------------------------------
# Statistical floors
# ---------------------------------------------------------------------------------------------------------------------
def last_value_forecast(history: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(history[-1:], horizon, axis=0)


def arima_forecast(history: np.ndarray, horizon: int, order: tuple[int, int, int] = (2, 0, 1)) -> np.ndarray:
    """statsmodels ARIMA per channel (stationary and invertible by construction, so forecasts stay bounded)."""
    import warnings

    from statsmodels.tsa.arima.model import ARIMA

    columns = []
    for channel in history.T:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on short series; the forecast is still scored
            fit = ARIMA(channel, order=order, trend="c").fit()
        columns.append(fit.forecast(horizon))
    return np.stack(columns, axis=1)


def run_floor(method: str, data: dict[str, list[dict]], horizon: int) -> Row:
    forecaster = {"last_value": last_value_forecast, "statsmodels_arima": arima_forecast}[method]
    start = time.perf_counter()
    forecasts = [forecaster(series_of(record), horizon) for record in data["test"]]
    return Row(
        task="lotka_volterra",
        method=method,
        llm=None,
        trained_parameters=0,
        total_parameters=0,
        train_tokens=0,
        train_flops=0.0,
        inference_flops_per_series=0.0,
        tokens_per_series=0.0,
        wall_seconds=time.perf_counter() - start,
        scores=forecast_scores(data["test"], forecasts),
        note="fitted per test series on its history" if method != "last_value" else "repeats the last step",
    )


# ---------------------------------------------------------------------------------------------------------------------
# Text-only LLM + LoRA (TRL SFTTrainer on prompt/completion pairs)
# ---------------------------------------------------------------------------------------------------------------------
LLMTIME = LLMTimeFormat(precision=2, quantile=0.9)


def llmtime_prompt(record: dict) -> tuple[str, str, np.ndarray]:
    """Prompt, completion and scales of one forecasting record in LLMTime text."""
    history = series_of(record)
    scales = llmtime_scales(history, LLMTIME)
    prompt = (
        f"{LV_PRE_PROMPT} Each step is written as prey,predator in scaled integers; steps are separated by "
        f"semicolons.\nHistory: {llmtime_encode(history, scales, LLMTIME)}\nForecast {metadata_of(record)['horizon']} "
        "steps:"
    )
    return prompt, llmtime_encode(future_of(record), scales, LLMTIME), scales


def two_digit_prompt(record: dict) -> tuple[str, str]:
    """Prompt and completion of one OU record with the series as two-digit integers (the set is already 0–99)."""
    return f"{OU_PRE_PROMPT}\nSeries: {to_two_digit_tokens(series_of(record)[:, 0])}\n{OU_POST_PROMPT}\n", record[
        "answer"
    ]


def sft_config(budget: Budget, output_dir: Path, device: str, **settings):
    """The training settings every LLM row shares (fp32, no checkpoints or evaluation during training)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=budget.epochs,
        per_device_train_batch_size=budget.batch_size,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_length=None,  # never truncate a series
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=device == "cpu",
        seed=42,
        data_seed=42,
        **settings,
    )


def train_text_lora(
    prompts: list[str], completions: list[str], budget: Budget, output_dir: Path, device: str
) -> tuple[Any, Any, dict]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from opentslm_hub.offline_llm import smollm2_path

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
    args = sft_config(budget, output_dir, device, learning_rate=budget.learning_rate, completion_only_loss=True)
    peft_config = LoraConfig(
        r=budget.lora_r,
        lora_alpha=budget.lora_alpha,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts, "completion": completions}),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    trainer.train()
    model = trainer.model.eval()
    total = sum(p.numel() for p in model.parameters())  # adapters included, as in the OpenTSLM rows
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, tokenizer, {"total": total, "trained": trained, "lengths": lengths}


@torch.no_grad()
def generate_text(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> tuple[list[str], int]:
    """Greedy continuations (left-padded batches) and the tokens the model read: prompts plus generated tokens up
    to and including the end token."""
    texts, tokens = [], 0
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True).to(model.device)
        output = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        new = output[:, batch["input_ids"].shape[1] :]
        tokens += int(batch["attention_mask"].sum())
        for row in new:
            ends = (row == tokenizer.eos_token_id).nonzero()
            tokens += int(ends[0]) + 1 if len(ends) else len(row)
        texts += tokenizer.batch_decode(new, skip_special_tokens=True)
    return texts, tokens


def text_row(
    task: str, method: str, stats: dict, epochs: int, start: float, inference_tokens: int, tests: int, scores: dict
) -> Row:
    train_tokens = epochs * sum(stats["lengths"])
    return Row(
        task=task,
        method=method,
        llm=LLM_NAME,
        trained_parameters=stats["trained"],
        total_parameters=stats["total"],
        train_tokens=train_tokens,
        train_flops=training_flops(stats["total"], train_tokens),
        inference_flops_per_series=forward_flops(stats["total"], inference_tokens) / tests,
        tokens_per_series=float(np.mean(stats["lengths"])),
        wall_seconds=time.perf_counter() - start,
        scores=scores,
    )


def run_llmtime(data: dict[str, list[dict]], budget: Budget, workdir: Path, device: str) -> Row:
    start = time.perf_counter()
    train = [llmtime_prompt(record) for record in data["train"]]
    model, tokenizer, stats = train_text_lora(
        [p for p, _, _ in train], [c for _, c, _ in train], budget, workdir / "llmtime", device
    )
    test = [llmtime_prompt(record) for record in data["test"]]
    longest = max(len(tokenizer(c)["input_ids"]) for _, c, _ in test)
    texts, tokens = generate_text(model, tokenizer, [p for p, _, _ in test], longest + 8, budget.generation_batch_size)
    forecasts = [
        llmtime_decode(text, scales, LLMTIME, horizon=budget.lv_horizon) for text, (_, _, scales) in zip(texts, test)
    ]
    scores = forecast_scores(data["test"], forecasts)
    scores["example_output"] = texts[0]
    return text_row("lotka_volterra", "llmtime_lora", stats, budget.epochs, start, tokens, len(test), scores)


def run_two_digit(data: dict[str, list[dict]], budget: Budget, workdir: Path, device: str, embedder) -> Row:
    start = time.perf_counter()
    train = [two_digit_prompt(record) for record in data["train"]]
    model, tokenizer, stats = train_text_lora(
        [p for p, _ in train], [c for _, c in train], budget, workdir / "two_digit", device
    )
    prompts = [two_digit_prompt(record)[0] for record in data["test"]]
    longest = max(len(tokenizer(r["answer"])["input_ids"]) for r in data["test"])
    texts, tokens = generate_text(model, tokenizer, prompts, longest + 16, budget.generation_batch_size)
    scores = annotation_scores(data["test"], texts, embedder)
    return text_row("ou_annotation", "two_digit_lora", stats, budget.epochs, start, tokens, len(prompts), scores)


def annotation_scores(records: Sequence[dict], texts: Sequence[str], embedder) -> dict[str, Any]:
    from opentslm_hub.annotation_agreement import feature_agreement, parse_annotation

    checks = [feature_agreement(text, series_of(record)[:, 0]) for text, record in zip(texts, records)]
    valid = [parse_annotation(text) is not None for text in texts]
    cosine = embedder.cosine(list(texts), [record["answer"] for record in records])
    return {
        "trend_agreement": float(np.mean([c["trend"] for c in checks])),
        "noise_agreement": float(np.mean([c["noise"] for c in checks])),
        "extrema_agreement": float(np.mean([c["extrema"] for c in checks])),
        "cosine_similarity": float(np.mean(cosine)),
        "json_valid_rate": float(np.mean(valid)),
        "num_samples": len(records),
        "example_output": texts[0],
    }


# ---------------------------------------------------------------------------------------------------------------------
# OpenTSLM-SP through the recipe (recipes/sft.py)
# ---------------------------------------------------------------------------------------------------------------------
def run_opentslm(
    task: str, data: dict[str, list[dict]], budget: Budget, workdir: Path, device: str, score: Callable
) -> Row:
    from datasets import Dataset, DatasetDict
    from trl import ModelConfig

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
    from opentslm_hub.offline_llm import smollm2_path
    from recipes.collator import OpenTSLMDataCollator, encode_prompts
    from recipes.evaluation import generate_predictions
    from recipes.sft import BEST_MODEL_DIR, OpenTSLMScriptArguments, main

    start = time.perf_counter()
    folder = workdir / f"{task}_records"
    DatasetDict({split: Dataset.from_list(records) for split, records in data.items()}).save_to_disk(str(folder))
    output_dir = workdir / f"opentslm_sp_{task}"
    script_args = OpenTSLMScriptArguments(
        dataset_name=str(folder),
        stage="stage2",
        use_chat_template=False,
        train_encoder=True,
        train_projector=True,
        learning_rate_encoder=budget.learning_rate,
        learning_rate_projector=budget.learning_rate,
        learning_rate_lora=budget.learning_rate,
        early_stopping_patience=None,
        run_test=False,
    )
    training_args = sft_config(
        budget, output_dir, device, remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True}
    )
    model_args = ModelConfig(
        model_name_or_path=str(smollm2_path()),
        dtype="float32",
        use_peft=True,
        lora_r=budget.lora_r,
        lora_alpha=budget.lora_alpha,
        lora_dropout=0.0,
        lora_target_modules=list(LORA_TARGETS),
    )
    main(script_args, training_args, model_args)
    best = output_dir / BEST_MODEL_DIR
    processor = OpenTSLMProcessor.from_pretrained(str(best))
    model = OpenTSLMForCausalLM.from_pretrained(str(best), dtype=torch.float32).to(device).eval()
    total = sum(p.numel() for p in model.parameters())
    model.set_trainable(encoder=True, projector=True, llm=False)  # what the recipe trained, to count it
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    collator = OpenTSLMDataCollator(processor)
    lengths = [int(collator([record])["attention_mask"].sum()) for record in data["train"]]
    longest = max(len(processor.tokenizer(r["answer"])["input_ids"]) for r in data["test"])
    generated = generate_predictions(
        model, processor, data["test"], batch_size=budget.generation_batch_size, max_new_tokens=longest + 16
    )
    texts = [row["prediction"] for row in generated]
    prompt_tokens = sum(int(encode_prompts(processor, [record])["attention_mask"].sum()) for record in data["test"])
    new_tokens = sum(len(processor.tokenizer(text)["input_ids"]) + 1 for text in texts)
    stats = {"total": total, "trained": trained, "lengths": lengths}
    scores = score(texts)
    row = text_row(task, "opentslm_sp", stats, budget.epochs, start, prompt_tokens + new_tokens, len(texts), scores)
    row.note = "encoder + projector + LoRA; N counts the encoder, T the LLM sequence (one token per patch)"
    return row


# ---------------------------------------------------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------------------------------------------------
def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render_page(result: dict) -> str:
    budget = result["budget"]
    lines = [
        "# Text-only LLM baselines against OpenTSLM-SP",
        "",
        f"Written by `{result['command']}` ({result['threads']} thread(s), {result['device']}, "
        f"total wall time {result['wall_seconds']:.0f} s). Budget `{result['budget_name']}`: "
        + ", ".join(f"{key}={value}" for key, value in budget.items())
        + ". Every LLM row: SmolLM2-135M-Instruct in fp32, LoRA r="
        f"{budget['lora_r']} alpha={budget['lora_alpha']} on all attention and MLP projections, the same epochs, "
        "batch size and learning rate; greedy decoding.",
        "",
        f"FLOPs: training 6·N·T over the tokens trained on, inference 2·N·T over prompt and generated tokens (N all "
        f"parameters). The LLMTime study's budget is {LLMTIME_FLOP_BUDGET:.0e} FLOPs; each run's share of it is given.",
        "Tokens / series: the prompt and answer of one training series as the LLM reads them (OpenTSLM-SP: one token "
        "per patch of the series instead of its digits). Wall s: data, model loading, training and generation.",
        "",
    ]
    for task, title, score_keys in (
        ("lotka_volterra", "Lotka–Volterra forecasting (MSE/MAE on held-out series, population units)",
         ("mse", "mae", "num_unparsable")),
        ("ou_annotation", "OU annotation (agreement with features computed from the series; cosine to the reference)",
         ("trend_agreement", "noise_agreement", "extrema_agreement", "cosine_similarity", "json_valid_rate")),
    ):  # fmt: skip
        rows = [row for row in result["rows"] if row["task"] == task]
        if not rows:
            continue
        lines += [
            f"## {title}",
            "",
            "| method | LLM | trained params | train FLOPs | share of 1e17 | inference FLOPs / series | tokens / series "
            "| " + " | ".join(score_keys) + " | wall s |",
            "|---" * (8 + len(score_keys)) + "|",
        ]
        for row in rows:
            lines.append(
                f"| {row['method']} | {row['llm'] or '–'} | {row['trained_parameters']:,} | "
                f"{row['train_flops']:.3g} | {row['train_flops'] / LLMTIME_FLOP_BUDGET:.2g} | "
                f"{row['inference_flops_per_series']:.3g} | {row['tokens_per_series']:.0f} | "
                + " | ".join(_number(row["scores"].get(key)) for key in score_keys)
                + f" | {row['wall_seconds']:.0f} |"
            )
        lines.append("")
    lines += ["## Notes", "", result.get("notes", "").strip(), ""]
    return "\n".join(lines)


def default_output(budget_name: str) -> Path:
    """The committed table is the `small` budget's; other budgets write next to it under their own name."""
    name = "baselines" if budget_name == "small" else f"baselines_{budget_name}"
    return ROOT / "benchmarks" / "results" / f"{name}.json"


def write_results(result: dict, output: Path, page: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    page.write_text(render_page(result))
    print(f"wrote {output} and {page}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=list(BUDGETS), default="smallest")
    parser.add_argument("--tasks", nargs="+", choices=["lotka_volterra", "ou_annotation"], default=None)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda for one GPU")
    parser.add_argument("--output", default=None, help="JSON path (default: benchmarks/results/baselines*.json)")
    parser.add_argument("--page", default=None, help="markdown page (default: the JSON path with .md)")
    parser.add_argument("--notes", default=None, help="a markdown file whose text ends the page")
    parser.add_argument(
        "--render", default=None, help="only rewrite the page (and its notes) from this JSON of an earlier run"
    )
    args = parser.parse_args(argv)

    if args.render:
        output = Path(args.render)
        result = json.loads(output.read_text())
        if args.notes:
            result["notes"] = Path(args.notes).read_text()
        write_results(result, output, Path(args.page) if args.page else output.with_suffix(".md"))
        return result

    budget = BUDGETS[args.budget]
    tasks = args.tasks or ["lotka_volterra", "ou_annotation"]
    output = Path(args.output) if args.output else default_output(args.budget)
    page = Path(args.page) if args.page else output.with_suffix(".md")
    torch.manual_seed(0)
    began = time.perf_counter()
    sets = build_sets(budget)
    rows: list[Row] = []

    def report(row: Row) -> None:
        rows.append(row)
        shown = {k: v for k, v in row.scores.items() if k != "example_output"}
        print(f"{row.task:15} {row.method:20} {row.wall_seconds:7.1f} s  train {row.train_flops:.3g} FLOPs  {shown}")

    with tempfile.TemporaryDirectory(prefix="baselines-") as tmp:
        workdir = Path(tmp)
        if "lotka_volterra" in tasks:
            lv = sets["lotka_volterra"]
            for method in ("last_value", "statsmodels_arima"):
                report(run_floor(method, lv, budget.lv_horizon))
            report(run_llmtime(lv, budget, workdir, args.device))
            report(
                run_opentslm(
                    "lotka_volterra", lv, budget, workdir, args.device,
                    lambda texts: _sp_forecast_scores(lv["test"], texts, budget.lv_horizon),
                )
            )  # fmt: skip
        if "ou_annotation" in tasks:
            from opentslm_hub.annotation_agreement import SentenceEmbedder

            ou, embedder = sets["ou_annotation"], SentenceEmbedder()
            report(run_two_digit(ou, budget, workdir, args.device, embedder))
            report(
                run_opentslm(
                    "ou_annotation", ou, budget, workdir, args.device,
                    lambda texts: annotation_scores(ou["test"], texts, embedder),
                )
            )  # fmt: skip

    result = {
        "command": f"python benchmarks/baselines.py --budget {args.budget}",
        "budget_name": args.budget,
        "budget": asdict(budget),
        "device": args.device,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "flop_budget_reference": LLMTIME_FLOP_BUDGET,
        "wall_seconds": time.perf_counter() - began,
        "rows": [asdict(row) for row in rows],
        "notes": Path(args.notes).read_text() if args.notes else "",
    }
    write_results(result, output, page)
    return result


def _sp_forecast_scores(records: Sequence[dict], texts: Sequence[str], horizon: int) -> dict[str, Any]:
    from opentslm_hub.parsing import parse_forecast

    scores = forecast_scores(records, [parse_forecast(text, 2, horizon) for text in texts])
    scores["example_output"] = texts[0]
    return scores


if __name__ == "__main__":
    main()
