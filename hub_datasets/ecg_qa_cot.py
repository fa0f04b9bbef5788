"""Stage 5 – ECG-QA-CoT: questions about a 12-lead PTB-XL ECG, answered with a rationale (upstream
``ECGQACoTQADataset`` / ``ecgqa_cot_loader``).

Raw files:

- ``ecg_qa_cot_{train,val,test}.csv`` (``ecg_id``, ``question``, ``answer``, ``template_id``, ``question_type``,
  ``clinical_context``, ``rationale``), which fix the splits;
- ``answers_for_each_template.csv`` from the ECG-QA repository (``template_id``, ``classes`` as a Python list);
- PTB-XL 1.0.3 ``records500/{id // 1000 * 1000:05d}/{id:05d}_hr.{hea,dat}`` (12 leads, 5000 samples at 500 Hz),
  read with ``wfdb``.

As upstream, each lead is decimated with ``[::5]`` (no anti-alias filter) to 1000 samples at 100 Hz, the leads are
in the order I, II, III, aVR, aVL, aVF, V1–V6, an empty ``clinical_context`` becomes ``"12-lead ECG recording."``,
and a template absent from ``answers_for_each_template.csv`` gets the open-answer post-prompt (counted and
reported). Beyond upstream, an ``ecg_id`` listing several ECGs (comparison questions) is supported with upstream's
``" (Recording k)"`` lead texts, where upstream fails to parse it.

Upstream appends the LLM's EOS string to every answer; these records do not: the processor appends the tokenizer's
EOS token id.
"""

from __future__ import annotations

import ast
import logging
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from datasets import DatasetDict

from .common import (
    BuilderInfo,
    RawDataError,
    Source,
    download,
    fetch_zip,
    fixed_splits,
    missing_files,
    read_csv,
    require_file,
    require_text,
    row_ref,
    run_cli,
)
from .schema import make_record

logger = logging.getLogger(__name__)

TASK = "ecg_qa_cot"
COT_URL = "https://polybox.ethz.ch/index.php/s/D5QaJSEw4dXkzXm/download/ecg_qa_cot_final.zip"
TEMPLATES_URL = "https://raw.githubusercontent.com/Jwoo5/ecg-qa/master/ecgqa/ptbxl/answers_for_each_template.csv"
PTBXL_URL = "https://physionet-open.s3.amazonaws.com/ptb-xl/ptb-xl-1.0.3.zip"
FILES = {"train": "ecg_qa_cot_train.csv", "validation": "ecg_qa_cot_val.csv", "test": "ecg_qa_cot_test.csv"}
TEMPLATES_FILE = "answers_for_each_template.csv"
RECORDS_DIR = "records500"
COLUMNS = ("ecg_id", "question", "answer", "template_id", "question_type", "clinical_context", "rationale")
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
RAW_SAMPLES = 5000  # 10 s at 500 Hz
DECIMATION = 5  # [::5] -> 1000 samples at 100 Hz, as upstream (no low-pass filter)
DEFAULT_CLINICAL_CONTEXT = "12-lead ECG recording."
# The trailing space after the first sentence is upstream's.
PRE_PROMPT = (
    "You are an expert cardiologist analyzing an ECG (electrocardiogram). \n\n"
    "Clinical Context: {clinical_context}\n\n"
    "Your task is to examine the ECG signal and answer the following medical question:\n\n"
    "Question: {question}\n\n"
    "Instructions:\n"
    "- Begin by analyzing the time series without assuming a specific answer.\n"
    "- Think step-by-step about what the observed patterns suggest regarding the cardiac condition.\n"
    "- Write your rationale as a single, natural paragraph — do not use bullet points, numbered steps, or section "
    "headings.\n"
    "- Do **not** mention any final answer until the very end.\n"
    "- Consider the ECG morphology, intervals, and any abnormalities that relate to the question."
)
POST_PROMPT_OPTIONS = (
    "Based on your analysis of the ECG data, select your answer from the following options:\n"
    "{options}\n\n"
    '- Make sure that your last word is the answer. You MUST end your response with "Answer: "'
)
POST_PROMPT_OPEN = (
    "Based on your analysis of the ECG data, provide your answer.\n"
    'Make sure that your last word is the answer. You MUST end your response with "Answer: "'
)

