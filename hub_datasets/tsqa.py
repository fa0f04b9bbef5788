"""Stage 1 – TSQA multiple-choice questions about one series (upstream ``TSQADataset``).

Raw file: ``TSQA.csv`` from the Hub dataset ``ChengsenWang/TSQA`` (columns ``Task``, ``Question``, ``Answer``,
``Series`` as a JSON list). Splits as upstream: ``train_test_split(test_size=0.1, seed=42)`` for test, then
``0.1/0.9`` of the rest with seed 42 again (upstream reuses 42; its legacy ``data.py`` used 43).

Upstream appends the LLM's EOS string to every answer; these records do not: the processor appends the tokenizer's
EOS token id, so the dataset stays tokenizer-independent.
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
    split_like_upstream,
)
from .schema import make_record

TASK = "tsqa"
CSV_NAME = "TSQA.csv"
URL = "https://huggingface.co/datasets/ChengsenWang/TSQA/resolve/main/TSQA.csv"
COLUMNS = ("Task", "Question", "Answer", "Series")
LABELS = ("(a)", "(b)", "(c)")
# Upstream's TSQA text ends with a period, unlike the other stages' colon.
SERIES_TEXT = "This is the time series, it has mean {mean:.4f} and std {std:.4f}."

INFO = BuilderInfo(
    name="tsqa",
    title="OpenTSLM stage 1: TSQA",
    summary="Multiple-choice questions (trend, volatility, season, outlier) about one synthetic series.",
    sources=(Source(URL, CSV_NAME, "Hub dataset ChengsenWang/TSQA, split train"),),
    license="unknown",
    license_note="see the ChengsenWang/TSQA dataset card; this builder redistributes its rows unchanged [verify].",
    layout=f"  {CSV_NAME}",
    details=(
        "## Prompt\n\n"
        "- pre_prompt: the `Question` column (it lists the options)\n"
        f"- series text: `{SERIES_TEXT}`\n"
        "- post_prompt: `Predict the <Task> Answer:`\n"
        "- answer: `Answer` (`(a) ...`); label: its first three characters, one of "
        + ", ".join(f"`{label}`" for label in LABELS)
        + "\n\nSplits: test 10 % (seed 42), then validation 10 % of all rows (seed 42), as upstream."
    ),
)


def read_records(raw_dir: str | Path) -> Dataset:
    """All rows of ``raw_dir/TSQA.csv`` as records, in file order (the order upstream splits)."""
    path = require_file(raw_dir, CSV_NAME, info=INFO)
    frame = read_csv(path, COLUMNS)
    records = []
    for row, (task, question, answer, series) in enumerate(frame[list(COLUMNS)].itertuples(index=False)):
        where = row_ref(path, row)
        label = require_text(answer, column="Answer", where=where).strip()[:3]
        if label not in LABELS:
            raise RawDataError(f"{where}: Answer {answer[:40]!r} does not start with one of {LABELS}.")
        records.append(
            make_record(
                id=str(row),
                task=TASK,
                pre_prompt=require_text(question, column="Question", where=where),
                time_series=[(SERIES_TEXT, parse_float_list(series, where=f"{where} column 'Series'"))],
                post_prompt=f"Predict the {require_text(task, column='Task', where=where)} Answer:",
                answer=answer,
                label=label,
                metadata={"tsqa_task": task},
            )
        )
    return records_to_dataset(records)


def build(raw_dir: str | Path) -> DatasetDict:
    """Read ``raw_dir/TSQA.csv`` and split it as upstream does."""
    return split_like_upstream(read_records(raw_dir), test_seed=42, val_seed=42)


def fetch(raw_dir: str | Path) -> None:
    """Download ``TSQA.csv`` from the Hub's resolve URL unless it is already in ``raw_dir``."""
    fetch_files(Path(raw_dir), INFO, {CSV_NAME: URL})


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(INFO, build, fetch, argv)


if __name__ == "__main__":
    sys.exit(main())
