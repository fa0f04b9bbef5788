"""The upstream dataset builders (hub_datasets.{tsqa,m4,har_cot,sleep_cot,ecg_qa_cot}) on fixtures in the real
upstream file formats: parsing, prompts, splits, and the errors on bad raw data."""

from __future__ import annotations

import ast
import json
import logging
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from datasets import load_from_disk
from upstream_data import (
    ECG_IDS,
    FIXTURES,
    copy_fixture,
    ecg_raw_dir,
    edit_cell,
    ptbxl_signal,
    read_rows,
    write_ptbxl_record,
    write_rows,
)

from hub_datasets import common, ecg_qa_cot, har_cot, m4, sleep_cot, tsqa
from hub_datasets.schema import RECORD_FEATURES

I8 = " " * 8
# Exact upstream strings (after .strip()), copied from the original OpenTSLM code, not taken from the modules.
HAR_PRE_PROMPT = (
    "You are given accelerometer data in all three dimensions. Your task is to classify the activity based on analysis "
    f"of the data.\n\n{I8}Instructions:\n{I8}- Begin by analyzing the time series without assuming a specific label.\n"
    f"{I8}- Think step-by-step about what the observed patterns suggest regarding movement intensity and behavior.\n"
    f"{I8}- Write your rationale as a single, natural paragraph — do not use bullet points, numbered steps, or section "
    f"headings.\n{I8}- Do **not** mention any class label until the final sentence.\n\n{I8}Possible activity labels "
    f"are:\n{I8}biking, lying, running, sitting, standing, walking, walking_down, walking_up.\n{I8}\n{I8}- Make sure that "
    'your last word is the answer. You MUST end your response with "Answer: "'
)
SLEEP_PRE_PROMPT = (
    "You are given a 30-second EEG time series segment. Your task is to classify the sleep stage based on analysis of "
    f"the data.\n\n{I8}Instructions:\n{I8}- Analyze the data objectively without presuming a particular label.\n{I8}- "
    "Reason carefully and methodically about what the signal patterns suggest regarding sleep stage.\n"
    f"{I8}- Write your reasoning as a single, coherent paragraph. Do not use bullet points, lists, or section headers.\n"
    f"{I8}- Only reveal the correct class at the very end.\n{I8}- Never state that you are uncertain or unable to "
    "classify the data. You must always provide a rationale and a final answer."
)
SLEEP_POST_PROMPT = (
    f"Possible sleep stages are:\n{I8}Wake, Non-REM stage 1, Non-REM stage 2, Non-REM stage 3, REM sleep, Movement\n\n"
    f"{I8}- Please now write your rationale. Make sure that your last word is the answer. You MUST end your response "
    'with "Answer:'
)
ECG_PRE_PROMPT = (
    "You are an expert cardiologist analyzing an ECG (electrocardiogram). \n\nClinical Context: {context}\n\nYour task "
    "is to examine the ECG signal and answer the following medical question:\n\nQuestion: {question}\n\nInstructions:\n"
    "- Begin by analyzing the time series without assuming a specific answer.\n- Think step-by-step about what the "
    "observed patterns suggest regarding the cardiac condition.\n- Write your rationale as a single, natural paragraph "
    "— do not use bullet points, numbered steps, or section headings.\n- Do **not** mention any final answer until the "
    "very end.\n- Consider the ECG morphology, intervals, and any abnormalities that relate to the question."
)
ECG_LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def values(record, channel=0):
    return record["time_series"][channel]["values"]


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.float32(expected), rtol=1e-6, atol=1e-6)


def split_sizes(dataset_dict):
    return {name: len(dataset_dict[name]) for name in dataset_dict}


# --------------------------------------------------------------------------------------------------------------------
# TSQA


