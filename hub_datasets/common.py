"""Pieces shared by every dataset builder: fetching raw files, reading them strictly, splitting, the Hub push, the CLI.

A builder module (``hub_datasets/<name>.py``) has three parts:

- ``INFO``: a :class:`BuilderInfo` (title, upstream sources, license, the raw-folder layout) that feeds ``--help``,
  the download hints and the dataset card;
- ``build(raw_dir) -> DatasetDict``: pure, reads only ``raw_dir``, returns train/validation/test records in the
  :mod:`hub_datasets.schema` format;
- ``fetch(raw_dir)``: downloads whatever is missing from the upstream URLs (each failure says where to put the file
  by hand);

and its ``main()`` is ``return run_cli(INFO, build, fetch, argv)``.

Bad raw data raises :class:`RawDataError` (a ``ValueError``) naming the file and the record; records that upstream
itself skips are skipped here too, counted, and reported with :func:`report_skipped`.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import urllib.request
import zipfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset, DatasetDict, concatenate_datasets

from .schema import RECORD_FEATURES

logger = logging.getLogger("hub_datasets")

SPLITS = ("train", "validation", "test")


class RawDataError(ValueError):
    """A raw upstream file is missing or holds a record that cannot be turned into a valid record."""


class DownloadError(RuntimeError):
    """An upstream URL could not be fetched; the message names the URL and where to put the file by hand."""


# --------------------------------------------------------------------------------------------------------------------
# Description of a builder


@dataclass(frozen=True)
class Source:
    """One upstream download: where it comes from and what it must leave in the raw folder."""

    url: str
    provides: str  # what lands in the raw folder, e.g. "har_cot_{train,val,test}_cot.csv"
    note: str = ""


@dataclass(frozen=True)
class BuilderInfo:
    """What a builder is, for ``--help``, download hints and the dataset card."""

    name: str  # module name, e.g. "har_cot"
    title: str
    summary: str
    sources: tuple[Source, ...]
    license: str  # a Hub license id ("cc-by-4.0", "mit", "other", "unknown")
    license_note: str
    layout: str  # the raw folder as the builder expects it, one path per line
    details: str = ""  # extra markdown for the card: prompts, labels, split rule
    tags: tuple[str, ...] = ("time-series", "opentslm")

    def manual_hint(self) -> str:
        return f"the {self.name} builder expects this layout under --raw:\n{self.layout}"


# --------------------------------------------------------------------------------------------------------------------
# Fetching


def download(url: str, dest: str | Path, *, manual_hint: str = "", timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` (kept if it already exists) through a ``.part`` file.

    When the URL cannot be reached (no internet, moved file) a :class:`DownloadError` names the URL and the exact
    path to place the file at by hand.
    """
    dest = Path(dest)
    if dest.exists():
        logger.info("%s already present, not downloading %s", dest, url)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    logger.info("downloading %s -> %s", url, dest)
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "opentslm-hub-datasets"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
    except Exception as err:  # urllib raises URLError, HTTPError, socket timeouts, http.client errors...
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"Could not download {url} ({err}). Fetch it on a machine with internet access and save it as "
            f"{dest.resolve()}, then run the builder again with --download (files already there are not fetched "
            f"again)." + (f" Or place the files by hand: {manual_hint}" if manual_hint else "")
        ) from err
    partial.replace(dest)
    return dest


def extract_zip(
    archive: str | Path, dest_dir: str | Path, *, names: Collection[str] = (), anchor: str | None = None
) -> list[Path]:
    """Extract selected members of ``archive`` into ``dest_dir``, dropping the archive's own folder prefix.

    - ``names``: keep members whose file name is in ``names``, written flat as ``dest_dir/<name>``;
    - ``anchor``: keep members below a folder called ``anchor`` (at any depth), written as ``dest_dir/<anchor>/...``.

    Existing files are kept. Returns the paths written. A member that would land outside ``dest_dir`` is refused.
    """
    archive, dest_dir = Path(archive), Path(dest_dir)
    written = []
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            if member.is_dir():
                continue
            parts = Path(member.filename).parts
            if parts and parts[-1] in names:
                relative = Path(parts[-1])
            elif anchor is not None and anchor in parts[:-1]:
                relative = Path(*parts[parts.index(anchor) :])
            else:
                continue
            target = (dest_dir / relative).resolve()
            if dest_dir.resolve() not in target.parents:
                raise RawDataError(f"{archive}: member {member.filename!r} would be extracted outside {dest_dir}.")
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, length=1 << 20)
            written.append(target)
    return written


