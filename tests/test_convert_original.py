"""The converter of original OpenTSLM checkpoints, against fixtures recorded with the original code itself.

`tests/fixtures/original/` holds checkpoints written by the original trainer for a tiny random Llama and Gemma 3, and
what the original did with a few samples of two stages (token layout, logits, greedy tokens); `make_fixtures.py` there
regenerates them in a virtual environment of the original code. Here each is converted, loaded with
`trust_remote_code` in a process that cannot import this project, and fed through the processor's original format.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from remote_code import run_python_without_the_package

from modeling_opentslm.convert_opentslm_original_checkpoint import (
    convert,
    load_original_checkpoint,
    parse_released_name,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "original"
SP_FIXTURES = ("llama-sp-tsqa", "llama-sp-har", "gemma3-sp-tsqa", "gemma3-sp-har")
FLAMINGO_FIXTURES = ("llama-flamingo-tsqa", "llama-flamingo-har", "gemma3-flamingo-har")
LOGITS_ATOL = 1e-4

# The series texts of the original data sets, as templates (the processor states the mean and std).
PARITY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoProcessor

    HAR = "The following is the accelerometer data on the {axis}-axis, it has mean {{mean:.4f}} and std {{std:.4f}}:"
    SERIES_TEXTS = {
        "tsqa": ["This is the time series, it has mean {mean:.4f} and std {std:.4f}."],
        "har": [HAR.format(axis=axis) for axis in "xyz"],
    }
    report = {}
    for name, folder in json.loads(sys.argv[1]).items():
        fixture = json.loads(open(f"{sys.argv[2]}/{name.split('+')[0]}.json").read())
        expected_logits = load_file(f"{sys.argv[2]}/{name.split('+')[0]}.logits.safetensors")
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert "modeling_opentslm" not in sys.modules
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        samples = []
        for i, sample in enumerate(fixture["samples"]):
            series = [np.asarray(s) for s in sample["time_series"]]
            text = processor.format_prompt(sample["pre_prompt"], sample["post_prompt"], num_series=len(series))
            kwargs = dict(text=text, time_series=series, time_series_text=SERIES_TEXTS[fixture["task"]])
            inputs = processor(**kwargs)
            scored = processor(**kwargs, answer=sample["answer"])
            labels = scored.pop("labels")[0]
            ids = inputs["input_ids"][0]
            prompt_length = ids.shape[0]
            with torch.no_grad():
                prompt_logits = model(**inputs).logits[0]
                # The original's training forward counts every position, masked pad tokens included (its generate,
                # like ours, does not): give it those positions.
                positions = torch.arange(scored["input_ids"].shape[1])[None]
                answer_logits = model(**scored, position_ids=positions).logits[0, prompt_length - 1 : -1]
                generated = model.generate(**inputs, max_new_tokens=len(sample["greedy_tokens"]), do_sample=False)
            want_prompt = expected_logits[f"prompt_logits.{i}"]
            want_answer = expected_logits[f"answer_logits.{i}"]
            vocab = want_prompt.shape[-1]
            soft = processor.placeholders == "per_patch"  # SP: the original has no token at these positions
            samples.append({
                "prompt_ids": (torch.where(ids == processor.ts_token_id, -1, ids) if soft else ids).tolist(),
                "prompt_mask": inputs["attention_mask"][0].tolist(),
                "full_ids": scored["input_ids"][0].tolist(),
                "labels": labels.tolist(),
                "prompt_logits_diff": float((prompt_logits[-want_prompt.shape[0]:, :vocab] - want_prompt).abs().max()),
                "answer_logits_diff": float((answer_logits[:, :vocab] - want_answer).abs().max()),
                "greedy": generated[0, prompt_length:].tolist(),
            })
        report[name] = samples
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    """Every fixture converted (SP with its adapters kept), and Llama's SP LoRA one once more with them merged."""
    out = tmp_path_factory.mktemp("converted")
    folders = {}
    for name in SP_FIXTURES + FLAMINGO_FIXTURES:
        family, variant, task = name.split("-")
        kwargs = dict(base_model=str(FIXTURES / f"llm-{family}"), task=task, dtype="float32")
        folders[name] = convert(str(FIXTURES / f"{name}.pt"), out / name, **kwargs)
        if name == "llama-sp-har":
            folders[f"{name}+merged"] = convert(
                str(FIXTURES / f"{name}.pt"), out / f"{name}-merged", lora="merge", **kwargs
            )
    return folders