def test_tsqa_records_match_the_csv():
    dataset = tsqa.read_records(FIXTURES / "tsqa")
    header, rows = read_rows(FIXTURES / "tsqa" / "TSQA.csv")
    assert dataset.features == RECORD_FEATURES
    assert dataset["id"] == [str(i) for i in range(len(rows))]
    for record, row in zip(dataset, rows):
        task, question, answer, series = row
        assert record["task"] == "tsqa"
        assert record["pre_prompt"] == question
        assert record["post_prompt"] == f"Predict the {task} Answer:"
        assert record["answer"] == answer and not record["answer"].endswith(("<eos>", "<|end_of_text|>"))
        assert record["label"] == answer[:3]
        assert record["time_series"][0]["text"] == "This is the time series, it has mean {mean:.4f} and std {std:.4f}."
        assert_close(values(record), json.loads(series))
        assert json.loads(record["metadata"]) == {"tsqa_task": task}


def test_tsqa_split_uses_seed_42_twice():
    full = tsqa.read_records(FIXTURES / "tsqa")
    built = tsqa.build(FIXTURES / "tsqa")
    assert split_sizes(built) == {"train": 4, "validation": 1, "test": 1}
    train_val, test = full.train_test_split(test_size=0.1, seed=42).values()
    train, validation = train_val.train_test_split(test_size=0.1 / 0.9, seed=42).values()
    assert (built["train"]["id"], built["validation"]["id"], built["test"]["id"]) == (
        train["id"],
        validation["id"],
        test["id"],
    )


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("Answer", "(d) something else", r"TSQA\.csv row 2: Answer '\(d\) something else' does not start with"),
        ("Series", "[1.0, NaN, 2.0]", r"TSQA\.csv row 2 column 'Series': value 1 is nan"),
        ("Series", "[1.0, 2.0, 3.", r"TSQA\.csv row 2 column 'Series': expected a list .*truncated"),
        ("Series", "[1.0, abc]", r"TSQA\.csv row 2 column 'Series': value 1 is 'abc', not a number"),
        ("Question", "", r"TSQA\.csv row 2: column 'Question' is empty"),
    ],
)
def test_tsqa_bad_rows_name_file_and_row(tmp_path, column, value, message):
    raw = copy_fixture("tsqa", tmp_path)
    edit_cell(raw / "TSQA.csv", 2, column, value)
    with pytest.raises(ValueError, match=message):
        tsqa.build(raw)


def test_missing_file_and_missing_column_are_clear(tmp_path):
    with pytest.raises(ValueError, match=r"Missing raw file .*TSQA\.csv\..*--download"):
        tsqa.build(tmp_path)
    raw = copy_fixture("tsqa", tmp_path)
    header, rows = read_rows(raw / "TSQA.csv")
    write_rows(raw / "TSQA.csv", ["Task", "Question", "Answer", "Values"], rows)
    with pytest.raises(ValueError, match=r"TSQA\.csv: missing column\(s\) \['Series'\]"):
        tsqa.build(raw)


# --------------------------------------------------------------------------------------------------------------------
# M4


def test_m4_inner_join_in_upstream_order_and_skips_are_reported(caplog):
    with caplog.at_level(logging.WARNING):
        dataset = m4.read_records(FIXTURES / "m4")
    # Daily: D3 has no caption and D4 no series; Hourly, Weekly and Yearly have no files.
    assert dataset["id"] == ["D1", "D2", "M1", "M2", "M3", "Q1", "Q2"]
    frequencies = [json.loads(m)["frequency"] for m in dataset["metadata"]]
    assert frequencies == ["Daily"] * 2 + ["Monthly"] * 3 + ["Quarterly"] * 2
    assert "skipped 3 of 6 M4 frequencies" in caplog.text and "['Hourly', 'Weekly', 'Yearly']" in caplog.text
    assert "skipped 1 series without a caption" in caplog.text
    assert "skipped 1 captions without a series" in caplog.text

    _, series_rows = read_rows(FIXTURES / "m4" / "m4_series_Monthly.csv")
    _, caption_rows = read_rows(FIXTURES / "m4" / "m4_captions_Monthly.csv")
    captions = dict(caption_rows)
    for record in dataset.filter(lambda r: r["id"].startswith("M")):
        series = dict(series_rows)[record["id"]]
        assert record["answer"] == captions[record["id"]]
        assert record["pre_prompt"] == "You are an expert in time series analysis."
        assert record["post_prompt"] == (
            "Please generate a detailed caption for this time-series, describing it as accurately as possible."
        )
        assert record["time_series"][0]["text"] == "This is the time series, it has mean {mean:.4f} and std {std:.4f}:"
        assert record["label"] == ""
        assert_close(values(record), json.loads(series))


