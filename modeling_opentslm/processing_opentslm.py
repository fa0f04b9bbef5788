"""Processor for OpenTSLM: text plus time series in, model inputs out.

The feature extractor (`OpenTSLMFeatureExtractor`) checks, normalises and pads the series; this processor owns the
text side: it writes, for every channel, the sentence that states the original mean and std (the model sees the
scale only there) followed by one placeholder token per patch, where the series belongs in the prompt, and tokenises.
Labels for training are the data collator's business (see `recipes/collator.py`), not the processor's.
"""

from __future__ import annotations

from .compat_opentslm import SUPPORTED_TRANSFORMERS  # noqa: F401  first: stops a too-old transformers clearly

# isort: split
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .feature_extraction_opentslm import OpenTSLMFeatureExtractor, _is_number_list

DEFAULT_SERIES_TEXT = "This is the time series, it has mean {mean:.4f} and std {std:.4f}:"
PLACEHOLDER_MODES = ("per_patch", "per_series")
PROMPT_FORMATS = ("native", "original")
# The original OpenTSLM-Flamingo closes every series' text with this token.
ORIGINAL_CHUNK_END = "<|endofchunk|>"
SERIES_STATISTICS = ("time_series_mean", "time_series_std", "time_series_num_channels")


class OpenTSLMProcessor(ProcessorMixin):
    r"""
    Constructs an OpenTSLM processor from a feature extractor and the LLM's tokenizer.

    Args:
        feature_extractor (`OpenTSLMFeatureExtractor`, *optional*): checks, normalises and pads the series (default
            settings when not given).
        tokenizer: the LLM's tokenizer, holding `ts_token` as a special token (see `from_llm`).
        chat_template (`str`, *optional*): overrides the tokenizer's chat template.
        ts_token (`str`, defaults to `"<ts>"`): the placeholder; in a prompt, one marks where one series goes; in the
            model inputs, one stands for one patch.
        series_text (`str`): default sentence introducing a series, formatted with `mean`, `std` and `channel`.
        placeholders (`str`, defaults to `"per_patch"`): how many `ts_token`s stand for one series (one channel) in
            the model inputs: one per patch for OpenTSLM-SP (their embeddings are replaced by the patches'), or one
            per series for OpenTSLM-Flamingo (a marker after which the text may attend to that series).
        use_chat_template (`bool`, defaults to `False`): the prompt format. `True`: `format_prompt` wraps the prompt
            in the chat template and `__call__` adds no special tokens (the template holds them, so a template that
            starts with BOS does not get a second one). `False`: plain text, tokenised with the tokenizer's special
            tokens (BOS where the tokenizer adds one). Saved with the processor, so a trained model is prompted the
            way it was trained.
        prompt_format (`str`, defaults to `"native"`): `"original"` reproduces the sequence layout of the original
            OpenTSLM code, for checkpoints converted from it (their converter sets it): SP tokenises the pre-prompt,
            every series text and the post-prompt on their own, each with the tokenizer's BOS, and puts the series'
            placeholders right after its text; Flamingo writes `pre_prompt` + ` <ts> {series text} <|endofchunk|>`
            per series + ` {post_prompt}` and tokenises it in one piece. No chat template. `__call__` then also
            takes `answer` (appended as the original trains on it, with `labels`). New models use `"native"`.
        original_padding_side (`str`, defaults to `"right"`): SP with `prompt_format="original"`: the padding side of
            the tokenizer the original ran with. The original pads a sample's text pieces to the longest of them and
            then keeps each piece's first `length` positions; with a left-padding tokenizer (Gemma's) that keeps pad
            tokens and drops the end of every shorter piece. Its checkpoints were trained on that sequence, so it is
            reproduced.
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        chat_template: str | None = None,
        ts_token: str = "<ts>",
        series_text: str = DEFAULT_SERIES_TEXT,
        placeholders: str = "per_patch",
        use_chat_template: bool = False,
        prompt_format: str = "native",
        original_padding_side: str = "right",
        **kwargs,
    ):
        if original_padding_side not in ("left", "right"):
            raise ValueError(f"original_padding_side must be 'left' or 'right', got {original_padding_side!r}.")
        self.original_padding_side = original_padding_side
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}.")
        if prompt_format == "original" and use_chat_template:
            raise ValueError("prompt_format='original' uses no chat template; set use_chat_template=False.")
        self.prompt_format = prompt_format
        if placeholders not in PLACEHOLDER_MODES:
            raise ValueError(f"placeholders must be one of {PLACEHOLDER_MODES}, got {placeholders!r}.")
        self.ts_token = ts_token
        self.series_text = series_text
        self.placeholders = placeholders
        self.use_chat_template = use_chat_template
        if feature_extractor is None:
            feature_extractor = OpenTSLMFeatureExtractor()
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)
        if self.tokenizer.pad_token_id is None:
            raise ValueError(
                "The tokenizer has no pad token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token) or build "
                "the processor with OpenTSLMProcessor.from_llm, which does."
            )
        ids = self.tokenizer.encode(ts_token, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(
                f"The placeholder {ts_token!r} is not a single token of this tokenizer (it encodes to {ids}); add it "
                "with tokenizer.add_special_tokens({'additional_special_tokens': [...]}) or use OpenTSLMProcessor."
                "from_llm."
            )
        if use_chat_template and self.tokenizer.chat_template is None and self.chat_template is None:
            raise ValueError(
                "use_chat_template=True but the tokenizer has no chat template; pass chat_template or use plain text "
                "(use_chat_template=False)."
            )

    @classmethod
    def from_llm(
        cls,
        llm_name_or_path: str,
        *,
        ts_token: str = "<ts>",
        placeholders: str = "per_patch",
        use_chat_template: bool = False,
        feature_extractor: OpenTSLMFeatureExtractor | None = None,
        **kwargs,
    ) -> OpenTSLMProcessor:
        """Load the LLM's tokenizer, add the placeholder token and a pad token if missing, pad on the left.

        `revision`, `token` and `cache_dir` go to the tokenizer; other keyword arguments go to the processor.
        """
        tokenizer_kwargs = {k: kwargs.pop(k) for k in ("revision", "token", "cache_dir") if k in kwargs}
        tokenizer = AutoTokenizer.from_pretrained(llm_name_or_path, **tokenizer_kwargs)
        if ts_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [ts_token]}, replace_extra_special_tokens=False)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        return cls(
            feature_extractor=feature_extractor if feature_extractor is not None else OpenTSLMFeatureExtractor(),
            tokenizer=tokenizer,
            ts_token=ts_token,
            placeholders=placeholders,
            use_chat_template=use_chat_template,
            **kwargs,
        )

    @property
    def ts_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(self.ts_token)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", *self.feature_extractor.model_input_names]

    def num_placeholders(self, length: int) -> int:
        """Placeholder tokens that stand for one channel of `length` samples in the model inputs."""
        return 1 if self.placeholders == "per_series" else self.feature_extractor.num_patches(length)

    def format_prompt(
        self, pre_prompt: str, post_prompt: str = "", num_series: int = 1, *, system_prompt: str | None = None
    ) -> str:
        """The prompt with one `ts_token` marker per series between `pre_prompt` and `post_prompt`, wrapped in the
        chat template (with the generation prompt) when the processor's `use_chat_template` is set."""
        if self.prompt_format == "original":
            if system_prompt is not None:
                raise ValueError("system_prompt needs the chat template; the original prompt format has none.")
            # The pieces stay apart: __call__ tokenises them as the original does.
            return pre_prompt.strip() + self.ts_token * num_series + post_prompt.strip()
        parts = [pre_prompt.strip(), *([self.ts_token] * num_series), post_prompt.strip()]
        content = "\n".join(part for part in parts if part)
        if not self.use_chat_template:
            if system_prompt is not None:
                raise ValueError("system_prompt needs the chat template; this processor uses plain text.")
            return content
        messages = [{"role": "user", "content": content}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        template = self.chat_template if isinstance(self.chat_template, str) else None
        return self.tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=True
        )

    def __call__(
        self,
        text: str | Sequence[str],
        time_series: Any = None,
        time_series_text: Any = None,
        *,
        add_special_tokens: bool | None = None,
        padding: bool = True,
        padding_side: str = "left",
        max_length: int | None = None,
        return_tensors: str | None = "pt",
        answer: str | Sequence[str] | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Args:
            text: one prompt or a batch. Each `ts_token` in a prompt marks where one series goes, in order; a prompt
                without markers gets its series appended at the end.
            time_series: per sample, a list of series; each series a 1-D sequence `(length,)` or a 2-D array
                `(channels, length)` (each channel is introduced and encoded on its own). For a single prompt, a
                single list of series (or one array) is accepted.
            time_series_text: per sample, per series, the sentence introducing it: a template formatted with
                `mean`, `std` (the raw channel's) and `channel`, or for a multi-channel series a list with one
                template per channel. Defaults to `self.series_text`.
            add_special_tokens: whether the tokenizer adds its special tokens (BOS...); defaults to
                `not self.use_chat_template` (templated text holds them already).
            padding: pad the text to the longest sample (`False`: lists of different lengths, with
                `return_tensors=None`).
            padding_side: `"left"` (default) or `"right"`.
            max_length: if set, a sample longer than this raises an error; nothing is truncated.
            return_tensors: `"pt"`, `"np"` or `None` (nested lists).
            answer: `prompt_format="original"` only: the answer (one per prompt), appended the way the original
                trains on it; `labels` are then returned too (-100 on the prompt and padding).

        Returns:
            `BatchFeature` with `input_ids`, `attention_mask` and the feature extractor's `time_series` and
            `time_series_mask` (absent when no sample has a series), and `labels` when `answer` is given.
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        if not padding and return_tensors is not None:
            raise ValueError("padding=False gives samples of different lengths; use it with return_tensors=None.")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if not texts:
            raise ValueError("text is empty; give at least one prompt.")
        answers = None
        if answer is not None:
            if self.prompt_format != "original":
                raise ValueError(
                    "answer is taken only with prompt_format='original'; for native training the data collator "
                    "builds the labels (recipes/collator.py)."
                )
            answers = [answer] if isinstance(answer, str) else list(answer)
            if len(answers) != len(texts):
                raise ValueError(f"Got {len(answers)} answers for {len(texts)} prompts; give one per prompt.")
        series_batch = self._batch_series(time_series, len(texts), single)
        texts_batch = self._batch_series_text(time_series_text, series_batch, single)
        features = self.feature_extractor(series_batch, return_statistics=True, return_tensors="np")
        statistics = {name: features.pop(name) for name in SERIES_STATISTICS}
        mask = features.get("time_series_mask")

        if add_special_tokens is None:
            add_special_tokens = not self.use_chat_template
        input_ids, labels, token_masks = [], [], []
        for index, (prompt, sample_texts) in enumerate(zip(texts, texts_batch)):
            row, expansions, intros = 0, [], []
            for k, template in enumerate(sample_texts):
                num_channels = int(statistics["time_series_num_channels"][index, k])
                templates = self._channel_templates(template, num_channels, where=f"sample {index}, series {k}")
                pieces = []
                for channel, channel_template in enumerate(templates):
                    length = int(mask[index, row].sum())
                    intro = channel_template.format(
                        mean=float(statistics["time_series_mean"][index, row]),
                        std=float(statistics["time_series_std"][index, row]),
                        channel=channel,
                    )
                    pieces.append(intro + self.ts_token * self.num_placeholders(length))
                    intros.append((intro, self.num_placeholders(length)))
                    row += 1
                expansions.append("\n".join(pieces))
            if self.prompt_format == "original":
                ids, sample_labels, token_mask = self._original_ids(
                    prompt, intros, len(sample_texts), index, answers, add_special_tokens
                )
                labels.append(sample_labels)
            else:
                expanded = self._insert_series(prompt, expansions, index)
                ids = self.tokenizer(expanded, add_special_tokens=add_special_tokens)["input_ids"]
                token_mask = [1] * len(ids)
            expected = 0 if mask is None else sum(self.num_placeholders(int(m.sum())) for m in mask[index] if m.any())
            found = ids.count(self.ts_token_id)
            if found != expected:
                raise ValueError(
                    f"Sample {index}: the prompt holds {found} placeholder tokens after expansion but its series need "
                    f"{expected}. Remove literal {self.ts_token!r} text that is not a series marker."
                )
            if max_length is not None and len(ids) > max_length:
                raise ValueError(
                    f"Sample {index} has {len(ids)} tokens, more than max_length={max_length}; raise max_length or "
                    "shorten the prompt or series. Nothing is truncated silently."
                )
            input_ids.append(ids)
            token_masks.append(token_mask)

        if padding:
            data = self.pad_text(input_ids, padding_side=padding_side)
            data["attention_mask"] = self.pad_text(token_masks, padding_side=padding_side, pad_id=0)["input_ids"]
            if answers is not None:
                data["labels"] = self.pad_text(labels, padding_side=padding_side, pad_id=-100)["input_ids"]
        else:
            data = {"input_ids": input_ids, "attention_mask": token_masks}
            if answers is not None:
                data["labels"] = labels
        data.update(features)
        if return_tensors is None:
            data = {key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in data.items()}
            return BatchFeature(data)
        return BatchFeature(data, tensor_type=return_tensors)

    def pad_text(
        self, input_ids: list[list[int]], padding_side: str = "left", pad_id: int | None = None
    ) -> dict[str, np.ndarray]:
        """Pad token id lists with `pad_id` (default: the pad token) to the longest; returns `input_ids` and
        `attention_mask`."""
        longest = max(len(ids) for ids in input_ids)
        pad_id = self.tokenizer.pad_token_id if pad_id is None else pad_id
        ids_out = np.full((len(input_ids), longest), pad_id, dtype=np.int64)
        mask_out = np.zeros((len(input_ids), longest), dtype=np.int64)
        for row, ids in enumerate(input_ids):
            span = slice(longest - len(ids), longest) if padding_side == "left" else slice(0, len(ids))
            ids_out[row, span] = ids
            mask_out[row, span] = 1
        return {"input_ids": ids_out, "attention_mask": mask_out}

    # ------------------------------------------------------------------------------------------------------------
    # Helpers of __call__
    # ------------------------------------------------------------------------------------------------------------
    def _batch_series(self, time_series: Any, batch_size: int, single: bool) -> list[list[Any]]:
        if time_series is None:
            return [[] for _ in range(batch_size)]
        if single:
            if isinstance(time_series, (np.ndarray, torch.Tensor)) or _is_number_list(time_series):
                time_series = [time_series]
            time_series = [time_series]
        time_series = list(time_series)
        if len(time_series) != batch_size:
            raise ValueError(
                f"Got series for {len(time_series)} samples but {batch_size} prompts; give one list of series per "
                "prompt (an empty list for a prompt without series)."
            )
        return time_series

    def _batch_series_text(self, time_series_text: Any, series_batch: list[list[Any]], single: bool) -> list[list]:
        if time_series_text is None:
            return [[self.series_text] * len(sample) for sample in series_batch]
        if single:
            time_series_text = [time_series_text]
        time_series_text = [[t] if isinstance(t, str) else list(t) for t in time_series_text]
        if len(time_series_text) != len(series_batch) or any(
            len(t) != len(s) for t, s in zip(time_series_text, series_batch)
        ):
            raise ValueError(
                "time_series_text must give one text (or one list of per-channel texts) per series of each sample; "
                f"got {[len(t) for t in time_series_text]} texts for {[len(s) for s in series_batch]} series."
            )
        return time_series_text

    def _channel_templates(self, template: str | Sequence[str], num_channels: int, where: str) -> list[str]:
        templates = [template] * num_channels if isinstance(template, str) else list(template)
        if len(templates) != num_channels:
            raise ValueError(f"{where}: {len(templates)} texts for {num_channels} channels; give one per channel.")
        return templates

    def _original_ids(
        self,
        prompt: str,
        intros: list[tuple[str, int]],
        num_series: int,
        index: int,
        answers: list[str] | None,
        add_special_tokens: bool,
    ) -> tuple[list[int], list[int] | None, list[int]]:
        """The original OpenTSLM sequence of one sample (see `prompt_format`): token ids, labels (with an answer) and
        the attention mask (0 where the original keeps a pad token, see `original_padding_side`).

        `intros` holds, per channel, its stated text and its number of placeholders."""
        pieces = prompt.split(self.ts_token)
        if len(pieces) - 1 != num_series or any(piece.strip() for piece in pieces[1:-1]):
            raise ValueError(
                f"Sample {index}: the original prompt format needs the text as pre_prompt, one {self.ts_token!r} "
                f"marker per series ({num_series}) with nothing between them, then post_prompt; got "
                f"{len(pieces) - 1} markers. Build it with processor.format_prompt(pre_prompt, post_prompt, "
                "num_series)."
            )
        pre, post = pieces[0], pieces[-1]
        answer = None if answers is None else answers[index]

        def tokenize(piece: str, special: bool = add_special_tokens) -> list[int]:
            return self.tokenizer(piece, add_special_tokens=special)["input_ids"]

        if self.placeholders == "per_patch":  # SP: every piece on its own, each with its BOS
            pieces = self._original_pieces([tokenize(text) for text in (pre, *(intro for intro, _ in intros), post)])
            ids, token_mask = list(pieces[0][0]), list(pieces[0][1])
            for (piece, piece_mask), (_, count) in zip(pieces[1:-1], intros):
                ids += piece + [self.ts_token_id] * count
                token_mask += piece_mask + [1] * count
            ids += pieces[-1][0]
            token_mask += pieces[-1][1]
            if answer is None:
                return ids, None, token_mask
            answer_ids = tokenize(answer)  # with its own BOS, which is a target too
            return ids + answer_ids, [-100] * len(ids) + answer_ids, token_mask + [1] * len(answer_ids)
        # Flamingo: one string, one BOS; the answer follows after a space.
        text = pre + "".join(f" {self.ts_token} {intro} {ORIGINAL_CHUNK_END}" for intro, _ in intros)
        if post:
            text += f" {post}"
        ids = tokenize(text if answer is None else f"{text} {answer}")
        if answer is None:
            return ids, None, [1] * len(ids)
        # As the original: labels from the length of the prompt tokenised without special tokens, so the prompt's
        # last token is a target too.
        start = len(tokenize(text, special=False))
        return ids, [-100] * start + ids[start:], [1] * len(ids)

    def _original_pieces(self, pieces: list[list[int]]) -> list[tuple[list[int], list[int]]]:
        """Each piece, with its attention mask, as the original SP takes it from the padded batch of a sample's
        pieces: its first `len(piece)` positions (the piece itself with right padding; with left padding, masked pad
        tokens and the piece's start)."""
        if self.original_padding_side == "right":
            return [(piece, [1] * len(piece)) for piece in pieces]
        longest = max(len(piece) for piece in pieces)
        kept = []
        for piece in pieces:
            pads = min(longest - len(piece), len(piece))
            kept.append(
                (
                    [self.tokenizer.pad_token_id] * pads + piece[: len(piece) - pads],
                    [0] * pads + [1] * (len(piece) - pads),
                )
            )
        return kept

    def _insert_series(self, prompt: str, expansions: list[str], index: int) -> str:
        num_markers = prompt.count(self.ts_token)
        if num_markers == 0:
            return "\n".join([prompt, *expansions]) if expansions else prompt
        if num_markers != len(expansions):
            raise ValueError(
                f"Sample {index}: the text has {num_markers} {self.ts_token!r} markers but {len(expansions)} series "
                "were given; put one marker per series, or none to append the series at the end."
            )
        pieces = prompt.split(self.ts_token)
        out = [pieces[0]]
        for expansion, piece in zip(expansions, pieces[1:]):
            out.extend([expansion, piece])
        return "".join(out)


OpenTSLMProcessor.register_for_auto_class("AutoProcessor")

__all__ = ["OpenTSLMProcessor"]
