"""Does a model read a series' trend, or state a prior? Captions and trend questions on held-out real windows,
forward and reversed in time, and captions of held-out synthetic series.

Reversing a window in time flips its trend (rising becomes falling) and keeps its level, spread and period, so the
prompt's text (mean and std) is the same both ways and only the series differs. A model that reads the trend changes
its answer with the direction; a model that states a prior gives the same answer both ways. Four sets come from the
test split of `captions_bundled` (no training record shares an observation with them):

- captions, forward: the test split as it is (the trend a caption states, read with `read_caption_facts`);
- captions, reversed: each window reversed, with its caption written again from the reversed values;
- trend questions, forward and reversed: stage 1's trend question ("upward / downward / constant trend", options
  rotated from record to record) on the same windows, the answer being the window's own least-squares trend.

A fifth, captions, synthetic, is the test split of `captions_synthetic`: series whose level, scale, cycles and
direction vary independently (about a third each rising, falling and flat), so it tells whether the model reads the trend
at all, apart from whether it carries over to real series.

Each set is evaluated with `python -m recipes.run_eval` (greedy, fp32). The table gives, per set, the accuracy and
how often each direction was stated for each true direction.

    python benchmarks/trend_reading.py --model_path outputs/smollm2-135m-default/stage2/best
    python benchmarks/trend_reading.py --model_path opentslm_hub/models/opentslm-sp-smollm2-135m \\
        --base_model "$(python -m opentslm_hub.offline_llm)" --output benchmarks/results/trend_reading.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from hub_datasets.bundled import caption_features, write_caption
from hub_datasets.common import records_to_dataset
from hub_datasets.offline import load_offline
from hub_datasets.schema import make_record, option_letters, option_listing
from hub_datasets.synthetic import TSQA_QUESTIONS, TSQA_SERIES_TEXT
from opentslm_hub import features as F
from opentslm_hub.parsing import read_caption_facts

OPTION_OF = {"increasing": "upward trend", "decreasing": "downward trend", "flat": "constant trend"}


def reversed_caption(record: dict) -> dict:
    """The record with its one series reversed in time and its caption written again from the reversed values."""
    (series,) = record["time_series"]
    values = np.asarray(series["values"], dtype=np.float64)[::-1].copy()
    return {
        **record,
        "id": record["id"] + "-reversed",
        "time_series": [{**series, "values": values.tolist()}],
        "answer": write_caption(caption_features(values)),
    }


def trend_question(record: dict, rotation: int) -> dict:
    """Stage 1's trend question on the record's series; the correct option is the series' own trend."""
    question, options = TSQA_QUESTIONS["trend"]
    values = np.asarray(record["time_series"][0]["values"], dtype=np.float64)
    correct = OPTION_OF[F.linear_trend(values).direction]
    order = list(np.roll(options, rotation))
    letter = option_letters(len(order))[order.index(correct)]
    return make_record(
        id=record["id"],
        task="tsqa",
        pre_prompt=f"{question}\n{option_listing(order)}",
        time_series=[(TSQA_SERIES_TEXT, values)],
        post_prompt="Predict the trend Answer:",
        answer=f"{correct} {letter}",
        label=letter,
    )


def build_sets(folder: Path) -> dict[str, Path]:
    test = list(load_offline("captions_bundled")["test"])
    backwards = [reversed_caption(record) for record in test]
    sets = {
        "captions, forward": test,
        "captions, reversed": backwards,
        "trend questions, forward": [trend_question(r, k) for k, r in enumerate(test)],
        "trend questions, reversed": [trend_question(r, k) for k, r in enumerate(backwards)],
        "captions, synthetic": list(load_offline("captions_synthetic")["test"]),
    }
    paths = {}
    for number, (name, records) in enumerate(sets.items()):
        path = folder / f"set{number}"
        DatasetDict({"test": records_to_dataset(records)}).save_to_disk(str(path))
        paths[name] = path
    return paths


def stated_direction(name: str, text: str) -> str | None:
    if name.startswith("captions"):
        return read_caption_facts(text).trend
    found = [d for d in OPTION_OF if OPTION_OF[d].split()[0] in text]
    return found[0] if len(found) == 1 else None


def evaluate(model_path: str, base_model: str | None, name: str, dataset: Path, output: Path) -> dict:
    captions = name.startswith("captions")
    command = [
        sys.executable, "-m", "recipes.run_eval", "--model_path", model_path, "--dataset", str(dataset),
        "--split", "test", "--output_dir", str(output), "--max_new_tokens", "200" if captions else "16",
        "--dtype", "float32", "--no_loss", *(["--base_model", base_model] if base_model else []),
    ]  # fmt: skip
    subprocess.run(command, check=True)
    rows = [json.loads(line) for line in (output / "predictions.jsonl").read_text().splitlines()]
    pairs = Counter((stated_direction(name, r["reference"]), stated_direction(name, r["prediction"])) for r in rows)
    hits = sum(count for (truth, stated), count in pairs.items() if truth == stated)
    stated = {f"{truth} -> {said}": count for (truth, said), count in sorted(pairs.items(), key=str)}
    return {"records": len(rows), "trend_accuracy": hits / len(rows), "stated": stated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_path", required=True, help="a saved OpenTSLM folder (or Hub id)")
    parser.add_argument("--base_model", help="the base LLM of an adapter-only folder, e.g. the offline SmolLM2")
    parser.add_argument("--output", default="benchmarks/results/trend_reading.json")
    args = parser.parse_args()
    results = {"model_path": args.model_path, "sets": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for name, dataset in build_sets(Path(scratch)).items():
            output = Path(scratch) / f"eval-{dataset.name}"
            results["sets"][name] = evaluate(args.model_path, args.base_model, name, dataset, output)
    print(f"\n{'set':<28} {'records':>7} {'trend acc':>9}  true -> stated (count)")
    for name, row in results["sets"].items():
        stated = ", ".join(f"{pair} ({count})" for pair, count in row["stated"].items())
        print(f"{name:<28} {row['records']:>7} {row['trend_accuracy']:>9.3f}  {stated}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