@pytest.fixture(scope="module")
def parity(converted) -> dict[str, list[dict]]:
    folders = json.dumps({name: str(folder) for name, folder in converted.items()})
    return run_python_without_the_package(PARITY_SCRIPT, cwd=ROOT, args=(folders, str(FIXTURES)))


@pytest.mark.parametrize("name", [*SP_FIXTURES, "llama-sp-har+merged", *FLAMINGO_FIXTURES])
def test_converted_model_answers_like_the_original(parity, name):
    fixture = json.loads((FIXTURES / f"{name.split('+')[0]}.json").read_text())
    for got, want in zip(parity[name], fixture["samples"], strict=True):
        assert got["prompt_ids"] == want["prompt_ids"]  # token ids (SP: -1 where the series' soft tokens go)
        if fixture["variant"] == "sp":  # the answer is tokenised on its own, with its BOS, all of it a target
            assert got["prompt_mask"] == want["prompt_mask"]  # 0 on the pad tokens a left-padding tokenizer leaves
            assert got["full_ids"][len(want["prompt_ids"]) :] == want["answer_ids"]
            assert got["labels"] == [-100] * len(want["prompt_ids"]) + want["answer_ids"]
        else:  # one text; the labels start at the prompt's last token, as in the original
            assert got["full_ids"] == want["full_ids"] and got["labels"] == want["labels"]
        assert got["prompt_logits_diff"] <= LOGITS_ATOL, got["prompt_logits_diff"]
        assert got["answer_logits_diff"] <= LOGITS_ATOL, got["answer_logits_diff"]
        assert got["greedy"] == want["greedy_tokens"]


@pytest.mark.parametrize("name", ["llama-sp-har", "gemma3-flamingo-har"])
def test_converted_model_gives_the_same_answers_in_a_batch(converted, name):
    """The original ran batch 1 only; the converted model also batches (left padding, padding patches masked)."""
    from tiny import assert_batched_equals_unbatched

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor

    model = OpenTSLMForCausalLM.from_pretrained(converted[name]).eval()
    assert_batched_equals_unbatched(model, OpenTSLMProcessor.from_pretrained(converted[name]), atol=1e-5, rtol=1e-4)


def test_converted_config_records_the_original(converted):
    config = json.loads((converted["llama-sp-har"] / "config.json").read_text())
    assert config["original_checkpoint"]["task"] == "har"
    assert config["original_checkpoint"]["stage"] == "stage3_cot"
    assert config["original_checkpoint"]["variant"] == "sp"
    assert config["lora"]["r"] == 16 and config["lora"]["lora_alpha"] == 32
    assert json.loads((converted["llama-sp-har+merged"] / "config.json").read_text())["lora"] is None
    processor = json.loads((converted["llama-sp-har"] / "processor_config.json").read_text())
    assert processor["prompt_format"] == "original"
    assert processor["feature_extractor"]["std_ddof"] == 1 and processor["feature_extractor"]["std_floor"] == 1e-6


def test_strict_mapping_names_the_leftovers_both_ways(tmp_path):
    checkpoint = load_original_checkpoint(FIXTURES / "llama-sp-tsqa.pt")
    checkpoint["encoder_state"]["extra_norm.weight"] = torch.ones(16)
    del checkpoint["projector_state"]["projector.1.bias"]
    torch.save(checkpoint, tmp_path / "broken.pt")
    with pytest.raises(ValueError) as error:
        convert(str(tmp_path / "broken.pt"), tmp_path / "out", base_model=str(FIXTURES / "llm-llama"), task="tsqa")
    message = str(error.value)
    assert "encoder_state.extra_norm.weight" in message.split("Model parameters")[0]
    assert "model.projector.linear.bias" in message.split("Model parameters")[1]
    assert not (tmp_path / "out").exists()