def test_m4_split_proportions_and_seeds_42_43(tmp_path):
    rng = np.random.default_rng(0)
    for frequency, count in (("Monthly", 120), ("Weekly", 80)):
        ids = [f"{frequency[0]}{i}" for i in range(count)]
        write_rows(
            tmp_path / f"m4_series_{frequency}.csv",
            ["id", "series"],
            [[i, json.dumps(rng.normal(size=int(rng.integers(10, 40))).round(3).tolist())] for i in ids],
        )
        write_rows(tmp_path / f"m4_captions_{frequency}.csv", ["id", "caption"], [[i, f"caption {i}"] for i in ids])
    built = m4.build(tmp_path)
    n = 200
    n_test = math.ceil(0.1 * n)
    n_val = math.ceil(0.1 / 0.9 * (n - n_test))
    assert split_sizes(built) == {"train": n - n_test - n_val, "validation": n_val, "test": n_test}
    assert (n_test, n_val) == (20, 20)  # 80 / 10 / 10

    # Independent re-derivation of datasets' train_test_split: a PCG64 permutation per seed, test rows first.
    order = [f"M{i}" for i in range(120)] + [f"W{i}" for i in range(80)]  # Daily, Hourly, Monthly, ... Weekly
    permutation = np.random.default_rng(42).permutation(n)
    test_ids = [order[i] for i in permutation[:n_test]]
    train_val_ids = [order[i] for i in permutation[n_test:]]
    permutation = np.random.default_rng(43).permutation(n - n_test)
    assert built["test"]["id"] == test_ids
    assert built["validation"]["id"] == [train_val_ids[i] for i in permutation[:n_val]]
    assert built["train"]["id"] == [train_val_ids[i] for i in permutation[n_val:]]


def test_m4_errors(tmp_path):
    raw = copy_fixture("m4", tmp_path)
    edit_cell(raw / "m4_series_Monthly.csv", 1, "series", "[1.0, 2.0, NaN]")
    with pytest.raises(ValueError, match=r"m4_series_Monthly\.csv row 1 \(id 'M2'\): value 2 is nan"):
        m4.build(raw)

    raw = copy_fixture("m4", tmp_path / "b")
    (raw / "m4_captions_Quarterly.csv").unlink()
    with pytest.raises(ValueError, match=r"m4_captions_Quarterly\.csv is missing while the other Quarterly file"):
        m4.build(raw)

    raw = copy_fixture("m4", tmp_path / "c")
    edit_cell(raw / "m4_series_Daily.csv", 1, "id", "D1")
    with pytest.raises(ValueError, match=r"m4_series_Daily\.csv: id 'D1' appears more than once"):
        m4.build(raw)

    with pytest.raises(ValueError, match="No M4 records"):
        m4.build(tmp_path / "empty")


# --------------------------------------------------------------------------------------------------------------------
# HAR-CoT


