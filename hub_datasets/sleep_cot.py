"""Stage 4 – Sleep-CoT: sleep staging from a 30 s EEG epoch (Fpz-Cz), with a rationale (upstream
``SleepEDFCoTQADataset`` in ``sleep/SleepEDFCoTQADataset.py`` / ``sleepedf_cot_loader``; not the image-baseline class
of the same name in ``SleepEDFQADataset.py``).

Raw file: ``sleep_cot.csv`` (``time_series`` written ``"[[...]]"`` with exactly 1500 values, ``label``,
``rationale``). Splits as upstream: sklearn ``train_test_split`` stratified on ``label``, test 0.1 with
``random_state=42``, then validation 0.1/0.9 of the rest with ``random_state=43``.

``label`` keeps the CSV's string (stratification uses it). "Non-REM stage 4" is accepted: upstream's evaluation
merges it into stage 3. Any other label outside the six stages is an error.

Upstream appends the LLM's EOS string to every answer; these records do not: the processor appends the tokenizer's
EOS token id.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict

from .common import (
    BuilderInfo,
    RawDataError,
    Source,
    fetch_files,
    parse_float_list,
    read_csv,
    records_to_dataset,
    require_file,
    require_text,
    row_ref,
    run_cli,
    stratified_split_like_upstream,
)
from .schema import make_record

TASK = "sleep_cot"
CSV_NAME = "sleep_cot.csv"
URL = "https://polybox.ethz.ch/index.php/s/ZryWSdCFJZ9JR3R/download"
COLUMNS = ("time_series", "label", "rationale")
EPOCH_SAMPLES = 1500  # 30 s at ~50 Hz, asserted upstream
LABELS = ("Wake", "Non-REM stage 1", "Non-REM stage 2", "Non-REM stage 3", "REM sleep", "Movement")
LEGACY_LABELS = ("Non-REM stage 4",)  # R&K stage 4, merged into stage 3 by upstream's evaluation
SERIES_TEXT = "The following is the EEG time series, it has mean {mean:.4f} and std {std:.4f}:"
_INDENT = " " * 8  # upstream's prompts are indented triple-quoted strings; only the ends are stripped
PRE_PROMPT = "\n".join(
    [
        (
            "You are given a 30-second EEG time series segment. Your task is to classify the sleep stage based on "
            "analysis of the data."
        ),
        "",
        _INDENT + "Instructions:",
        _INDENT + "- Analyze the data objectively without presuming a particular label.",
        _INDENT + "- Reason carefully and methodically about what the signal patterns suggest regarding sleep stage.",
        _INDENT
        + "- Write your reasoning as a single, coherent paragraph. Do not use bullet points, lists, or section "
        "headers.",
        _INDENT + "- Only reveal the correct class at the very end.",
        _INDENT + "- Never state that you are uncertain or unable to classify the data. You must always provide a "
        "rationale and a final answer.",
    ]
)
# The closing quote after "Answer: is missing upstream too (its string ends the triple quote).
POST_PROMPT = "\n".join(
    [
        "Possible sleep stages are:",
        _INDENT + ", ".join(LABELS),
        "",
        _INDENT + "- Please now write your rationale. Make sure that your last word is the answer. You MUST end your "
        'response with "Answer:',
    ]
)

INFO = BuilderInfo(
    name="sleep_cot",
    title="OpenTSLM stage 4: Sleep-CoT",
    summary="Sleep staging from 30-second Sleep-EDF EEG epochs (1500 samples), answered with a chain-of-thought "
    "rationale ending in 'Answer: <stage>'.",
    sources=(Source(URL, CSV_NAME),),
    license="unknown",
    license_note="EEG from Sleep-EDF (PhysioNet, ODC-By 1.0); rationales released by the OpenTSLM authors on "
    "polybox without a stated license [verify].",
    layout=f"  {CSV_NAME}",
    details=(
        "## Prompt\n\n"
        "- pre_prompt / post_prompt: upstream's sleep-staging instructions (interior lines keep 8 leading spaces)\n"
        f"- series text: `{SERIES_TEXT}`\n"
        "- answer: the rationale; label: the CSV label, one of "
        + ", ".join(f"`{label}`" for label in LABELS + LEGACY_LABELS)
        + "\n\nSplits: stratified on label, test 10 % (random_state 42), then validation 10 % of all rows "
        "(random_state 43), as upstream."
    ),
)


def read_records(raw_dir: str | Path) -> Dataset:
    """All rows of ``raw_dir/sleep_cot.csv`` as records, in file order (the order upstream splits)."""
    path = require_file(raw_dir, CSV_NAME, info=INFO)
    frame = read_csv(path, COLUMNS)
    records = []
    for row, (series, label, rationale) in enumerate(frame[list(COLUMNS)].itertuples(index=False)):
        where = row_ref(path, row)
        if label not in LABELS + LEGACY_LABELS:
            raise RawDataError(f"{where}: label {label!r} is not one of {LABELS + LEGACY_LABELS}.")
        values = parse_float_list(series, where=f"{where} column 'time_series'", nesting=2)
        if len(values) != EPOCH_SAMPLES:
            raise RawDataError(f"{where}: the EEG epoch has {len(values)} values, expected {EPOCH_SAMPLES}.")
        records.append(
            make_record(
                id=str(row),
                task=TASK,
                pre_prompt=PRE_PROMPT,
                time_series=[(SERIES_TEXT, values)],
                post_prompt=POST_PROMPT,
                answer=require_text(rationale, column="rationale", where=where),
                label=label,
            )
        )
    return records_to_dataset(records)


def build(raw_dir: str | Path) -> DatasetDict:
    """Read ``raw_dir/sleep_cot.csv`` and split it, stratified on label, as upstream does."""
    return stratified_split_like_upstream(read_records(raw_dir), test_seed=42, val_seed=43)


def fetch(raw_dir: str | Path) -> None:
    """Download ``sleep_cot.csv`` unless it is already in ``raw_dir``."""
    fetch_files(Path(raw_dir), INFO, {CSV_NAME: URL})


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(INFO, build, fetch, argv)


if __name__ == "__main__":
    sys.exit(main())