INFO = BuilderInfo(
    name="ecg_qa_cot",
    title="OpenTSLM stage 5: ECG-QA-CoT",
    summary="Questions about 12-lead PTB-XL ECGs (10 s, decimated to 100 Hz) from ECG-QA, answered with a "
    "chain-of-thought rationale ending in 'Answer: <answer>'.",
    sources=(
        Source(COT_URL, ", ".join(FILES.values()), "zip"),
        Source(TEMPLATES_URL, TEMPLATES_FILE, "from github.com/Jwoo5/ecg-qa, ecgqa/ptbxl/"),
        Source(PTBXL_URL, f"{RECORDS_DIR}/", "PTB-XL 1.0.3 zip, ~1.7 GB; only records500 is kept"),
    ),
    license="other",
    license_note="ECG signals from PTB-XL 1.0.3 (PhysioNet, CC BY 4.0); questions and answer classes from ECG-QA "
    "(CC BY 4.0); rationales released by the OpenTSLM authors on polybox without a stated license [verify].",
    layout="\n".join(f"  {name}" for name in FILES.values())
    + f"\n  {TEMPLATES_FILE}\n  {RECORDS_DIR}/00000/00001_hr.hea, {RECORDS_DIR}/00000/00001_hr.dat, ...",
    details=(
        "## Prompt\n\n"
        "- pre_prompt: upstream's cardiologist instructions with the clinical context and the question\n"
        "- 12 series, one per lead: `This is ECG Lead <name>, it has mean {mean:.4f} and std {std:.4f}:`\n"
        "- post_prompt: the template's answer options (or an open-answer instruction)\n"
        "- answer: the rationale; label: the ECG-QA answer; metadata: `correct_answer`, `possible_answers`, "
        "`template_id`, `question_type`, `question`, `ecg_id`, `ecg_paths`, `clinical_context`, `sampling_rate_hz`\n\n"
        "Splits: fixed by the upstream files (`val` is `validation`)."
    ),
)


def record_path(ecg_id: int) -> str:
    """PTB-XL's 500 Hz record path (without extension), relative to the raw folder."""
    return f"{RECORDS_DIR}/{ecg_id // 1000 * 1000:05d}/{ecg_id:05d}_hr"


def series_text(lead: str, recording: int | None) -> str:
    """Upstream's lead text; ``recording`` (1-based) is only named when the question has several ECGs."""
    suffix = f" (Recording {recording})" if recording is not None else ""
    return f"This is ECG Lead {lead}{suffix}, it has mean {{mean:.4f}} and std {{std:.4f}}:"


def read_template_answers(raw_dir: Path) -> dict[int, list[str]]:
    """``answers_for_each_template.csv`` as ``{template_id: [options]}``."""
    path = require_file(raw_dir, TEMPLATES_FILE, info=INFO)
    answers = {}
    for row, (template_id, classes) in enumerate(read_csv(path, ("template_id", "classes")).itertuples(index=False)):
        where = row_ref(path, row)
        try:
            options = ast.literal_eval(classes)
        except (ValueError, SyntaxError):
            options = None
        if not isinstance(options, list) or not all(isinstance(option, str) for option in options):
            raise RawDataError(f"{where}: classes {classes[:60]!r} is not a Python list of strings.")
        answers[_parse_int(template_id, column="template_id", where=where)] = options
    return answers


def read_ecg(raw_dir: Path, ecg_id: int) -> np.ndarray:
    """The record's 12 leads, decimated, as a float32 array [12, 1000]; a RawDataError names a bad record."""
    import wfdb

    base = raw_dir / record_path(ecg_id)
    for suffix in (".hea", ".dat"):
        if not base.with_suffix(suffix).is_file():
            raise RawDataError(
                f"Missing PTB-XL file {base.with_suffix(suffix)} for ecg_id {ecg_id}; extract records500 of "
                f"{PTBXL_URL} into {raw_dir}."
            )
    try:
        record = wfdb.rdrecord(str(base))
    except Exception as err:  # wfdb raises ValueError, IndexError, OSError... on damaged records
        raise RawDataError(f"{base}.dat (ecg_id {ecg_id}) cannot be read by wfdb: {err!r}") from err
    signal = record.p_signal
    names = [name.lower() for name in record.sig_name or []]
    if signal is None or signal.shape != (RAW_SAMPLES, len(LEADS)):
        shape = None if signal is None else signal.shape
        raise RawDataError(
            f"{base}.dat (ecg_id {ecg_id}): signal shape {shape}, expected ({RAW_SAMPLES}, {len(LEADS)}); the record "
            "is truncated or not a PTB-XL 500 Hz record."
        )
    if names != [lead.lower() for lead in LEADS]:
        raise RawDataError(f"{base}.hea (ecg_id {ecg_id}): leads {record.sig_name}, expected {list(LEADS)}.")
    bad = np.argwhere(~np.isfinite(signal))
    if len(bad):
        sample, lead = bad[0]
        raise RawDataError(f"{base}.dat (ecg_id {ecg_id}): lead {LEADS[lead]} sample {sample} is not finite.")
    return np.ascontiguousarray(signal[::DECIMATION].T, dtype=np.float32)