def test_har_cot_records_and_header_rows(caplog):
    with caplog.at_level(logging.WARNING):
        built = har_cot.build(FIXTURES / "har_cot")
    assert split_sizes(built) == {"train": 4, "validation": 2, "test": 2}
    assert "skipped 1 repeated header rows" in caplog.text and "har_cot_train_cot.csv" in caplog.text
    # Ids are pandas rows of the file: row 2 of the train file is the repeated header.
    assert built["train"]["id"] == ["train/0", "train/1", "train/3", "train/4"]

    header, rows = read_rows(FIXTURES / "har_cot" / "har_cot_val_cot.csv")
    for record, row in zip(built["validation"], rows):
        assert record["pre_prompt"] == HAR_PRE_PROMPT
        assert record["post_prompt"] == "Rationale:"
        assert record["answer"] == row[4] and record["answer"].endswith(f"Answer: {row[3]}")
        assert record["label"] == row[3]
        assert [c["text"] for c in record["time_series"]] == [
            f"The following is the accelerometer data on the {axis}-axis, it has mean {{mean:.4f}} and std {{std:.4f}}:"
            for axis in "xyz"
        ]
        for channel in range(3):
            assert_close(values(record, channel), ast.literal_eval(row[channel]))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("label", "jogging", r"har_cot_test_cot\.csv row 1: label 'jogging' is not one of"),
        ("x_axis", "[0.1, nan, 0.2]", r"har_cot_test_cot\.csv row 1 column 'x_axis': value 1 is nan"),
        ("y_axis", "[0.1, 0.2, 0.", r"har_cot_test_cot\.csv row 1 column 'y_axis': expected a list"),
        ("z_axis", "[0.1, 0.2]", r"har_cot_test_cot\.csv row 1: the x/y/z axes have \[128, 128, 2\] values"),
        ("rationale", " ", r"har_cot_test_cot\.csv row 1: column 'rationale' is empty"),
    ],
)
def test_har_cot_bad_rows(tmp_path, column, value, message):
    raw = copy_fixture("har_cot", tmp_path)
    edit_cell(raw / "har_cot_test_cot.csv", 1, column, value)
    with pytest.raises(ValueError, match=message):
        har_cot.build(raw)


def test_har_cot_missing_split_file(tmp_path):
    raw = copy_fixture("har_cot", tmp_path)
    (raw / "har_cot_val_cot.csv").unlink()
    with pytest.raises(ValueError, match=r"(?s)Missing raw file .*har_cot_val_cot\.csv.*har_cot_test_cot\.csv"):
        har_cot.build(raw)


def test_har_cot_truncated_file(tmp_path):
    raw = copy_fixture("har_cot", tmp_path)
    path = raw / "har_cot_train_cot.csv"
    path.write_bytes(path.read_bytes()[:5000])  # cut inside a quoted cell
    with pytest.raises(ValueError, match=r"har_cot_train_cot\.csv"):
        har_cot.build(raw)


# --------------------------------------------------------------------------------------------------------------------
# Sleep-CoT


def test_sleep_cot_records():
    dataset = sleep_cot.read_records(FIXTURES / "sleep_cot")
    header, rows = read_rows(FIXTURES / "sleep_cot" / "sleep_cot.csv")
    assert dataset["label"] == ["Wake", "Non-REM stage 2", "REM sleep", "Non-REM stage 4"]
    for record, (series, label, rationale) in zip(dataset, rows):
        assert record["pre_prompt"] == SLEEP_PRE_PROMPT
        assert record["post_prompt"] == SLEEP_POST_PROMPT
        assert record["answer"] == rationale and record["label"] == label
        assert record["time_series"][0]["text"] == (
            "The following is the EEG time series, it has mean {mean:.4f} and std {std:.4f}:"
        )
        assert len(values(record)) == 1500
        assert_close(values(record), ast.literal_eval(series)[0])


def _sleep_csv(path, labels):
    series = str([[float(i % 7) for i in range(1500)]])
    write_rows(path, ["time_series", "label", "rationale"], [[series, label, f"Answer: {label}"] for label in labels])


