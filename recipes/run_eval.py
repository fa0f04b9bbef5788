"""Evaluate a saved OpenTSLM model on one split of a record data set; writes `metrics.json` and `predictions.jsonl`.

    python -m recipes.run_eval --model_path outputs/smollm2-135m/stage2/best --dataset offline:captions_bundled \
        --split test --output_dir outputs/eval/stage2 --max_samples 50

`--dataset` is an offline set (`offline:<name>` or a bare name from `hub_datasets.offline`), a folder written by
`DatasetDict.save_to_disk`, or a Hub data set id. Decoding is greedy unless `--do_sample` is given; it never comes
from the model's generation_config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipes.run_eval",
        description="Generate answers for a split of records with an OpenTSLM model and score them "
        "(BLEU/ROUGE-L/length ratio, accuracy/macro-F1, or MSE/MAE by task), plus test loss and perplexity.",
    )
    parser.add_argument("--model_path", required=True, help="OpenTSLM folder (or Hub id) with model and processor")
    parser.add_argument("--revision", default=None, help="model revision when --model_path is a Hub id")
    parser.add_argument(
        "--base_model",
        default=None,
        help="for a checkpoint of OpenTSLM's own weights only: load its LLM from here instead of the base model its "
        "config names (e.g. a local copy)",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="offline:<name> or an offline set name, a save_to_disk folder, or a Hub data set id",
    )
    parser.add_argument("--dataset_config", default=None, help="Hub data set configuration name")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output_dir", required=True, help="where metrics.json and predictions.jsonl go")
    parser.add_argument("--max_samples", type=int, default=None, help="evaluate only the first N records")
    parser.add_argument("--task", default=None, help="metric family override; defaults to the records' task")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--do_sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--top_p", type=float, default=None, help="nucleus sampling (needs --do_sample), e.g. 0.9")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (needs --do_sample)")
    parser.add_argument("--top_k", type=int, default=None, help="top-k sampling (needs --do_sample)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no_loss", action="store_true", help="skip the test loss and perplexity")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"], help="LLM weights' dtype"
    )
    return parser


def load_split(dataset: str, split: str, *, dataset_config: str | None = None, max_samples: int | None = None) -> Any:
    """One split of records from an offline set, a `save_to_disk` folder or the Hub, cut to `max_samples`."""
    from hub_datasets.offline import available
    from recipes.sft import load_records, select_split

    name = dataset
    if not Path(dataset).exists() and dataset in available():
        name = f"offline:{dataset}"
    return select_split(load_records(name, dataset_config), split, max_samples, dataset)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM, AutoProcessor

    from recipes.evaluation import evaluate_records, split_labels

    split = load_split(args.dataset, args.split, dataset_config=args.dataset_config)
    records = split.select(range(min(args.max_samples, len(split)))) if args.max_samples is not None else split
    dtype = args.dtype if args.dtype == "auto" else getattr(torch, args.dtype)
    base = {"base_model_name_or_path": args.base_model} if args.base_model else {}
    model = AutoModelForCausalLM.from_pretrained(
        args.model_path, trust_remote_code=True, revision=args.revision, dtype=dtype, **base
    )
    processor = AutoProcessor.from_pretrained(args.model_path, trust_remote_code=True, revision=args.revision)
    model.to(PartialState().device)
    metrics = evaluate_records(
        model,
        processor,
        list(records),
        task=args.task,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        do_sample=args.do_sample,
        num_beams=args.num_beams,
        top_p=args.top_p,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        with_loss=not args.no_loss,
        labels=split_labels(split),
    )
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