def _parse_int(text: str, *, column: str, where: str) -> int:
    """An integer cell; ``"12.0"`` is accepted since pandas writes an int column with gaps as floats."""
    try:
        number = float(text.strip())
    except ValueError:
        number = math.nan
    if not number.is_integer():
        raise RawDataError(f"{where}: column {column!r} is {text!r}, expected an integer.")
    return int(number)


def _parse_ecg_ids(text: str, *, where: str) -> list[int]:
    """``"[123]"``, ``"123"`` or ``"[1, 2]"`` as a list of ids."""
    parts = [part for part in text.strip().strip("[]").split(",") if part.strip()]
    if not parts:
        raise RawDataError(f"{where}: column 'ecg_id' is empty.")
    return [_parse_int(part, column="ecg_id", where=where) for part in parts]


def _read_split(
    raw_dir: Path, split: str, templates: Mapping[int, list[str]], cache: dict[int, np.ndarray], counts: dict
) -> Iterator[dict]:
    path = require_file(raw_dir, FILES[split], info=INFO)
    frame = read_csv(path, COLUMNS)
    for row, ecg_id, question, answer, template_id, question_type, context, rationale in frame[
        list(COLUMNS)
    ].itertuples():
        where = row_ref(path, row)
        ecg_ids = _parse_ecg_ids(ecg_id, where=where)
        template = _parse_int(template_id, column="template_id", where=where)
        options = templates.get(template, [])
        counts["no_template"] += not options
        counts["answer_not_in_options"] += bool(options) and answer not in options
        question = require_text(question, column="question", where=where)
        context = context if context.strip() else DEFAULT_CLINICAL_CONTEXT
        channels = []
        for number, one_id in enumerate(ecg_ids, start=1):
            if one_id not in cache:
                cache[one_id] = read_ecg(raw_dir, one_id)
            recording = number if len(ecg_ids) > 1 else None
            channels += [(series_text(lead, recording), values) for lead, values in zip(LEADS, cache[one_id])]
        yield make_record(
            id=f"{split}/{row}",
            task=TASK,
            pre_prompt=PRE_PROMPT.format(clinical_context=context, question=question),
            time_series=channels,
            post_prompt=POST_PROMPT_OPTIONS.format(options=", ".join(options)) if options else POST_PROMPT_OPEN,
            answer=require_text(rationale, column="rationale", where=where),
            label=require_text(answer, column="answer", where=where),
            metadata={
                "correct_answer": answer,
                "possible_answers": options,
                "template_id": template,
                "question_type": require_text(question_type, column="question_type", where=where),
                "question": question,
                "ecg_id": ecg_ids,
                "ecg_paths": [record_path(one_id) for one_id in ecg_ids],
                "clinical_context": context,
                "sampling_rate_hz": 500 // DECIMATION,
            },
        )


def build(raw_dir: str | Path) -> DatasetDict:
    """Read the three CoT split files, the template answers and the PTB-XL records they use."""
    raw_dir = Path(raw_dir)
    templates = read_template_answers(raw_dir)
    cache: dict[int, np.ndarray] = {}  # questions share ECGs: read each record once
    counts = {"no_template": 0, "answer_not_in_options": 0}
    dataset_dict = fixed_splits({split: _read_split(raw_dir, split, templates, cache, counts) for split in FILES})
    if counts["no_template"]:
        logger.warning(
            "%d records use a template_id absent from %s; they get the open-answer post_prompt, as upstream",
            counts["no_template"],
            TEMPLATES_FILE,
        )
    if counts["answer_not_in_options"]:
        logger.warning("%d records have an answer outside their template's options", counts["answer_not_in_options"])
    return dataset_dict


def fetch(raw_dir: str | Path) -> None:
    """Download what is missing: the CoT zip, the template answers, and PTB-XL's records500 (a 1.7 GB zip)."""
    raw_dir = Path(raw_dir)
    if missing_files(raw_dir, FILES.values()):
        fetch_zip(raw_dir, INFO, COT_URL, "ecg_qa_cot_final.zip", names=FILES.values())
    download(TEMPLATES_URL, raw_dir / TEMPLATES_FILE, manual_hint=INFO.manual_hint())
    if not (raw_dir / RECORDS_DIR).is_dir():
        fetch_zip(raw_dir, INFO, PTBXL_URL, "ptb-xl-1.0.3.zip", anchor=RECORDS_DIR)


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(INFO, build, fetch, argv)


if __name__ == "__main__":
    sys.exit(main())
