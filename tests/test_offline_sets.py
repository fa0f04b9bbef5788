"""Offline sets: they build without network, match the record schema, are deterministic, and their texts are true."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from hub_datasets import bundled, schema, synthetic
from hub_datasets.offline import OFFLINE_SETS, available, load_offline, main, render_card
from hub_datasets.schema import RECORD_FEATURES
from opentslm_hub import features as F
from opentslm_hub.parsing import parse_forecast
from recipes.collator import OpenTSLMDataCollator

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ("train", "validation", "test")
EXPECTED_SIZES = {
    "tsqa_synthetic": (239, 31, 30),
    "captions_bundled": (290, 33, 39),
    "captions_synthetic": (720, 90, 90),
    "har_cot_bundled": (32, 8, 40),
    "sleep_cot_synthetic": (239, 31, 30),
    "ecg_qa_cot_bundled": (82, 18, 16),
    "ou_annotations": (160, 20, 20),
    "lotka_volterra_forecast": (160, 20, 20),
}
EXPECTED_TASKS = {
    "tsqa_synthetic": "tsqa",
    "captions_bundled": "m4",
    "captions_synthetic": "m4",
    "har_cot_bundled": "har_cot",
    "sleep_cot_synthetic": "sleep_cot",
    "ecg_qa_cot_bundled": "ecg_qa_cot",
    "ou_annotations": "ou_annotation",
    "lotka_volterra_forecast": "forecast",
}
# Small sizes for the build-twice determinism check of the slower synthetic sets.
SMALL = {
    "tsqa_synthetic": {"num_per_class": 4},
    "captions_synthetic": {"num_series": 30},
    "sleep_cot_synthetic": {"num_per_stage": 10},
    "ou_annotations": {"num_series": 20},
    "lotka_volterra_forecast": {"num_series": 20},
}

datasets.disable_progress_bars()


HAS_SPKIT = importlib.util.find_spec("spkit") is not None
SPKIT_REASON = "spkit's sample files are not installed: pip install --no-deps spkit==0.0.9.7"


@contextlib.contextmanager
def no_network():
    """Any socket connection inside raises, so a builder that downloads fails loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"an offline builder tried to open a network connection {args[1:]}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        yield


class _Builds(dict):
    """Each set built once per module, on first use, with the network blocked; the ECG set is skipped when spkit's
    files are absent."""

    def __missing__(self, name: str) -> datasets.DatasetDict:
        if name == "ecg_qa_cot_bundled" and not HAS_SPKIT:
            pytest.skip(SPKIT_REASON)
        with no_network():
            self[name] = load_offline(name)
        return self[name]


@pytest.fixture(scope="module")
def built() -> _Builds:
    return _Builds()


def records(dataset_dict: datasets.DatasetDict) -> list[dict]:
    return [record for split in SPLITS for record in dataset_dict[split]]


def meta(record: dict) -> dict:
    return json.loads(record["metadata"])


