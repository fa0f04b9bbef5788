"""Helpers for the upstream-builder tests: fixture paths, CSV edits, PTB-XL records written with ``wfdb``."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
ECG_IDS = (1, 2, 1005)  # the ids the ECG fixture CSVs use; 1005 lives in records500/01000/
# Lead names as PTB-XL headers write them (upper-case aV*).
LEAD_NAMES = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def copy_fixture(name: str, dest: Path) -> Path:
    """A writable copy of ``tests/fixtures/upstream/<name>``."""
    return Path(shutil.copytree(FIXTURES / name, dest / name))


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def write_rows(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def edit_cell(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell of a CSV (``row`` counts data rows from 0, as the builders' errors do)."""
    header, rows = read_rows(path)
    rows[row][header.index(column)] = value
    write_rows(path, header, rows)


def ptbxl_signal(ecg_id: int, samples: int = 5000) -> np.ndarray:
    """A deterministic, ECG-like 12-lead signal in mV, [samples, 12], quantised to PTB-XL's 1/1000 mV."""
    rng = np.random.default_rng(ecg_id)
    t = np.arange(samples) / 500.0
    beats = np.exp(-(((t % 0.8) - 0.3) ** 2) / 0.0004)  # one narrow spike per 0.8 s
    gains = rng.uniform(-1.5, 1.5, size=12)
    signal = beats[:, None] * gains[None, :] + 0.05 * rng.standard_normal((samples, 12))
    return np.round(signal, 3)


def write_ptbxl_record(raw_dir: Path, ecg_id: int, signal: np.ndarray | None = None) -> Path:
    """Write ``records500/.../{id:05d}_hr.{hea,dat}`` like PTB-XL (format 16, gain 1000/mV, 500 Hz); returns the base."""
    import wfdb

    signal = ptbxl_signal(ecg_id) if signal is None else signal
    folder = raw_dir / "records500" / f"{ecg_id // 1000 * 1000:05d}"
    folder.mkdir(parents=True, exist_ok=True)
    wfdb.wrsamp(
        f"{ecg_id:05d}_hr",
        fs=500,
        units=["mV"] * 12,
        sig_name=LEAD_NAMES,
        p_signal=signal,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(folder),
    )
    return folder / f"{ecg_id:05d}_hr"


def ecg_raw_dir(tmp_path: Path) -> Path:
    """The ECG fixture CSVs plus the PTB-XL records they use."""
    raw = copy_fixture("ecg_qa_cot", tmp_path)
    for ecg_id in ECG_IDS:
        write_ptbxl_record(raw, ecg_id)
    return raw
