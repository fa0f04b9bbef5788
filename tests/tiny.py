"""Tiny, fully offline building blocks for fast tests: a BPE tokenizer trained in-process and random LLM configs."""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "You are an expert in time series analysis.",
    "This is the time series, it has mean 0.1234 and std 5.6789:",
    "Please generate a detailed caption for this time-series, describing it as accurately as possible.",
    "The series rises steadily, then falls sharply after a peak near the middle. Answer: (a) increasing trend",
    "The following is the accelerometer data on the x-axis, y-axis and z-axis. Answer: walking running sitting",
    "0123456789 -+.,:;()[]{}!?'\" abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@functools.cache
def _tokenizer_json() -> str:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tokenizer.to_str()


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """A 400-token byte-level BPE tokenizer with ChatML-like special tokens (no download)."""
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_text_config(family: str, vocab_size: int) -> dict:
    """A 2-layer, hidden-32 config of a real LLM family, as a dict for `OpenTSLMConfig(text_config=...)`."""
    common = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
    )
    if family == "llama":
        return dict(model_type="llama", tie_word_embeddings=False, **common)
    if family == "qwen2":
        return dict(model_type="qwen2", tie_word_embeddings=True, **common)
    if family == "gemma3":
        return dict(model_type="gemma3_text", head_dim=8, sliding_window=16, tie_word_embeddings=True, **common)
    raise ValueError(f"unknown family {family!r}")


TINY_ENCODER = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, max_patches=64)


def save_tiny_llm(folder, family: str = "llama", seed: int = 0) -> str:
    """Write a tiny random causal LM and the tiny tokenizer to `folder`, as a stand-in for a Hub LLM id."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    config = AutoConfig.for_model(**tiny_text_config(family, len(tokenizer)))
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_toy_records(folder, sizes=(24, 8, 8), seed: int = 0) -> str:
    """A DatasetDict of caption records whose answer depends on the series (rising vs falling), saved to disk."""
    import numpy as np
    from datasets import DatasetDict

    from hub_datasets.common import records_to_dataset
    from hub_datasets.schema import DEFAULT_SERIES_TEXT, make_record

    rng = np.random.default_rng(seed)
    splits = {}
    for split, size in zip(("train", "validation", "test"), sizes):
        records = []
        for i in range(size):
            rising = bool(i % 2)
            length = int(rng.integers(12, 40))
            values = np.linspace(0, 1, length) * (1 if rising else -1) + 0.05 * rng.normal(size=length)
            records.append(
                make_record(
                    id=f"{split}-{i}",
                    task="m4",
                    pre_prompt="You are an expert in time series analysis.",
                    time_series=[(DEFAULT_SERIES_TEXT, values)],
                    post_prompt="Please generate a detailed caption for this time-series.",
                    answer="The series rises steadily" if rising else "The series falls sharply",
                )
            )
        splits[split] = records_to_dataset(records)
    DatasetDict(splits).save_to_disk(folder)
    return str(folder)


PRE = "You are an expert in time series analysis."
POST = "Please generate a detailed caption for this time-series, describing it as accurately as possible."


def tiny_processor(**kwargs):
    """An OpenTSLMProcessor on the tiny tokenizer with the `<ts>` token added (kwargs go to the processor)."""
    from modeling_opentslm import OpenTSLMProcessor

    tokenizer = tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<ts>"]})
    return OpenTSLMProcessor(tokenizer=tokenizer, **kwargs)


def series_batch():
    """Three samples with different numbers of series (one of them 2-channel) and lengths."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [
        [rng.normal(size=37), np.stack([np.sin(np.arange(22) / 3), np.cos(np.arange(22) / 3)])],
        [np.linspace(-3, 8, 9)],
        [rng.normal(size=61) * 50 + 7, rng.normal(size=5)],
    ]


def prompts(processor, batch) -> list[str]:
    return [processor.format_prompt(PRE, POST, num_series=len(sample)) for sample in batch]


def tiny_opentslm(processor, family: str = "llama", seed: int = 0, **config_kwargs):
    """A random OpenTSLMForCausalLM (eval mode) on a tiny config of `family`, sized to `processor`'s tokenizer."""
    import torch

    from modeling_opentslm import OpenTSLMConfig, OpenTSLMForCausalLM

    torch.manual_seed(seed)
    config_kwargs.setdefault("encoder_config", TINY_ENCODER)
    config = OpenTSLMConfig(
        text_config=tiny_text_config(family, len(processor.tokenizer)),
        ts_token_id=processor.ts_token_id,
        **config_kwargs,
    )
    return OpenTSLMForCausalLM(config).eval()


TINY_FLAMINGO = dict(
    architecture="flamingo",
    num_latents=4,
    resampler_num_layers=2,
    resampler_num_heads=2,
    resampler_head_dim=8,
    cross_attention_num_heads=2,
    cross_attention_head_dim=8,
    cross_attention_ff_mult=2,
    cross_attention_every_n_layers=1,
)


def tiny_flamingo(processor, family: str = "llama", seed: int = 0, *, open_gates: bool = True, **overrides):
    """A random OpenTSLM-Flamingo (eval mode) on a tiny config of `family`, for a `placeholders="per_series"`
    processor. Fresh gates are 0 (the bare LLM); `open_gates` opens them so the series matter."""
    import torch

    encoder = {**TINY_ENCODER, "num_hidden_layers": 0}
    model = tiny_opentslm(processor, family, seed, encoder_config=encoder, **{**TINY_FLAMINGO, **overrides})
    if open_gates:
        with torch.no_grad():
            for block in model.cross_attention_layers:
                block.attention_gate.fill_(0.8)
                block.feed_forward_gate.fill_(0.5)
    return model


def assert_batched_equals_unbatched(model, processor, *, atol: float, rtol: float) -> None:
    """Each sample of `series_batch()` gives the same logits alone as in the left-padded batch."""
    import torch

    batch = series_batch()
    texts = prompts(processor, batch)
    with torch.no_grad():
        logits = model(**processor(text=texts, time_series=batch)).logits
        for i, (text, sample) in enumerate(zip(texts, batch)):
            single = model(**processor(text=text, time_series=sample)).logits[0]
            # Left padding: the sample's tokens are the last positions of its row.
            torch.testing.assert_close(logits[i, -single.shape[0] :], single, atol=atol, rtol=rtol)