def values(record: dict, channel: int = 0) -> np.ndarray:
    return np.asarray(record["time_series"][channel]["values"], dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------
# Every set


def test_registry_names_and_tasks():
    assert available() == list(EXPECTED_SIZES)
    assert set(OFFLINE_SETS) == set(EXPECTED_TASKS)


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_set_builds_with_schema_splits_and_sizes(built, name):
    dataset_dict = built[name]
    assert list(dataset_dict) == list(SPLITS)
    assert tuple(len(dataset_dict[split]) for split in SPLITS) == EXPECTED_SIZES[name]
    for split in SPLITS:
        assert dataset_dict[split].features == RECORD_FEATURES
    rows = records(dataset_dict)
    assert len({row["id"] for row in rows}) == len(rows), "ids must be unique across splits"
    for row in rows:
        assert row["task"] == EXPECTED_TASKS[name]
        assert meta(row)["source_set"] == name
        assert row["answer"] and row["pre_prompt"] and row["post_prompt"]
        assert all(
            "{mean:.4f}" in channel["text"] and "{std:.4f}" in channel["text"] for channel in row["time_series"]
        )
        assert all(np.isfinite(channel["values"]).all() for channel in row["time_series"])


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_set_is_deterministic(built, name):
    kwargs = SMALL.get(name, {})
    if name == "ecg_qa_cot_bundled" and not HAS_SPKIT:
        pytest.skip(SPKIT_REASON)
    first = load_offline(name, **kwargs) if kwargs else built[name]
    second = load_offline(name, **kwargs)
    for split in SPLITS:
        assert first[split].to_list() == second[split].to_list()


@pytest.mark.parametrize("name", list(SMALL))
def test_seed_changes_synthetic_sets(name):
    kwargs = SMALL[name]
    first, other = load_offline(name, **kwargs), load_offline(name, seed=7, **kwargs)
    assert records(first) != records(other)


def test_unknown_name_and_parameter_are_named():
    with pytest.raises(ValueError, match="unknown offline set 'nope'.*tsqa_synthetic"):
        load_offline("nope")
    with pytest.raises(TypeError, match="does not take \\['sizes'\\].*num_per_class"):
        load_offline("tsqa_synthetic", sizes=3)


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_cards_name_source_license_and_splits(built, name):
    card = render_card(name, built[name])
    assert card.startswith("---\nlicense: ")
    for heading in ("## Source", "## What is synthetic", "## License", "## Splits", "## Schema", "## Prompt"):
        assert heading in card
    for split, size in zip(SPLITS, EXPECTED_SIZES[name]):
        assert f"| {split} | {size} |" in card
    if name in ("sleep_cot_synthetic",):
        assert "SYNTHETIC" in card and "- synthetic" in card


# ----------------------------------------------------------------------------------------------------------------
# TSQA-like multiple choice


def test_tsqa_answer_option_and_generator_agree(built):
    letters = ("(a)", "(b)", "(c)")
    for row in records(built["tsqa_synthetic"]):
        info = meta(row)
        feature, option, params = info["tsqa_task"], info["correct_option"], info["generator"]
        assert row["post_prompt"] == f"Predict the {feature} Answer:"
        assert row["answer"] == f"{row['label']} {option}"
        listed = re.findall(r"^\((a|b|c)\) (.+)$", row["pre_prompt"], flags=re.MULTILINE)
        assert [text for _, text in listed] == info["options"]
        assert info["options"][letters.index(row["label"])] == option
        assert row["time_series"][0]["text"].endswith(".")
        assert len(values(row)) == params["length"] in synthetic.TSQA_LENGTHS
        # the correct option is the generating one ...
        if feature == "trend":
            expected = {1: "upward trend", -1: "downward trend", 0: "constant trend"}[
                int(np.sign(params["total_change"]))
            ]
        elif feature == "volatility":
            expected = {1: "increased volatility", -1: "decreased volatility", 0: "constant volatility"}[
                int(np.sign(round(params["sigma_end"] - params["sigma_start"], 6)))
            ]
        elif feature == "season":
            if params["amplitude"] == 0:
                expected = "no seasonality"
            else:
                ratio = params["period_second_half"] / params["period_first_half"]
                expected = "fixed seasonality" if ratio == 1 else "shifting seasonality"
        elif feature == "outlier":
            expected = (
                "sudden spike"
                if "spike_positions" in params
                else "level shift"
                if "shift_size" in params
                else "no outlier"
            )
            if "spike_positions" in params:
                assert set(params["spike_positions"]) <= set(F.detect_spikes(values(row)))
        else:
            sigma = params["noise_sigma"]
            expected = "low noise" if sigma < 0.1 else "moderate noise" if sigma < 0.5 else "high noise"
        assert option == expected
        # ... and the stored series' own features support it
        assert synthetic.tsqa_class_from_features(feature, synthetic.tsqa_measure(feature, values(row))) == option


def test_option_listing_tags_each_option_with_its_letter():
    assert schema.option_letters(3) == ["(a)", "(b)", "(c)"]
    assert schema.option_listing(["upward trend", "constant trend"]) == "(a) upward trend\n(b) constant trend"
    for count in (0, 27):
        with pytest.raises(ValueError, match=f"{count} options"):
            schema.option_letters(count)


def test_tsqa_classes_and_letters_are_balanced(built):
    rows = records(built["tsqa_synthetic"])
    per_option = {}
    for row in rows:
        per_option[meta(row)["correct_option"]] = per_option.get(meta(row)["correct_option"], 0) + 1
    assert len(per_option) == 15 and set(per_option.values()) == {20}
    letters = [row["label"] for row in rows]
    assert all(letters.count(letter) > 60 for letter in ("(a)", "(b)", "(c)"))


def test_tsqa_option_first_answers_name_the_option_then_its_letter():
    from opentslm_hub.parsing import parse_option

    plain = synthetic.build_tsqa_synthetic(num_per_class=2, seed=3)["train"]
    option_first = synthetic.build_tsqa_synthetic(num_per_class=2, seed=3, answer_format="option_first")["train"]
    for row, other in zip(plain, option_first):
        assert other["answer"] == f"{meta(row)['correct_option']} {row['label']}"
        assert parse_option(other["answer"]) == other["label"] == row["label"]
        assert other["pre_prompt"] == row["pre_prompt"] and other["time_series"] == row["time_series"]
    with pytest.raises(ValueError, match="answer_format='letter_last'"):
        synthetic.build_tsqa_synthetic(num_per_class=2, answer_format="letter_last")


# ----------------------------------------------------------------------------------------------------------------
# Ornstein–Uhlenbeck annotations


def test_ou_annotation_matches_drift_and_series(built):
    for row in records(built["ou_annotations"]):
        info, x = meta(row), values(row)
        annotation = json.loads(row["answer"])
        assert list(annotation) == ["trend", "noise", "extrema"]
        assert np.all((x >= 0) & (x <= 99) & (x == np.round(x)))
        assert synthetic.to_two_digit_tokens(x).count(" ") == len(x) - 1
        params = info["ou_params"]
        drift = params["mu"] - params["x0"]
        if info["trend_class"] == "upward":
            assert drift > 0 and "upward trend" in annotation["trend"]
        elif info["trend_class"] == "downward":
            assert drift < 0 and "downward trend" in annotation["trend"]
        else:
            assert abs(drift) <= 2 and "no clear trend" in annotation["trend"]
        assert f"noise level is {info['noise_class']}" in annotation["noise"]
        high, low = int(np.argmax(x)), int(np.argmin(x))
        assert f"maximum value {x[high]:.0f} is first reached at time step {high} " in annotation["extrema"]
        assert f"minimum value {x[low]:.0f} at time step {low}." in annotation["extrema"]
        assert synthetic.ou_annotation(x)[0] == annotation


def test_ou_classes_are_balanced(built):
    rows = records(built["ou_annotations"])
    classes = [(meta(row)["trend_class"], meta(row)["noise_class"]) for row in rows]
    assert len(set(classes)) == 9
    assert max(classes.count(c) for c in set(classes)) - min(classes.count(c) for c in set(classes)) <= 1


# ----------------------------------------------------------------------------------------------------------------
# Lotka–Volterra forecasting


def test_lotka_volterra_answer_is_the_true_continuation(built):
    rows = records(built["lotka_volterra_forecast"])
    for row in rows:
        info = meta(row)
        future = np.asarray(info["future"]).T
        assert future.shape == (info["horizon"], 2) == (20, 2)
        assert [len(channel["values"]) for channel in row["time_series"]] == [80, 80]
        assert re.fullmatch(r"(\d+\.\d{3},\d+\.\d{3};){19}\d+\.\d{3},\d+\.\d{3}", row["answer"])
        assert np.abs(parse_forecast(row["answer"], 2, horizon=20, strict=True) - future).max() <= 5e-4 + 1e-12
    for row in rows[:5]:  # integrate again from the stored parameters
        info = meta(row)
        times = np.arange(100) * info["time_step"]
        path = synthetic.lotka_volterra(**info["ode_params"], times=times)
        np.testing.assert_allclose(path[80:], np.asarray(info["future"]).T, rtol=1e-6)
        np.testing.assert_allclose(path[:80, 0], values(row, 0), rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Synthetic sleep EEG


def test_sleep_rationales_are_recomputable_and_support_the_label(built):
    dataset_dict = built["sleep_cot_synthetic"]
    for split in SPLITS:
        assert set(dataset_dict[split]["label"]) == set(synthetic.SLEEP_LABELS)
    for row in records(dataset_dict):
        x = values(row)
        assert len(x) == 1500
        assert row["answer"].endswith(f"Answer: {row['label']}")
        measured = F.sleep_eeg_features(x, synthetic.SLEEP_FS)
        assert synthetic.sleep_stage_supported(row["label"], measured)
        assert synthetic.sleep_rationale(row["label"], measured) == row["answer"]


# ----------------------------------------------------------------------------------------------------------------
# BasicMotions HAR


def test_har_prompt_lists_this_sets_labels():
    assert "badminton, running, standing, walking." in bundled.HAR_PRE_PROMPT
    assert "biking" not in bundled.HAR_PRE_PROMPT


def test_har_rationales_are_recomputable(built):
    rows = records(built["har_cot_bundled"])
    assert {row["label"] for row in rows} == set(bundled.HAR_LABELS)
    backed = 0
    for row in rows:
        assert [len(channel["values"]) for channel in row["time_series"]] == [100, 100, 100]
        measured = bundled.motion_features(*(values(row, axis) for axis in range(3)))
        assert bundled.har_rationale(row["label"], measured) == row["answer"]
        assert row["answer"].endswith(f"Answer: {row['label']}")
        backed += (row["label"], measured.intensity) in bundled.HAR_READINGS
    assert backed >= 0.85 * len(rows)


def test_har_crops_add_shorter_training_windows_of_the_same_recordings(built):
    plain = built["har_cot_bundled"]
    cropped = load_offline("har_cot_bundled", crops_per_recording=2)
    assert len(cropped["train"]) == 3 * len(plain["train"])
    for split in ("validation", "test"):
        assert cropped[split]["id"] == plain[split]["id"]
    whole = {row["id"]: row for row in plain["train"]}
    X_train = bundled.load_basic_motions()[0]
    for row in cropped["train"]:
        if row["id"] in whole:
            assert row["answer"] == whole[row["id"]]["answer"]
            continue
        index, start, stop = (int(part) for part in row["id"].rsplit("-", 3)[1:])
        assert f"{bundled.HAR_SET}-train-{index:03d}" in whole  # crops come from training recordings only
        assert 50 <= stop - start <= 90
        axes = [values(row, axis) for axis in range(3)]
        np.testing.assert_allclose(axes, X_train[index][:3, start:stop], rtol=1e-6)
        measured = bundled.motion_features(*axes)
        assert row["answer"] == bundled.har_rationale(row["label"], measured)
    with pytest.raises(ValueError, match="crops_per_recording=-1"):
        bundled.build_har_cot_bundled(crops_per_recording=-1)
    with pytest.raises(ValueError, match="min_crop_steps=95"):
        bundled.build_har_cot_bundled(crops_per_recording=1, min_crop_steps=95)


# ----------------------------------------------------------------------------------------------------------------
# ECG


def test_ecg_answers_follow_the_r_peaks(built):
    rows = records(built["ecg_qa_cot_bundled"])
    assert {len(row["time_series"]) for row in rows} == {1, 12}
    for row in rows:
        info = meta(row)
        assert row["label"] == info["correct_answer"] in info["possible_answers"]
        assert row["answer"].endswith(f"Answer: {row['label']}")
        assert ", ".join(info["possible_answers"]) in row["post_prompt"]
        hr = F.heart_rate(info["r_peaks"], info["sampling_rate_hz"])  # peaks rounded to 100 Hz
        features = info["features"]
        assert math.isclose(hr.bpm, features["bpm"], rel_tol=0.02)
        if info["question_type"] == "heart_rate":
            assert row["label"] == F.heart_rate_band(features["bpm"])
            assert f"{features['bpm']:.1f} beats per minute" in row["answer"]
        else:
            assert row["label"] == F.rhythm_regularity(features["rr_cv"])
            assert abs(features["rr_cv"] - F.IRREGULAR_RR_CV) >= bundled.RHYTHM_MARGIN
        if len(row["time_series"]) == 12:
            assert row["time_series"][1]["text"].startswith("This is ECG Lead II, it has mean")
            assert len(values(row)) == 500
        else:
            assert row["time_series"][0]["text"].startswith("This is ECG Lead MLII, it has mean")
            assert len(values(row)) == 1000
    labels = {row["label"] for row in rows}
    assert {"normal", "tachycardia", "regular", "irregular"} <= labels


def test_ecg_splits_do_not_share_windows(built):
    sources = {
        split: {(meta(r)["source"], meta(r)["window_start_s"]) for r in built["ecg_qa_cot_bundled"][split]}
        for split in SPLITS
    }
    spans = {split: {(source, start // 30) for source, start in sources[split]} for split in SPLITS}
    assert not spans["train"] & spans["test"] and not spans["train"] & spans["validation"]


def test_ecg_without_twelve_leads_keeps_the_single_lead_part(built):
    single = load_offline("ecg_qa_cot_bundled", twelve_lead=False)
    assert {len(row["time_series"]) for row in records(single)} == {1}
    if HAS_SPKIT:
        full_single = [row for row in records(built["ecg_qa_cot_bundled"]) if len(row["time_series"]) == 1]
        assert records(single) == full_single


def test_numpy_only_unpickler_refuses_other_globals():
    payload = pickle.dumps({"X": np.zeros((2, 3)), "fs": 500})
    assert bundled.NumpyOnlyUnpickler(io.BytesIO(payload)).load()["fs"] == 500
    with pytest.raises(pickle.UnpicklingError, match="refusing to load builtins.eval"):
        bundled.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(eval))).load()


# ----------------------------------------------------------------------------------------------------------------
# Captions


def test_captions_are_recomputable_and_splits_disjoint(built):
    dataset_dict = built["captions_bundled"]
    for row in records(dataset_dict):
        assert bundled.write_caption(bundled.caption_features(values(row))) == row["answer"]
    spans = {
        split: [(meta(r)["source"], meta(r)["window_start"], meta(r)["window_stop"]) for r in dataset_dict[split]]
        for split in SPLITS
    }
    for split in ("validation", "test"):
        for source, start, stop in spans[split]:
            for other, other_start, other_stop in spans["train"]:
                assert not (source == other and start < other_stop and other_start < stop)
    assert {meta(r)["source"] for r in records(dataset_dict)} == {
        "airline", "lynx", "shampoo", "pbs", "solar", "sunspots", "co2", "nile", "elnino",
    }  # fmt: skip


def test_reversed_caption_copies_flip_the_trend_and_keep_the_rest(built):
    plain = built["captions_bundled"]
    both = load_offline("captions_bundled", reversed_copies=True)
    for split in ("validation", "test"):
        assert list(both[split]["id"]) == list(plain[split]["id"])
        assert list(both[split]["answer"]) == list(plain[split]["answer"])
    ids = list(plain["train"]["id"])
    assert list(both["train"]["id"]) == ids + [f"{i}-reversed" for i in ids]
    forward = {row["id"]: row for row in records(plain)}
    directions = {"increasing": "decreasing", "decreasing": "increasing", "flat": "flat"}
    flipped = 0
    for row in both["train"]:
        if not row["id"].endswith("-reversed"):
            assert row["answer"] == forward[row["id"]]["answer"]
            continue
        source = forward[row["id"].removesuffix("-reversed")]
        assert values(row).tolist() == values(source).tolist()[::-1]
        assert meta(row)["reversed_in_time"] is True and "reversed_in_time" not in meta(source)
        assert row["answer"] == bundled.write_caption(bundled.caption_features(values(row)))
        ours, theirs = (bundled.caption_features(values(r)) for r in (row, source))
        assert ours.mean == pytest.approx(theirs.mean) and ours.seasonality.period == theirs.seasonality.period
        assert ours.trend.direction == directions[theirs.trend.direction]
        flipped += ours.trend.direction != "flat"
    assert flipped > 100  # the sources rise more often than they fall; the copies balance them
    with pytest.raises(ValueError, match="reversed_copies='yes'"):
        bundled.build_captions_bundled(reversed_copies="yes")


# ----------------------------------------------------------------------------------------------------------------
# Feature helpers


def test_synthetic_captions_are_recomputable_balanced_and_varied(built):
    rows = records(built["captions_synthetic"])
    directions = []
    for row in rows:
        info, x = meta(row), values(row)
        measured = bundled.caption_features(x)
        assert row["answer"] == bundled.write_caption(measured)
        assert measured.trend.direction == info["trend_class"]
        # the mean and std the prompt states are the drawn level and scale, whatever the direction
        assert measured.mean == pytest.approx(
            info["generator"]["level"], rel=1e-5, abs=1e-4 * info["generator"]["scale"]
        )
        assert x.std() == pytest.approx(info["generator"]["scale"], rel=1e-4)
        assert bundled.MIN_CAPTION_LENGTH <= x.size <= synthetic.CAPTION_MAX_LENGTH
        assert row["pre_prompt"] == built["captions_bundled"]["train"][0]["pre_prompt"]
        assert row["post_prompt"] == built["captions_bundled"]["train"][0]["post_prompt"]
        directions.append(info["trend_class"])
    assert {directions.count(d) for d in synthetic.CAPTION_TRENDS} == {300}
    # every direction at levels from below 1 to the thousands, with and without a detected period
    for direction in synthetic.CAPTION_TRENDS:
        ours = [meta(row)["features"] for row, d in zip(rows, directions) if d == direction]
        means = [abs(f["mean"]) for f in ours]
        assert min(means) < 1 and max(means) > 1000
        assert 0.2 < np.mean([f["seasonality"]["period"] is not None for f in ours]) < 0.8
    with pytest.raises(ValueError, match="direction='sideways'"):
        synthetic.synthetic_caption_series("sideways", 30, np.random.default_rng(0))
    with pytest.raises(ValueError, match="num_series=5"):
        synthetic.build_captions_synthetic(num_series=5)


def test_feature_helpers_on_known_series():
    steps = np.arange(120, dtype=float)
    rng = np.random.default_rng(0)
    assert F.linear_trend(2 * steps + rng.normal(0, 1, 120)).direction == "increasing"
    assert F.linear_trend(-steps).direction == "decreasing"
    assert F.linear_trend(rng.normal(0, 1, 120)).direction == "flat"
    assert F.seasonality(np.sin(2 * np.pi * steps / 12) + 0.1 * rng.normal(size=120)).period == 12
    assert F.seasonality(rng.normal(size=120)).period is None
    assert abs(F.noise_std(np.sin(steps / 10) + 0.3 * rng.normal(size=120)) - 0.3) < 0.08
    spiky = rng.normal(0, 1, 120)
    spiky[40] += 15
    assert F.detect_spikes(spiky) == [40]
    step = rng.normal(0, 1, 120) + 8 * (steps >= 70)
    assert abs(F.level_shift(step).index - 70) <= 2
    assert F.extrema([3.0, 9.0, -1.0, 9.0]) == F.Extrema(9.0, 1, -1.0, 2)
    assert F.heart_rate([0, 50, 100, 150], fs=100).band == "tachycardia"  # RR 0.5 s = 120 bpm
    assert F.heart_rate([0, 100, 200, 300], fs=100).bpm == 60.0
    assert F.heart_rate_band(59.9) == "bradycardia" and F.heart_rate_band(100.0) == "normal"
    assert (
        F.format_number(0.558634) == "0.5586"
        and F.format_number(6991.2) == "6991"
        and F.format_number(316.1) == "316.1"
    )
    with pytest.raises(ValueError, match="non-finite value nan at index 1"):
        F.linear_trend([1.0, float("nan"), 2.0])


# ----------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_help_lists_every_set():
    result = subprocess.run(
        [sys.executable, "-m", "hub_datasets.offline", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for name in available():
        assert name in result.stdout


def test_cli_saves_with_card_and_pushes(tmp_path, monkeypatch, capsys):
    assert main(["--name", "ou_annotations", "--param", "num_series=20", "--save_to", str(tmp_path / "ou")]) == 0
    saved = datasets.load_from_disk(str(tmp_path / "ou"))
    assert [len(saved[split]) for split in SPLITS] == [16, 2, 2]
    assert "--param num_series=20" in (tmp_path / "ou" / "README.md").read_text()

    pushed = {}
    monkeypatch.setattr(
        "hub_datasets.offline.push_to_hub",
        lambda dataset_dict, repo, card, private=False: pushed.update(repo=repo, card=card, private=private) or "url",
    )
    assert main(["--name", "har_cot_bundled", "--push_to_hub", "me/har", "--private"]) == 0
    assert pushed["repo"] == "me/har" and pushed["private"] and "BasicMotions" in pushed["card"]

    assert main(["--name", "ou_annotations", "--param", "sizes=3"]) == 2
    assert "does not take ['sizes']" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# No network, and the records feed the processor


def test_builds_run_with_the_network_blocked(built):
    for name in available():
        if name != "ecg_qa_cot_bundled" or HAS_SPKIT:
            assert len(built[name]["train"]) > 0  # the fixture builds every set inside no_network()
    with no_network(), pytest.raises(AssertionError, match="network connection"):
        socket.create_connection(("127.0.0.1", 9))


def test_every_set_encodes_with_the_processor(built):
    from tiny import tiny_tokenizer

    from modeling_opentslm import OpenTSLMProcessor

    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    processor = OpenTSLMProcessor(tokenizer=tokenizer)
    for name in available():
        if name == "ecg_qa_cot_bundled" and not HAS_SPKIT:
            continue
        rows = [built[name]["train"][0], built[name]["train"][1]]
        batch = OpenTSLMDataCollator(processor)(rows)
        assert batch["time_series"].shape[:2] == (2, max(len(row["time_series"]) for row in rows))
        assert (batch["labels"] != -100).any(dim=1).all()
