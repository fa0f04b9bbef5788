"""Stage 2 – M4 captioning (upstream ``M4QADataset`` / ``m4_loader``).

Raw files: ``m4_series_{F}.csv`` (``id``, ``series`` as a JSON list) and ``m4_captions_{F}.csv`` (``id``,
``caption``) for F in Daily, Hourly, Monthly, Quarterly, Weekly, Yearly, from the M4TimeSeriesCaptionDataset V02
zip. As upstream: frequencies are read in that order, series and captions are inner-joined on ``id`` (series-file
order), a frequency whose two files are both absent is skipped with a warning, and the splits are
``train_test_split(test_size=0.1, seed=42)`` then ``0.1/0.9`` of the rest with seed 43.

Unlike upstream, a frequency with only one of its two files, a duplicated id, or a series that does not parse
(upstream skips it silently) is an error.

Upstream appends the LLM's EOS string to every answer; these records do not: the processor appends the tokenizer's
EOS token id.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from datasets import Dataset, DatasetDict

from .common import (
    BuilderInfo,
    RawDataError,
    Source,
    fetch_zip,
    missing_files,
    parse_float_list,
    read_csv,
    records_to_dataset,
    report_skipped,
    require_text,
    row_ref,
    run_cli,
    split_like_upstream,
)
from .schema import DEFAULT_SERIES_TEXT, make_record

logger = logging.getLogger(__name__)

TASK = "m4"
URL = "https://polybox.ethz.ch/index.php/s/MT3y9WdEebT8wfj/download/M4TimeSeriesCaptionDatasetV02.zip"
FREQUENCIES = ("Daily", "Hourly", "Monthly", "Quarterly", "Weekly", "Yearly")
PRE_PROMPT = "You are an expert in time series analysis."
POST_PROMPT = "Please generate a detailed caption for this time-series, describing it as accurately as possible."
MAX_ENCODER_STEPS = 4096  # 1024 patches of 4: longer series do not fit the encoder's positional table


def series_file(frequency: str) -> str:
    return f"m4_series_{frequency}.csv"


def captions_file(frequency: str) -> str:
    return f"m4_captions_{frequency}.csv"


ALL_FILES = tuple(name for f in FREQUENCIES for name in (series_file(f), captions_file(f)))

INFO = BuilderInfo(
    name="m4",
    title="OpenTSLM stage 2: M4 captioning",
    summary="M4 competition series with generated captions (one series, free-text answer).",
    sources=(
        Source(
            URL,
            "m4_series_{F}.csv, m4_captions_{F}.csv",
            "zip; see github.com/StanfordBDHG/M4TimeSeriesCaptionDataset",
        ),
    ),
    license="unknown",
    license_note="M4 competition data with captions from StanfordBDHG/M4TimeSeriesCaptionDataset; check both "
    "before a public release [verify].",
    layout="\n".join(f"  {name}" for name in ALL_FILES) + "\n  (a frequency may be absent: both of its files)",
    details=(
        "## Prompt\n\n"
        f"- pre_prompt: `{PRE_PROMPT}`\n"
        f"- series text: `{DEFAULT_SERIES_TEXT}`\n"
        f"- post_prompt: `{POST_PROMPT}`\n"
        "- answer: the caption; `metadata.frequency` is the M4 frequency; `id` the M4 series id\n\n"
        "Splits: test 10 % (seed 42), then validation 10 % of all rows (seed 43), as upstream."
    ),
)


def _read_frequency(raw_dir: Path, frequency: str) -> list[dict]:
    series_path, captions_path = raw_dir / series_file(frequency), raw_dir / captions_file(frequency)
    series = read_csv(series_path, ("id", "series"))
    captions = read_csv(captions_path, ("id", "caption"))
    for path, frame in ((series_path, series), (captions_path, captions)):
        duplicated = frame["id"][frame["id"].duplicated()]
        if len(duplicated):
            raise RawDataError(f"{path}: id {duplicated.iloc[0]!r} appears more than once; ids must be unique.")
    common = set(series["id"]) & set(captions["id"])
    if not common:
        # Upstream raises inside load_m4_data and its caller skips the frequency with a warning.
        report_skipped(len(series), f"{frequency} series (no id shared with {captions_path.name})", series_path)
        return []
    report_skipped(len(series) - len(common), "series without a caption (inner join)", series_path)
    report_skipped(len(captions) - len(common), "captions without a series (inner join)", captions_path)

    # Row numbers for error messages refer to the series file, whose order the join keeps.
    series = series.reset_index(names="_row")
    merged = series[series["id"].isin(common)].merge(captions[captions["id"].isin(common)], on="id", how="inner")
    records = []
    for row, series_id, text, caption in merged[["_row", "id", "series", "caption"]].itertuples(index=False):
        where = f"{row_ref(series_path, row)} (id {series_id!r})"
        values = parse_float_list(text, where=where)
        records.append(
            make_record(
                id=series_id,
                task=TASK,
                pre_prompt=PRE_PROMPT,
                time_series=[(DEFAULT_SERIES_TEXT, values)],
                post_prompt=POST_PROMPT,
                answer=require_text(caption, column="caption", where=f"{captions_path.name} id {series_id!r}"),
                metadata={"frequency": frequency},
            )
        )
    return records


def read_records(raw_dir: str | Path) -> Dataset:
    """Series joined with captions, frequency by frequency, in upstream's order (the order it splits)."""
    raw_dir = Path(raw_dir)
    records, skipped = [], []
    for frequency in FREQUENCIES:
        absent = missing_files(raw_dir, (series_file(frequency), captions_file(frequency)))
        if len(absent) == 2:
            skipped.append(frequency)
            continue
        if absent:
            raise RawDataError(
                f"{raw_dir / absent[0]} is missing while the other {frequency} file is there; restore it from {URL} "
                "or remove both files of this frequency."
            )
        records += _read_frequency(raw_dir, frequency)
    if skipped:
        logger.warning(
            "skipped %d of %d M4 frequencies with no files in %s: %s", len(skipped), len(FREQUENCIES), raw_dir, skipped
        )
    if not records:
        raise RawDataError(f"No M4 records in {raw_dir}; {INFO.manual_hint()}")
    too_long = sum(len(r["time_series"][0]["values"]) > MAX_ENCODER_STEPS for r in records)
    if too_long:
        logger.warning("%d M4 series are longer than %d steps, the encoder's limit", too_long, MAX_ENCODER_STEPS)
    return records_to_dataset(records)


def build(raw_dir: str | Path) -> DatasetDict:
    """Join series and captions as upstream does and split them with its seeds (42 for test, 43 for validation)."""
    return split_like_upstream(read_records(raw_dir), test_seed=42, val_seed=43)


def fetch(raw_dir: str | Path) -> None:
    """Download and unpack the V02 zip unless every frequency's two files are already in ``raw_dir``."""
    if missing_files(raw_dir, ALL_FILES):
        fetch_zip(Path(raw_dir), INFO, URL, "M4TimeSeriesCaptionDatasetV02.zip", names=ALL_FILES)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(INFO, build, fetch, argv)


if __name__ == "__main__":
    sys.exit(main())