def test_sleep_cot_stratified_split_matches_upstream(tmp_path):
    from sklearn.model_selection import train_test_split

    labels = ["Wake"] * 14 + ["Non-REM stage 2"] * 12 + ["REM sleep"] * 8 + ["Non-REM stage 3"] * 6
    labels = [labels[i] for i in np.random.default_rng(1).permutation(len(labels))]
    _sleep_csv(tmp_path / "sleep_cot.csv", labels)
    built = sleep_cot.build(tmp_path)

    # Upstream's code path: DataFrame in, DataFrame out, twice; the index is the CSV row (our id).
    frame = pd.DataFrame({"label": labels})
    train_val, test = train_test_split(frame, test_size=0.1, random_state=42, stratify=frame["label"])
    train, validation = train_test_split(train_val, test_size=0.1 / 0.9, random_state=43, stratify=train_val["label"])
    for name, expected in (("train", train), ("validation", validation), ("test", test)):
        assert built[name]["id"] == [str(i) for i in expected.index]
        assert set(built[name]["label"]) == set(labels)  # stratified: every stage in every split
    assert split_sizes(built) == {"train": 32, "validation": 4, "test": 4}


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("label", "Stage X", r"sleep_cot\.csv row 2: label 'Stage X' is not one of"),
        ("time_series", str([[0.5] * 1499]), r"sleep_cot\.csv row 2: the EEG epoch has 1499 values, expected 1500"),
        ("time_series", str([0.5] * 1500), r"sleep_cot\.csv row 2 column 'time_series': expected a list written as"),
        (
            "time_series",
            "[[" + "0.5, " * 1499 + "inf]]",
            r"sleep_cot\.csv row 2 column 'time_series': value 1499 is inf",
        ),
    ],
)
def test_sleep_cot_bad_rows(tmp_path, column, value, message):
    raw = copy_fixture("sleep_cot", tmp_path)
    edit_cell(raw / "sleep_cot.csv", 2, column, value)
    with pytest.raises(ValueError, match=message):
        sleep_cot.read_records(raw)


def test_sleep_cot_too_few_rows_per_label_for_stratification(tmp_path):
    _sleep_csv(tmp_path / "sleep_cot.csv", ["Wake"] * 19 + ["REM sleep"])
    with pytest.raises(ValueError, match=r"stratified split on 'label' failed .*'REM sleep': 1"):
        sleep_cot.build(tmp_path)


# --------------------------------------------------------------------------------------------------------------------
# ECG-QA-CoT


def test_ecg_qa_cot_records(tmp_path, caplog):
    raw = ecg_raw_dir(tmp_path)
    with caplog.at_level(logging.WARNING):
        built = ecg_qa_cot.build(raw)
    assert split_sizes(built) == {"train": 3, "validation": 1, "test": 1}
    assert "1 records use a template_id absent" in caplog.text

    first = built["train"][0]
    assert first["id"] == "train/0" and first["task"] == "ecg_qa_cot"
    assert first["pre_prompt"] == ECG_PRE_PROMPT.format(
        context="76-year-old female patient. Recorded with device CS100 3.",
        question="Does this ECG show symptoms of non-diagnostic t abnormalities?",
    )
    assert first["post_prompt"] == (
        "Based on your analysis of the ECG data, select your answer from the following options:\nno, not sure, yes\n\n"
        '- Make sure that your last word is the answer. You MUST end your response with "Answer: "'
    )
    assert first["answer"].endswith("Answer: yes") and first["label"] == "yes"
    assert [c["text"] for c in first["time_series"]] == [
        f"This is ECG Lead {lead}, it has mean {{mean:.4f}} and std {{std:.4f}}:" for lead in ECG_LEADS
    ]
    signal = ptbxl_signal(1)
    for lead in range(12):
        assert len(values(first, lead)) == 1000
        assert_close(values(first, lead), signal[::5, lead])
    assert json.loads(first["metadata"]) == {
        "clinical_context": "76-year-old female patient. Recorded with device CS100 3.",
        "correct_answer": "yes",
        "ecg_id": [1],
        "ecg_paths": ["records500/00000/00001_hr"],
        "possible_answers": ["no", "not sure", "yes"],
        "question": "Does this ECG show symptoms of non-diagnostic t abnormalities?",
        "question_type": "single-verify",
        "sampling_rate_hz": 100,
        "template_id": 1,
    }
    # Empty clinical context -> upstream's default; ecg_id written without brackets.
    second = built["train"][1]
    assert "Clinical Context: 12-lead ECG recording.\n\n" in second["pre_prompt"]
    assert_close(values(second, 11), ptbxl_signal(2)[::5, 11])
    assert json.loads(built["validation"][0]["metadata"])["ecg_paths"] == ["records500/01000/01005_hr"]
    # A template without answer options -> upstream's open-answer post_prompt.
    assert built["test"][0]["post_prompt"] == (
        "Based on your analysis of the ECG data, provide your answer.\n"
        'Make sure that your last word is the answer. You MUST end your response with "Answer: "'
    )


