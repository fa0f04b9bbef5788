"""Checkpoints that hold only OpenTSLM's own weights (`save_pretrained(..., llm_weights="base")`): the LLM is loaded
from the base model the config names, the encoder, bridge, LoRA adapters and added-token rows from the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from remote_code import run_without_the_package
from safetensors import safe_open
from tiny import TINY_ENCODER, prompts, save_tiny_llm, series_batch, tiny_processor, tiny_tokenizer

from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor


def build(tmp_path, family: str, architecture: str = "sp", lora: bool = True):
    llm = save_tiny_llm(tmp_path / f"llm-{family}", family)
    placeholders = "per_series" if architecture == "flamingo" else "per_patch"
    processor = OpenTSLMProcessor.from_llm(llm, placeholders=placeholders, use_chat_template=False)
    overrides = {"num_latents": 4, "resampler_num_layers": 1, "cross_attention_every_n_layers": 1}
    model = OpenTSLMForCausalLM.from_llm(
        llm,
        processor,
        architecture=architecture,
        encoder_config=TINY_ENCODER,
        config_overrides=overrides if architecture == "flamingo" else None,
    )
    if lora:
        model.add_lora(r=4, lora_alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():  # trained-looking weights: non-zero LoRA B, open gates, moved added rows
        for name, parameter in model.named_parameters():
            if "lora_B" in name or name.endswith("_gate"):
                parameter.normal_(0, 0.2)
        model.get_input_embeddings().weight[model.config.base_vocab_size :] += 0.5
        if not model.config.tie_word_embeddings:
            model.get_output_embeddings().weight[model.config.base_vocab_size :] -= 0.5
    return model.eval(), processor, llm


def logits(model, processor) -> torch.Tensor:
    batch = series_batch()
    inputs = processor(text=prompts(processor, batch), time_series=batch)
    with torch.no_grad():
        return model(**inputs).logits


@pytest.mark.parametrize(
    "family,architecture,lora",
    [("llama", "sp", True), ("qwen2", "sp", False), ("llama", "flamingo", True), ("gemma3", "sp", True)],
)
def test_save_only_own_weights_and_load_on_the_base(tmp_path, family, architecture, lora):
    model, processor, llm = build(tmp_path, family, architecture, lora)
    folder = tmp_path / "own"
    model.save_pretrained(folder, llm_weights="base")
    processor.save_pretrained(folder)

    config = json.loads((folder / "config.json").read_text())
    assert config["llm_weights"] == "base" and config["base_model_name_or_path"] == llm
    assert model.config.llm_weights == "included"  # saving does not change the model in memory
    with safe_open(folder / "model.safetensors", "pt") as weights:
        names = set(weights.keys())
    assert not any(name.startswith("model.language_model.") and "lora_" not in name for name in names)
    assert not any(name.startswith("lm_head.") for name in names)
    assert "added_tokens.input_embeddings" in names
    assert ("added_tokens.output_embeddings" in names) == (not model.config.tie_word_embeddings)
    assert any("lora_B" in name for name in names) == lora

    loaded = OpenTSLMForCausalLM.from_pretrained(folder)
    assert loaded.config.llm_weights == "base"
    torch.testing.assert_close(logits(loaded, processor), logits(model, processor), rtol=0, atol=0)

    # The layout it was loaded with is the default when saving again; the full layout on request.
    full = tmp_path / "full"
    loaded.save_pretrained(full, llm_weights="included")
    assert json.loads((full / "config.json").read_text())["llm_weights"] == "included"
    again = OpenTSLMForCausalLM.from_pretrained(full)
    torch.testing.assert_close(logits(again, processor), logits(model, processor), rtol=0, atol=0)


@pytest.mark.slow  # a fresh process that imports transformers
def test_base_model_argument_and_remote_code(tmp_path):
    model, processor, llm = build(tmp_path, "llama")
    folder = tmp_path / "own"
    model.save_pretrained(folder, llm_weights="base")
    processor.save_pretrained(folder)
    moved = tmp_path / "moved-llm"
    (tmp_path / "llm-llama").rename(moved)
    with pytest.raises(OSError):
        OpenTSLMForCausalLM.from_pretrained(folder)  # the recorded base is gone
    loaded = OpenTSLMForCausalLM.from_pretrained(folder, base_model_name_or_path=str(moved))
    expected = logits(model, processor)
    torch.testing.assert_close(logits(loaded, processor), expected, rtol=0, atol=0)

    # Without this project installed: trust_remote_code, the LLM from the (recorded) base folder.
    config = json.loads((folder / "config.json").read_text())
    config["base_model_name_or_path"] = str(moved)
    (folder / "config.json").write_text(json.dumps(config))
    remote = run_without_the_package(folder, cwd=tmp_path)
    np.testing.assert_allclose(np.array(remote["logits"]), expected[:, -1].numpy(), rtol=1e-5, atol=1e-5)


def test_wrong_base_or_weights_are_refused(tmp_path):
    model, processor, _ = build(tmp_path, "llama")
    folder = tmp_path / "own"
    model.save_pretrained(folder, llm_weights="base")
    other = save_tiny_llm(tmp_path / "other", "qwen2")
    from transformers import AutoConfig, AutoModelForCausalLM

    bigger = AutoConfig.from_pretrained(other)
    bigger.vocab_size += 3
    AutoModelForCausalLM.from_config(bigger).save_pretrained(tmp_path / "bigger")
    tiny_tokenizer().save_pretrained(tmp_path / "bigger")
    with pytest.raises(ValueError, match="embedding rows"):
        OpenTSLMForCausalLM.from_pretrained(folder, base_model_name_or_path=str(tmp_path / "bigger"))

    state = model.own_state_dict()
    state.pop(next(name for name in state if "lora_A" in name))
    state["model.projector.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        ValueError, match=r"missing \['model\.language_model.*lora_A.*unexpected \['model\.projector\.extra"
    ):
        model.load_own_state_dict(state)

    with pytest.raises(ValueError, match="base_model_name_or_path"):
        OpenTSLMForCausalLM.from_pretrained(tmp_path / "bigger", base_model_name_or_path=other)


def test_models_without_a_recorded_base_cannot_save_only_their_own_weights(tmp_path):
    from tiny import tiny_opentslm

    model = tiny_opentslm(tiny_processor())
    with pytest.raises(ValueError, match="base_model_name_or_path is unknown"):
        model.save_pretrained(tmp_path / "own", llm_weights="base")
    model.config.base_model_name_or_path = "some/llm"
    with pytest.raises(ValueError, match="base_vocab_size is unknown"):
        model.save_pretrained(tmp_path / "own", llm_weights="base")


@pytest.mark.slow  # subprocesses that import transformers
def test_publish_own_weights_and_whole_model_round_trip(tmp_path):
    """Push a whole-model folder as OpenTSLM's own weights and an own-weights folder as the whole model; a process
    that cannot import this project loads both from the fake Hub with the local model's logits."""
    from test_publish import POST, PRE, SERIES, publish_then_load

    model, processor, llm = build(tmp_path, "llama")
    whole, own = tmp_path / "whole", tmp_path / "own"
    model.save_pretrained(whole)
    model.save_pretrained(own, llm_weights="base")
    for folder in (whole, own):
        processor.save_pretrained(folder)
    inputs = processor(text=processor.format_prompt(PRE, POST, num_series=2), time_series=SERIES)
    with torch.no_grad():
        expected = model(**inputs).logits[0].numpy()

    for code in own.glob("*.py"):  # as the package's default model is shipped: publishing adds the code
        code.unlink()
    pushes = [(whole, "me/own", ["--llm_weights", "base"]), (own, "me/whole", ["--llm_weights", "included"])]
    pushes.append((own, "me/own-as-saved", []))
    specs = [{"repo": repo, "revision": None} for repo in ("me/own", "me/whole", "me/own-as-saved")]
    loaded, hub = publish_then_load(tmp_path, pushes, specs)
    own_files, whole_files = hub.files("models", "me/own"), hub.files("models", "me/whole")
    assert "modeling_opentslm.py" in hub.files("models", "me/own-as-saved")
    for repo in ("me/own", "me/whole", "me/own-as-saved"):
        np.testing.assert_allclose(loaded[repo]["logits"], expected, rtol=0, atol=1e-6)
    assert json.loads(own_files["config.json"])["llm_weights"] == "base"
    assert json.loads(whole_files["config.json"])["llm_weights"] == "included"
    assert len(own_files["model.safetensors"]) < len(whole_files["model.safetensors"]) / 2
    assert "the LLM's weights are loaded from" in own_files["README.md"].decode()


def test_own_weights_are_refused_when_the_llm_was_trained(tmp_path):
    from opentslm_hub.publish import save_as

    model, processor, _ = build(tmp_path, "llama", lora=False)
    with torch.no_grad():
        model.model.language_model.layers[0].mlp.up_proj.weight.add_(1e-3)
    model.save_pretrained(tmp_path / "trained")
    processor.save_pretrained(tmp_path / "trained")
    with pytest.raises(ValueError, match=r"LLM's own weights differ .*mlp\.up_proj"):
        save_as(tmp_path / "trained", tmp_path / "out", llm_weights="base")