def missing_files(raw_dir: str | Path, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that are not files in ``raw_dir``."""
    return [name for name in names if not (Path(raw_dir) / name).is_file()]


# --------------------------------------------------------------------------------------------------------------------
# Reading raw files strictly


def row_ref(path: Path, row: int) -> str:
    """How errors name a CSV record: file name and data row (0-based, header excluded, as pandas counts)."""
    return f"{path.name} row {row}"


def require_file(raw_dir: str | Path, name: str, *, info: BuilderInfo | None = None) -> Path:
    """``raw_dir/name``, or a :class:`RawDataError` that says where the file comes from."""
    path = Path(raw_dir) / name
    if not path.is_file():
        hint = f" Run with --download, or place it by hand; {info.manual_hint()}" if info else ""
        raise RawDataError(f"Missing raw file {path}.{hint}")
    return path


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """Read a CSV with every cell as a string (no NA guessing: an empty cell is ``""``) and check its columns."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas raises ParserError, UnicodeDecodeError, EmptyDataError...
        raise RawDataError(
            f"{path}: cannot be read as CSV ({err}); the file is probably truncated or corrupt."
        ) from err
    absent = [column for column in columns if column not in frame.columns]
    if absent:
        raise RawDataError(
            f"{path}: missing column(s) {absent}; found {list(frame.columns)}. Expected the upstream file format."
        )
    return frame


def require_text(value: str, *, column: str, where: str) -> str:
    """``value`` if it is not blank, else a :class:`RawDataError` naming the column and the record."""
    if not value.strip():
        raise RawDataError(f"{where}: column {column!r} is empty; every record needs it.")
    return value


def parse_float_list(text: str, *, where: str, nesting: int = 1) -> list[float]:
    """Parse a JSON / Python list of numbers (``"[1.0, 2.5]"``, or ``"[[...]]"`` with ``nesting=2``).

    Stricter than upstream's ``ast.literal_eval``: NaN/inf, a missing bracket (a truncated cell) or a non-number
    raise a :class:`RawDataError` naming ``where`` and the offending position.
    """
    body = text.strip()
    for _ in range(nesting):
        if not (body.startswith("[") and body.endswith("]")):
            raise RawDataError(
                f"{where}: expected a list written as {'[' * nesting}...{']' * nesting}, got {text[:40]!r}...{text[-20:]!r}"
                " (truncated or wrongly nested)."
            )
        body = body[1:-1].strip()
    if not body:
        raise RawDataError(f"{where}: the series is empty.")
    values = []
    for index, token in enumerate(body.split(",")):
        try:
            value = float(token)
        except ValueError:
            raise RawDataError(f"{where}: value {index} is {token.strip()!r}, not a number.") from None
        if not math.isfinite(value):
            raise RawDataError(f"{where}: value {index} is {value}; series must be finite (fix or drop the record).")
        values.append(value)
    return values


def report_skipped(count: int, what: str, path: Path | str) -> None:
    """Log a counted skip of records that upstream also skips (so a silent data loss shows up in the logs)."""
    if count:
        logger.warning("skipped %d %s in %s (upstream skips them too)", count, what, path)


# --------------------------------------------------------------------------------------------------------------------
# Datasets and splits


def records_to_dataset(records: Iterable[Mapping[str, Any]], chunk_size: int = 1000) -> Dataset:
    """A :class:`Dataset` with the shared record features, built ``chunk_size`` records at a time.

    Records may come from a generator: only one chunk is held as Python objects (12-lead ECG records are ~12k
    floats each), the rest lives in Arrow as float32.
    """
    chunks, chunk = [], []
    for record in records:
        chunk.append(record)
        if len(chunk) == chunk_size:
            chunks.append(Dataset.from_list(chunk, features=RECORD_FEATURES))
            chunk = []
    if chunk:
        chunks.append(Dataset.from_list(chunk, features=RECORD_FEATURES))
    if not chunks:  # from_list([]) loses the columns
        return Dataset.from_dict({name: [] for name in RECORD_FEATURES}, features=RECORD_FEATURES)
    return chunks[0] if len(chunks) == 1 else concatenate_datasets(chunks)


def fixed_splits(splits: Mapping[str, Iterable[Mapping[str, Any]]]) -> DatasetDict:
    """DatasetDict from splits that upstream ships as separate files (HAR-CoT, ECG-QA-CoT)."""
    return DatasetDict({name: records_to_dataset(splits[name]) for name in SPLITS})


def split_like_upstream(
    dataset: Dataset,
    *,
    test_size: float = 0.1,
    val_size: float = 0.1,
    test_seed: int = 42,
    val_seed: int = 43,
) -> DatasetDict:
    """Upstream's two-step ``Dataset.train_test_split``: ``test_size`` of all rows, then ``val_size`` of all rows.

    The second call gets ``val_size / (1 - test_size)`` of what is left, exactly as upstream computes it, so with the
    same input row order the three splits hold the same rows in the same order. Seeds: M4 uses 42/43, TSQA 42/42.
    """
    train_val, test = dataset.train_test_split(test_size=test_size, seed=test_seed).values()
    train, validation = train_val.train_test_split(test_size=val_size / (1 - test_size), seed=val_seed).values()
    return DatasetDict(
        {"train": train.flatten_indices(), "validation": validation.flatten_indices(), "test": test.flatten_indices()}
    )


def stratified_split_like_upstream(
    dataset: Dataset,
    *,
    label_column: str = "label",
    test_size: float = 0.1,
    val_size: float = 0.1,
    test_seed: int = 42,
    val_seed: int = 43,
) -> DatasetDict:
    """Upstream's two-step ``sklearn.model_selection.train_test_split`` stratified on ``label_column`` (Sleep-CoT).

    sklearn is given row positions instead of upstream's DataFrame; the permutation only depends on the labels and
    the seed, so the rows and their order match upstream's. Each label needs at least two rows per split step.
    """
    from sklearn.model_selection import train_test_split

    labels = dataset[label_column]
    positions = list(range(len(labels)))
    try:
        train_val, test = train_test_split(positions, test_size=test_size, random_state=test_seed, stratify=labels)
        train_val_labels = [labels[i] for i in train_val]
        train, validation = train_test_split(
            train_val, test_size=val_size / (1 - test_size), random_state=val_seed, stratify=train_val_labels
        )
    except ValueError as err:
        counts = pd.Series(labels).value_counts().to_dict()
        raise RawDataError(f"stratified split on {label_column!r} failed ({err}); label counts: {counts}.") from err
    return DatasetDict(
        {
            "train": dataset.select(train).flatten_indices(),
            "validation": dataset.select(validation).flatten_indices(),
            "test": dataset.select(test).flatten_indices(),
        }
    )


# --------------------------------------------------------------------------------------------------------------------
# Dataset card and Hub


_FIELD_DOCS = {
    "id": "record id, unique within the dataset (traces back to the raw file)",
    "task": "builder name",
    "pre_prompt": "text before the series (stripped)",
    "time_series": "one entry per channel, in prompt order: `text` is a template with `{mean:.4f}`/`{std:.4f}` that "
    "the processor fills from the raw `values` before z-normalising them",
    "post_prompt": "text after the series (stripped)",
    "answer": "target text, without any EOS string (the processor appends the tokenizer's EOS id)",
    "label": 'class for classification-like tasks, `""` otherwise',
    "metadata": "JSON object string with task-specific extras",
}


def render_card(info: BuilderInfo, dataset_dict: DatasetDict) -> str:
    """Dataset card (README.md): YAML header, source, license, splits with sizes, schema, builder details."""
    sources = "\n".join(f"- <{s.url}> → `{s.provides}`" + (f" ({s.note})" if s.note else "") for s in info.sources)
    split_rows = "\n".join(f"| {name} | {len(dataset_dict[name])} |" for name in dataset_dict)
    schema_rows = "\n".join(f"| `{name}` | `{RECORD_FEATURES[name]}` | {doc} |" for name, doc in _FIELD_DOCS.items())
    tags = "\n".join(f"- {tag}" for tag in info.tags)
    return f"""---
license: {info.license}
pretty_name: "{info.title}"
tags:
{tags}
---

# {info.title}

{info.summary}

Built by `python -m hub_datasets.{info.name}` (OpenTSLM Hub) from the upstream files of the original OpenTSLM
project; prompts, series texts, labels and splits follow upstream so results compare.

## Source

{sources}

## License

`{info.license}`: {info.license_note}

## Splits

| split | records |
|---|---|
{split_rows}

## Schema

| field | type | meaning |
|---|---|---|
{schema_rows}

{info.details}
"""


def push_to_hub(
    dataset_dict: DatasetDict, repo_id: str, card_text: str, private: bool = False, token: str | None = None
) -> str:
    """Push ``dataset_dict`` as Parquet and ``card_text`` as README.md to the dataset repo ``repo_id``.

    The card goes first; ``DatasetDict.push_to_hub`` then adds its ``configs``/``dataset_info`` YAML to it and keeps
    the text. Returns the URL of the last commit.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_file(
        path_or_fileobj=card_text.encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Add dataset card",
    )
    commit = dataset_dict.push_to_hub(repo_id, private=private, token=token, commit_message="Upload dataset")
    return commit.commit_url


# --------------------------------------------------------------------------------------------------------------------
# CLI


def run_cli(
    info: BuilderInfo,
    build: Callable[[Path], DatasetDict],
    fetch: Callable[[Path], None],
    argv: Sequence[str] | None = None,
) -> int:
    """The command line every builder shares: ``--raw DIR [--download] [--save_to DIR] [--push_to_hub REPO]``."""
    sources = "\n".join(f"  {s.url}\n    -> {s.provides}" for s in info.sources)
    parser = argparse.ArgumentParser(
        prog=f"python -m hub_datasets.{info.name}",
        description=f"{info.title}: {info.summary}",
        epilog=f"upstream sources:\n{sources}\n\nraw folder layout (--raw):\n{info.layout}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--raw", type=Path, required=True, metavar="DIR", help="folder with the upstream raw files")
    parser.add_argument("--download", action="store_true", help="first download missing raw files into --raw")
    parser.add_argument("--save_to", type=Path, metavar="DIR", help="save the DatasetDict with save_to_disk")
    parser.add_argument("--push_to_hub", metavar="REPO", help="push the DatasetDict and its card to this dataset repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        if args.download:
            fetch(args.raw)
        dataset_dict = build(args.raw)
    except (RawDataError, DownloadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(dataset_dict)
    if args.save_to:
        dataset_dict.save_to_disk(str(args.save_to))
        print(f"saved to {args.save_to}")
    if args.push_to_hub:
        url = push_to_hub(dataset_dict, args.push_to_hub, render_card(info, dataset_dict), private=args.private)
        print(f"pushed to {args.push_to_hub}: {url}")
    return 0


def fetch_files(raw_dir: Path, info: BuilderInfo, files: Mapping[str, str]) -> None:
    """Download each ``{file name: url}`` that is not yet in ``raw_dir`` (for sources that are plain files)."""
    for name, url in files.items():
        download(url, Path(raw_dir) / name, manual_hint=info.manual_hint())


def fetch_zip(
    raw_dir: Path,
    info: BuilderInfo,
    url: str,
    zip_name: str,
    *,
    names: Collection[str] = (),
    anchor: str | None = None,
) -> None:
    """Download the zip at ``url`` as ``raw_dir/zip_name`` (unless there), extract the wanted members, delete it."""
    archive = download(url, Path(raw_dir) / zip_name, manual_hint=info.manual_hint())
    extract_zip(archive, raw_dir, names=names, anchor=anchor)
    archive.unlink()