def test_ecg_qa_cot_several_recordings(tmp_path):
    raw = ecg_raw_dir(tmp_path)
    edit_cell(raw / "ecg_qa_cot_test.csv", 0, "ecg_id", "[1, 2]")
    record = ecg_qa_cot.build(raw)["test"][0]
    texts = [c["text"] for c in record["time_series"]]
    assert len(texts) == 24
    assert texts[0] == "This is ECG Lead I (Recording 1), it has mean {mean:.4f} and std {std:.4f}:"
    assert texts[23] == "This is ECG Lead V6 (Recording 2), it has mean {mean:.4f} and std {std:.4f}:"
    assert_close(values(record, 12), ptbxl_signal(2)[::5, 0])


def test_ecg_qa_cot_bad_records(tmp_path):
    raw = ecg_raw_dir(tmp_path)
    (raw / "records500" / "01000" / "01005_hr.dat").unlink()
    with pytest.raises(ValueError, match=r"Missing PTB-XL file .*01005_hr\.dat for ecg_id 1005"):
        ecg_qa_cot.build(raw)

    raw = ecg_raw_dir(tmp_path / "truncated")
    dat = raw / "records500" / "00000" / "00002_hr.dat"
    dat.write_bytes(dat.read_bytes()[: 12 * 2 * 3000])  # 3000 of 5000 samples
    with pytest.raises(ValueError, match=r"00002_hr\.dat \(ecg_id 2\)"):
        ecg_qa_cot.build(raw)

    raw = ecg_raw_dir(tmp_path / "nan")
    signal = ptbxl_signal(1005)
    signal[1234, 4] = np.nan  # format 16 stores it as the invalid-sample code
    write_ptbxl_record(raw, 1005, signal)
    with pytest.raises(ValueError, match=r"01005_hr\.dat \(ecg_id 1005\): lead aVL sample 1234 is not finite"):
        ecg_qa_cot.build(raw)

    raw = ecg_raw_dir(tmp_path / "short")
    write_ptbxl_record(raw, 2, ptbxl_signal(2, samples=1000))
    with pytest.raises(
        ValueError, match=r"00002_hr\.dat \(ecg_id 2\): signal shape \(1000, 12\), expected \(5000, 12\)"
    ):
        ecg_qa_cot.build(raw)


@pytest.mark.parametrize(
    ("file", "column", "value", "message"),
    [
        ("ecg_qa_cot_val.csv", "ecg_id", "[abc]", r"ecg_qa_cot_val\.csv row 0: column 'ecg_id' is 'abc', expected"),
        ("ecg_qa_cot_val.csv", "template_id", "", r"ecg_qa_cot_val\.csv row 0: column 'template_id' is ''"),
        ("ecg_qa_cot_train.csv", "rationale", "", r"ecg_qa_cot_train\.csv row 0: column 'rationale' is empty"),
        ("answers_for_each_template.csv", "classes", "['no', 'yes'", r"answers_for_each_template\.csv row 0: classes"),
    ],
)
def test_ecg_qa_cot_bad_csv_rows(tmp_path, file, column, value, message):
    raw = copy_fixture("ecg_qa_cot", tmp_path)  # no records needed: the CSV is checked first
    for ecg_id in ECG_IDS:
        write_ptbxl_record(raw, ecg_id)
    edit_cell(raw / file, 0, column, value)
    with pytest.raises(ValueError, match=message):
        ecg_qa_cot.build(raw)


