"""Stage 3 – HAR-CoT: activity recognition from a 3-axis accelerometer window, with a rationale (upstream
``HARCoTQADataset`` / ``har_cot_loader``).

Raw files: ``har_cot_{train,val,test}_cot.csv`` (columns ``x_axis``, ``y_axis``, ``z_axis`` as Python-list strings,
``label``, ``rationale``), which fix the splits (no seed). As upstream, repeated header rows (``x_axis ==
"x_axis"``) are dropped; here they are also counted and reported. A label outside the 8 activities, a non-finite
value, or axes of different lengths are errors.

Upstream appends the LLM's EOS string to every answer; these records do not: the processor appends the tokenizer's
EOS token id.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from datasets import DatasetDict

from .common import (
    BuilderInfo,
    RawDataError,
    Source,
    fetch_zip,
    fixed_splits,
    missing_files,
    parse_float_list,
    read_csv,
    report_skipped,
    require_file,
    require_text,
    row_ref,
    run_cli,
)
from .schema import make_record

TASK = "har_cot"
URL = "https://polybox.ethz.ch/index.php/s/kD74GnMYxn3HBEM/download"
FILES = {"train": "har_cot_train_cot.csv", "validation": "har_cot_val_cot.csv", "test": "har_cot_test_cot.csv"}
AXES = ("x", "y", "z")
COLUMNS = ("x_axis", "y_axis", "z_axis", "label", "rationale")
LABELS = ("biking", "lying", "running", "sitting", "standing", "walking", "walking_down", "walking_up")
SERIES_TEXTS = tuple(
    f"The following is the accelerometer data on the {axis}-axis, it has mean {{mean:.4f}} and std {{std:.4f}}:"
    for axis in AXES
)
_INDENT = " " * 8  # upstream's prompt is an indented triple-quoted string; only the ends are stripped
PRE_PROMPT = "\n".join(
    [
        (
            "You are given accelerometer data in all three dimensions. Your task is to classify the activity based on "
            "analysis of the data."
        ),
        "",
        _INDENT + "Instructions:",
        _INDENT + "- Begin by analyzing the time series without assuming a specific label.",
        _INDENT + "- Think step-by-step about what the observed patterns suggest regarding movement intensity and "
        "behavior.",
        _INDENT + "- Write your rationale as a single, natural paragraph — do not use bullet points, numbered steps, "
        "or section headings.",
        _INDENT + "- Do **not** mention any class label until the final sentence.",
        "",
        _INDENT + "Possible activity labels are:",
        _INDENT + ", ".join(LABELS) + ".",
        _INDENT,
        _INDENT + '- Make sure that your last word is the answer. You MUST end your response with "Answer: "',
    ]
)
POST_PROMPT = "Rationale:"

INFO = BuilderInfo(
    name="har_cot",
    title="OpenTSLM stage 3: HAR-CoT",
    summary="Human activity recognition from 3-axis accelerometer windows, answered with a chain-of-thought "
    "rationale ending in 'Answer: <label>'.",
    sources=(Source(URL, ", ".join(FILES.values()), "zip har_cot.zip"),),
    license="unknown",
    license_note="rationales released by the OpenTSLM authors on polybox; check the terms of the underlying HAR "
    "recordings before a public release [verify].",
    layout="\n".join(f"  {name}" for name in FILES.values()),
    details=(
        "## Prompt\n\n"
        "- pre_prompt: upstream's HAR instructions listing the labels (interior lines keep 8 leading spaces)\n"
        "- series texts: `The following is the accelerometer data on the {x|y|z}-axis, it has mean {mean:.4f} and "
        "std {std:.4f}:`\n"
        f"- post_prompt: `{POST_PROMPT}`\n"
        "- answer: the rationale; label: one of " + ", ".join(f"`{label}`" for label in LABELS) + "\n\n"
        "Splits: fixed by the upstream files (`val` is `validation`)."
    ),
)


def _read_split(path: Path, split: str) -> list[dict]:
    frame = read_csv(path, COLUMNS)
    header_rows = frame["x_axis"] == "x_axis"
    report_skipped(int(header_rows.sum()), "repeated header rows", path)
    records = []
    for row, x_axis, y_axis, z_axis, label, rationale in frame[~header_rows][list(COLUMNS)].itertuples():
        where = row_ref(path, row)
        if label not in LABELS:
            raise RawDataError(f"{where}: label {label!r} is not one of {LABELS}.")
        channels = [
            parse_float_list(text, where=f"{where} column '{axis}_axis'")
            for axis, text in zip(AXES, (x_axis, y_axis, z_axis))
        ]
        lengths = [len(values) for values in channels]
        if len(set(lengths)) != 1:
            raise RawDataError(f"{where}: the x/y/z axes have {lengths} values; a window needs equal lengths.")
        records.append(
            make_record(
                id=f"{split}/{row}",
                task=TASK,
                pre_prompt=PRE_PROMPT,
                time_series=list(zip(SERIES_TEXTS, channels)),
                post_prompt=POST_PROMPT,
                answer=require_text(rationale, column="rationale", where=where),
                label=label,
            )
        )
    return records


def build(raw_dir: str | Path) -> DatasetDict:
    """Read the three upstream split files."""
    return fixed_splits(
        {split: _read_split(require_file(raw_dir, name, info=INFO), split) for split, name in FILES.items()}
    )


def fetch(raw_dir: str | Path) -> None:
    """Download and unpack har_cot.zip unless the three CSVs are already in ``raw_dir``."""
    if missing_files(raw_dir, FILES.values()):
        fetch_zip(Path(raw_dir), INFO, URL, "har_cot.zip", names=FILES.values())


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(INFO, build, fetch, argv)


if __name__ == "__main__":
    sys.exit(main())