def test_flamingo_mapping_is_strict_too(tmp_path):
    checkpoint = load_original_checkpoint(FIXTURES / "llama-flamingo-tsqa.pt")
    state = checkpoint["model_state"]
    state["model.perceiver.extra_scale"] = torch.ones(2)
    for prefix in ("model.", "llm."):  # the trainer's state dict names every tensor twice
        del state[f"{prefix}perceiver.norm.bias"]
    torch.save(checkpoint, tmp_path / "broken.pt")
    with pytest.raises(ValueError) as error:
        convert(str(tmp_path / "broken.pt"), tmp_path / "out", base_model=str(FIXTURES / "llm-llama"), task="tsqa")
    unused, unfilled = str(error.value).split("Model parameters")
    assert "model_state.perceiver.extra_scale" in unused and "model.resampler.layer_norm.bias" in unfilled


def test_a_disallowed_pickled_class_is_refused(tmp_path):
    checkpoint = load_original_checkpoint(FIXTURES / "llama-sp-tsqa.pt")
    checkpoint["args"] = argparse.Namespace(lr=1e-4)
    torch.save(checkpoint, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"argparse\.Namespace.*not among the classes"):
        convert(str(tmp_path / "pickled.pt"), tmp_path / "out", base_model=str(FIXTURES / "llm-llama"), task="tsqa")


def test_the_lora_config_is_read_without_peft_classes():
    checkpoint = load_original_checkpoint(FIXTURES / "llama-sp-har.pt")
    fields = checkpoint["lora_config"]["default"].as_dict()
    assert fields["r"] == 16 and set(fields["target_modules"]) >= {"q_proj", "down_proj"}
    assert (
        type(checkpoint["lora_config"]["default"]).__module__
        == "modeling_opentslm.convert_opentslm_original_checkpoint"
    )


@pytest.mark.parametrize(
    "repo_id, expected",
    [
        ("OpenTSLM/gemma-3-1b-pt-ecg-flamingo", ("google/gemma-3-1b-pt", "ecg", "stage5_ecg_cot", "flamingo")),
        ("OpenTSLM/gemma-3-270m-sleep-sp", ("google/gemma-3-270m", "sleep", "stage4_sleep_cot", "sp")),
        ("OpenTSLM/llama-3.2-3b-m4-sp", ("meta-llama/Llama-3.2-3B", "m4", "stage2_captioning", "sp")),
    ],
)
def test_released_repo_names_give_base_task_and_variant(repo_id, expected):
    named = parse_released_name(repo_id)
    assert (named["base_model"], named["task"], named["stage"], named["variant"]) == expected


def test_an_unknown_repo_name_asks_for_the_settings():
    with pytest.raises(ValueError, match="Pass --base_model, --task and --variant"):
        parse_released_name("someone/my-opentslm")


HUB_CLIENT = """
import json, sys
from huggingface_hub import HfApi
from modeling_opentslm.convert_opentslm_original_checkpoint import main

checkpoint, base, out = sys.argv[1:]
api = HfApi()
api.create_repo("OpenTSLM/llama-3.2-1b-tsqa-sp")
api.upload_file(path_or_fileobj=checkpoint, path_in_repo="model_checkpoint.pt", repo_id="OpenTSLM/llama-3.2-1b-tsqa-sp")
main(["--checkpoint", "OpenTSLM/llama-3.2-1b-tsqa-sp", "--base_model", base, "--output_dir", out,
      "--push_to_hub", "tester/llama-3.2-1b-tsqa-sp-converted"])
"""


@pytest.mark.slow  # end to end: a fresh process downloads, converts and pushes through the fake Hub
def test_a_released_repo_id_is_converted_from_the_hub_and_pushed(tmp_path):
    from fake_hub import FakeHub

    with FakeHub() as hub:
        env = hub.env(os.environ)
        env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                HUB_CLIENT,
                str(FIXTURES / "llama-sp-tsqa.pt"),
                str(FIXTURES / "llm-llama"),
                str(tmp_path / "out"),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        pushed = hub.files("models", "tester/llama-3.2-1b-tsqa-sp-converted") if result.returncode == 0 else {}
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"config.json", "model.safetensors", "processor_config.json", "modeling_opentslm.py", "README.md"} <= set(
        pushed
    )
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    # Task, stage and variant come from the repo name; the base model was given.
    assert config["original_checkpoint"]["source"] == "OpenTSLM/llama-3.2-1b-tsqa-sp"
    assert config["original_checkpoint"]["task"] == "tsqa" and config["original_checkpoint"]["stage"] == "stage1_mcq"
    assert config["architecture"] == "sp"
    assert config["text_config"]["dtype"] == "bfloat16"  # the original runs the SP LLM in bf16