# --------------------------------------------------------------------------------------------------------------------
# Shared pieces: CLI, download, zip extraction


def test_every_builder_has_a_cli_help(capsys):
    for module in (tsqa, m4, har_cot, sleep_cot, ecg_qa_cot):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert f"python -m hub_datasets.{module.INFO.name}" in out
        assert "--push_to_hub REPO" in out and module.INFO.sources[0].url in out


def test_python_dash_m_help():
    result = subprocess.run(
        [sys.executable, "-m", "hub_datasets.har_cot", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "har_cot_train_cot.csv" in result.stdout


def test_cli_save_to_disk_and_error_exit(tmp_path, capsys):
    assert har_cot.main(["--raw", str(FIXTURES / "har_cot"), "--save_to", str(tmp_path / "out")]) == 0
    saved, built = load_from_disk(str(tmp_path / "out")), har_cot.build(FIXTURES / "har_cot")
    assert {name: saved[name].to_list() for name in saved} == {name: built[name].to_list() for name in built}

    assert sleep_cot.main(["--raw", str(tmp_path / "nowhere")]) == 1
    assert "error: Missing raw file" in capsys.readouterr().err


def test_download_failure_names_url_and_destination(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/sleep_cot.csv"
    with pytest.raises(common.DownloadError) as err:
        common.download(url, tmp_path / "sleep_cot.csv", manual_hint=sleep_cot.INFO.manual_hint(), timeout=5)
    message = str(err.value)
    assert url in message and str((tmp_path / "sleep_cot.csv").resolve()) in message
    assert "sleep_cot.csv" in message.split("Or place the files by hand:")[1]
    assert not list(tmp_path.iterdir())  # no partial file left behind


def test_download_and_extract_zip(tmp_path):
    import functools
    import http.server
    import threading
    import zipfile

    served = tmp_path / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "bundle.zip", "w") as zf:
        zf.writestr("top/inner/har_cot_train_cot.csv", "x_axis\n")
        zf.writestr("top/other.txt", "ignored")
        zf.writestr("ptb-xl-1.0.3/records500/00000/00001_hr.hea", "header")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *args: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/bundle.zip"
        raw = tmp_path / "raw"
        common.fetch_zip(raw, har_cot.INFO, url, "bundle.zip", names=["har_cot_train_cot.csv"], anchor="records500")
    finally:
        server.shutdown()
        server.server_close()
    found = sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file())
    assert found == ["har_cot_train_cot.csv", "records500/00000/00001_hr.hea"]


def test_records_to_dataset_chunks_and_empty():
    template = tsqa.read_records(FIXTURES / "tsqa")[0]
    records = [{**template, "id": str(i)} for i in range(5)]  # 5 records in chunks of 2
    dataset = common.records_to_dataset(iter(records), chunk_size=2)
    assert dataset["id"] == ["0", "1", "2", "3", "4"] and dataset.features == RECORD_FEATURES
    empty = common.records_to_dataset([])
    assert len(empty) == 0 and empty.features == RECORD_FEATURES


def test_dataset_card_lists_source_license_splits_and_schema():
    built = har_cot.build(FIXTURES / "har_cot")
    card = common.render_card(har_cot.INFO, built)
    assert card.startswith("---\nlicense: unknown\n")
    assert har_cot.URL in card
    assert "| train | 4 |" in card and "| validation | 2 |" in card and "| test | 2 |" in card
    for name in RECORD_FEATURES:
        assert f"| `{name}` |" in card
