"""Reading user series from CSV files (the quickstart, the demo), with errors that say what is wrong and where."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np


def read_series_csv(path: str | Path, column: str | int | None = None) -> list[float]:
    """Read one numeric column of a CSV file.

    A header row is detected (a first row that is not numeric). ``column`` picks a column by header name or index;
    by default the last column is used (so ``date,value`` files work). Empty cells, non-numbers and NaN/inf are
    errors naming the line, never skipped: a series with a silently dropped step would be a different series.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read CSV file {path}: {error}") from None
    lines = list(enumerate(csv.reader(text.splitlines()), start=1))
    # Blank lines at the start and the end are layout; a blank line between values would be a missing step.
    while lines and not any(cell.strip() for cell in lines[-1][1]):
        lines.pop()
    while lines and not any(cell.strip() for cell in lines[0][1]):
        lines.pop(0)
    if not lines:
        raise ValueError(f"CSV file {path} is empty; expected one numeric value per line (optionally a header).")
    first = lines[0][1]
    header = None if _is_number(first[-1]) else [cell.strip() for cell in first]
    data = lines[1:] if header else lines
    if not data:
        raise ValueError(f"CSV file {path} has a header but no data rows.")
    width = len(first)
    index = _column_index(column, header, width, path)
    values = []
    for line_number, row in data:
        if not row:
            raise ValueError(f"{path}, line {line_number} is empty: a missing value? Fill or remove it.")
        if len(row) != width:
            raise ValueError(f"{path}, line {line_number}: {len(row)} cells, expected {width} like the first row.")
        cell = row[index].strip()
        if not _is_number(cell):
            raise ValueError(f"{path}, line {line_number}: {cell!r} is not a number (column {index}).")
        value = float(cell)
        if not math.isfinite(value):
            raise ValueError(f"{path}, line {line_number}: non-finite value {cell!r}; remove or impute it first.")
        values.append(value)
    return values


def _column_index(column: str | int | None, header: list[str] | None, width: int, path: Path) -> int:
    if column is None:
        return width - 1
    if isinstance(column, int) or (isinstance(column, str) and column.lstrip("-").isdigit()):
        index = int(column)
        if not -width <= index < width:
            raise ValueError(f"Column index {index} is out of range for {path}, which has {width} columns.")
        return index % width
    if header is None or column not in header:
        raise ValueError(f"Column {column!r} not found in {path}; its header is {header or '(none)'}.")
    return header.index(column)


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------------------
# Multi-channel tables (the demo): pandas, with explicit limits

MAX_FILE_BYTES = 1_000_000
MAX_ROWS = 4096
MAX_COLUMNS = 12


def read_series_table(
    source: str | Path | bytes,
    *,
    max_rows: int = MAX_ROWS,
    max_columns: int = MAX_COLUMNS,
    max_bytes: int = MAX_FILE_BYTES,
) -> tuple[list[str], np.ndarray]:
    """Read a CSV with one column per channel into ``(channel_names, values)``, ``values`` of shape
    ``(channels, rows)`` as float64, with pandas.

    A header is detected (a first row with a non-numeric cell) and names the channels; without one the channels are
    ``channel 1``, ``channel 2``... Every limit and every bad cell is a ``ValueError`` whose message names the problem
    (and the line and column of a bad cell): the file is too large, not text, empty, ragged, has too many rows or
    columns, an empty cell, a non-number, NaN or inf. Nothing is skipped or filled.
    """
    import pandas as pd

    if isinstance(source, bytes):
        raw, name = source, "the file"
    else:
        path = Path(source)
        name = path.name
        try:
            size = path.stat().st_size
        except OSError as error:
            raise ValueError(f"Cannot read {name}: {error.strerror or error}.") from None
        if size > max_bytes:
            raise ValueError(f"{name} is {_size(size)}; the limit is {_size(max_bytes)}.")
        raw = path.read_bytes()
    if len(raw) > max_bytes:
        raise ValueError(f"{name} is {_size(len(raw))}; the limit is {_size(max_bytes)}.")
    if b"\0" in raw:
        raise ValueError(
            f"{name} is not a CSV file (it holds binary data); expected text with one column per channel."
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not a CSV file (not UTF-8 text); expected one column per channel.") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip(",; \t"):
        lines.pop()
    skipped = 0
    while lines and not lines[0].strip(",; \t"):
        lines.pop(0)
        skipped += 1
    if not lines:
        raise ValueError(f"{name} is empty; expected one numeric column per channel (optionally a header row).")
    try:
        frame = pd.read_csv(
            io.StringIO("\n".join(lines)),
            header=None,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            sep=",",
            engine="python",
        )
    except pd.errors.ParserError as error:
        detail = str(error).strip().splitlines()[-1]
        raise ValueError(
            f"{name} is not a well-formed CSV: {detail}; every row needs the same number of cells."
        ) from None
    if frame.shape[1] > max_columns:
        raise ValueError(f"{name} has {frame.shape[1]} columns; the limit is {max_columns} (one per channel).")
    first = [cell.strip() for cell in frame.iloc[0]]
    header = first if any(cell and not _is_number(cell) for cell in first) else None
    data = frame.iloc[1:] if header is not None else frame
    if data.empty:
        raise ValueError(f"{name} has a header but no data rows.")
    if len(data) > max_rows:
        raise ValueError(f"{name} has {len(data)} rows; the limit is {max_rows} time steps.")
    names = [cell or f"channel {k + 1}" for k, cell in enumerate(header)] if header else None
    names = names or [f"channel {k + 1}" for k in range(frame.shape[1])]
    values = np.empty((frame.shape[1], len(data)), dtype=np.float64)
    for row_number, (_, row) in enumerate(data.iterrows()):
        line = skipped + row_number + (2 if header is not None else 1)
        if not any(isinstance(cell, str) and cell.strip() for cell in row):
            raise ValueError(f"{name}, line {line} is empty: a missing time step? Fill or remove it.")
        for column, cell in enumerate(row):
            if not isinstance(cell, str):  # pandas fills a short row with NaN
                raise ValueError(
                    f"{name}, line {line}: fewer cells than the first row's {frame.shape[1]}; every row needs one "
                    "cell per channel."
                )
            cell = cell.strip()
            if not cell:
                raise ValueError(f"{name}, line {line}, column {names[column]!r}: empty cell (a missing value?).")
            if not _is_number(cell):
                raise ValueError(f"{name}, line {line}, column {names[column]!r}: {cell!r} is not a number.")
            value = float(cell)
            if not math.isfinite(value):
                raise ValueError(
                    f"{name}, line {line}, column {names[column]!r}: {cell!r} is not a finite number (NaN or inf); "
                    "remove or impute it first."
                )
            values[column, row_number] = value
    return names, values


def _size(num_bytes: int) -> str:
    if num_bytes >= 1_000_000:
        return f"{num_bytes / 1e6:.3g} MB"
    return f"{num_bytes / 1e3:.3g} kB" if num_bytes >= 1000 else f"{num_bytes} bytes"
