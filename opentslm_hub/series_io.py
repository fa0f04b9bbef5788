"""Reading user series from CSV files (the quickstart, the demo), with errors that say what is wrong and where."""

from __future__ import annotations

import csv
import math
from pathlib import Path


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
