"""Evaluation of an OpenTSLM model on records of the shared schema (`hub_datasets.schema`).

Generation is batched with the processor's left padding and decoded exactly as asked (greedy by default): the
`GenerationConfig` is built here from the arguments, so nothing is inherited silently from the model's
`generation_config` (the original OpenTSLM code evaluated Llama-3.2 with its sampling defaults).

Metrics per task family (task = the record's `task` field):

| family | tasks | metrics |
|---|---|---|
| captioning | `m4`, `m4_caption`, `ou_annotation` | BLEU (sacreBLEU, 0–100), ROUGE-1/2/L/Lsum, length ratio |
| multiple choice | `tsqa` | accuracy and macro-F1 on the option letter `(a)`/`(b)`/`(c)` |
| chain of thought | `har_cot`, `sleep_cot`, `ecg_qa_cot` | accuracy and macro-F1 on the text after the last `Answer:` |
| forecasting | `forecast` | MSE and MAE against `metadata["future"]`, and the count of unparsable outputs |

Generated text is read with `opentslm_hub.parsing` (the same functions the MaxEnt-TS rewards use), which avoids the
original OpenTSLM evaluation's defects: the `Answer:` marker is found with or without the space and in any case, an
empty or prefix TSQA prediction is wrong, and "non-rem sleep" without a stage number is not read as "rem sleep". The
gold label comes from the record's `label` field, not from the rationale.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, set_seed

from opentslm_hub.parsing import (
    canonical_sleep_stage,
    has_answer_marker,
    match_label,
    normalize_answer,
    parse_forecast,
    parse_option,
    read_caption_facts,
    read_label,
    strip_special_tokens,
)
from recipes.collator import OpenTSLMDataCollator, encode_prompts, record_inputs
from recipes.metrics import load_metric

CAPTIONING = "captioning"
MULTIPLE_CHOICE = "multiple_choice"
CHAIN_OF_THOUGHT = "chain_of_thought"
FORECASTING = "forecasting"

TASK_FAMILIES: dict[str, str] = {
    "m4": CAPTIONING,
    "m4_caption": CAPTIONING,
    "ou_annotation": CAPTIONING,
    "tsqa": MULTIPLE_CHOICE,
    "har_cot": CHAIN_OF_THOUGHT,
    "sleep_cot": CHAIN_OF_THOUGHT,
    "ecg_qa_cot": CHAIN_OF_THOUGHT,
    "forecast": FORECASTING,
}
TSQA_LABELS = ("(a)", "(b)", "(c)")
OU_ANNOTATION_KEYS = ("trend", "noise", "extrema")


def task_family(task: str) -> str:
    """The metric family of `task`; an unknown task raises a `ValueError` naming the known ones."""
    if task not in TASK_FAMILIES:
        raise ValueError(
            f"Unknown task {task!r}; evaluation knows {sorted(TASK_FAMILIES)}. Set the records' `task` field to one "
            "of them (or pass task=...), or add the task to recipes.evaluation.TASK_FAMILIES."
        )
    return TASK_FAMILIES[task]


# ---------------------------------------------------------------------------------------------------------------------
# Per-sample scoring
# ---------------------------------------------------------------------------------------------------------------------
def _metadata(record: Mapping[str, Any] | None) -> dict[str, Any]:
    if not record:
        return {}
    metadata = record.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError:
            raise ValueError(
                f"record {record.get('id')!r}: metadata is not a JSON object string ({metadata[:60]!r}); build "
                "records with hub_datasets.schema.make_record."
            ) from None
    return dict(metadata)


def _canonical(task: str) -> Callable[[str], str]:
    """How `task` spells its labels: sleep stages are mapped onto the six stage names, other labels normalised."""
    return canonical_sleep_stage if task == "sleep_cot" else normalize_answer


def _gold_label(task: str, record: Mapping[str, Any] | None, reference: str) -> str:
    """The record's `label` when it has one (never re-parsed from the rationale), else parsed from the reference."""
    label = (record or {}).get("label") or ""
    if task == "tsqa":
        return parse_option(label or reference)
    if label:
        return _canonical(task)(label)
    return read_label(reference, canonical=_canonical(task))


def _true_future(record: Mapping[str, Any] | None, reference: str) -> np.ndarray:
    future = _metadata(record).get("future")
    if future is not None:
        return np.asarray(future, dtype=np.float64).reshape(len(future), -1).T
    num_channels = len((record or {}).get("time_series") or []) or 1
    parsed = parse_forecast(reference, num_channels)
    if parsed is None:
        raise ValueError(
            f"record {(record or {}).get('id')!r}: no `future` in its metadata and the reference {reference[:60]!r} "
            "is not a forecast; forecasting records need metadata['future'] (one list of floats per channel)."
        )
    return parsed


def _ou_annotation_valid(text: str) -> bool:
    try:
        annotation = json.loads(strip_special_tokens(text).strip())
    except json.JSONDecodeError:
        return False
    return isinstance(annotation, dict) and all(key in annotation for key in OU_ANNOTATION_KEYS)


def _template_key(metadata: Mapping[str, Any]) -> str:
    for key in ("template_id", "question_type"):
        if metadata.get(key) not in (None, ""):
            return str(metadata[key])
    return "all"


def split_labels(records: Iterable[Mapping[str, Any]]) -> list[str] | None:
    """The classes of a whole split (its records' `label` values), to score a part of it against: the labels present
    in a few records would count every other valid class as out of vocabulary. None when records carry no labels."""
    if hasattr(records, "column_names"):  # a datasets.Dataset: read the one column
        values = records["label"] if "label" in records.column_names else []
    else:
        values = [record.get("label") for record in records]
    return sorted({value for value in values if value}) or None


def _label_set(task: str, gold: Sequence[str], labels: Sequence[str] | None) -> list[str]:
    """The classes of a classification task: `labels` (canonicalised) when given, else the gold labels present,
    plus `(a)`–`(c)` for TSQA."""
    if labels is not None:
        return list(dict.fromkeys(_canonical(task)(label) for label in labels))
    return sorted(set(TSQA_LABELS if task == "tsqa" else ()) | set(gold))


def score_samples(
    task: str,
    predictions: Sequence[str],
    references: Sequence[str],
    records: Sequence[Mapping[str, Any]] | None = None,
    *,
    labels: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Per-sample parsed fields (what `predictions.jsonl` adds to the raw texts): the parsed prediction, and the
    label and correctness (classification), the template (ECG-QA) or the forecast errors (forecasting)."""
    family = task_family(task)
    if len(predictions) != len(references) or (records is not None and len(records) != len(predictions)):
        raise ValueError(
            f"Got {len(predictions)} predictions, {len(references)} references and "
            f"{'no' if records is None else len(records)} records; give one of each per sample."
        )
    records = list(records) if records is not None else [None] * len(predictions)
    metadata = [_metadata(record) for record in records]
    if family == CAPTIONING:
        samples = [{"parsed_prediction": strip_special_tokens(prediction).strip()} for prediction in predictions]
        if task == "ou_annotation":
            for sample, prediction in zip(samples, predictions):
                sample["json_valid"] = _ou_annotation_valid(prediction)
        return samples
    if family == FORECASTING:
        samples = []
        for prediction, reference, record in zip(predictions, references, records):
            future = _true_future(record, reference)
            forecast = parse_forecast(prediction, future.shape[1], future.shape[0])
            sample = {"parsed_prediction": None if forecast is None else forecast.tolist(), "parsed": False}
            if forecast is not None:
                sample["parsed"] = True
                sample["mse"] = float(np.mean((forecast - future) ** 2))
                sample["mae"] = float(np.mean(np.abs(forecast - future)))
            samples.append(sample)
        return samples

    gold = [_gold_label(task, record, reference) for record, reference in zip(records, references)]
    label_set = _label_set(task, gold, labels)
    samples = []
    for prediction, label, meta in zip(predictions, gold, metadata):
        if family == MULTIPLE_CHOICE:
            sample = {"parsed_prediction": parse_option(prediction, meta.get("options")), "label": label}
        elif task == "ecg_qa_cot":
            possible = [normalize_answer(answer) for answer in meta.get("possible_answers") or []]
            sample = {
                "parsed_prediction": read_label(prediction, possible, canonical=_canonical(task)),
                "label": label,
                "template": _template_key(meta),
                "possible_answers": possible,
            }
        else:
            sample = {
                "parsed_prediction": read_label(prediction, label_set, canonical=_canonical(task)),
                "label": label,
            }
        if family == CHAIN_OF_THOUGHT:
            sample["answer_marker"] = has_answer_marker(prediction)
        sample["correct"] = bool(sample["parsed_prediction"]) and sample["parsed_prediction"] == label
        samples.append(sample)
    return samples


# ---------------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------------
def _classification_metrics(predictions: list[str], labels: list[str], label_set: Sequence[str]) -> dict[str, Any]:
    label_set = list(label_set)
    f1 = load_metric("f1")
    per_class = f1.compute(predictions=predictions, references=labels, labels=label_set, average=None)["f1"]
    return {
        "accuracy": load_metric("accuracy").compute(predictions=predictions, references=labels)["accuracy"],
        "macro_f1": f1.compute(predictions=predictions, references=labels, labels=label_set)["f1"],
        "per_class_f1": dict(zip(label_set, per_class)),
        "labels": label_set,
        "num_out_of_vocabulary": sum(prediction not in label_set for prediction in predictions),
    }


def _ecg_metrics(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The original OpenTSLM's stage-5 numbers: per template, accuracy and macro-F1 over its possible answers; overall,
    accuracy, the mean of template accuracies, and macro-F1 unweighted and weighted by template size (the headline
    `macro_f1`). As upstream, a possible answer absent from the split and never predicted scores F1 0, so a perfect
    model can score below 1 on a small split."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in samples:
        groups[sample["template"]].append(sample)
    per_template = {}
    for template, members in sorted(groups.items()):
        labels = [m["label"] for m in members]
        label_set = next((m["possible_answers"] for m in members if m["possible_answers"]), None)
        label_set = label_set or sorted(set(labels))
        predictions = [match_label(m["parsed_prediction"], label_set) for m in members]
        metrics = _classification_metrics(predictions, labels, label_set)
        per_template[template] = {
            "num_samples": len(members),
            "accuracy": metrics["accuracy"],
            "macro_f1": metrics["macro_f1"],
        }
    total = sum(t["num_samples"] for t in per_template.values())
    return {
        "accuracy": sum(t["accuracy"] * t["num_samples"] for t in per_template.values()) / total if total else 0.0,
        "macro_f1": sum(t["macro_f1"] * t["num_samples"] for t in per_template.values()) / total if total else 0.0,
        "macro_f1_unweighted": float(np.mean([t["macro_f1"] for t in per_template.values()])) if total else 0.0,
        "template_accuracy_mean": float(np.mean([t["accuracy"] for t in per_template.values()])) if total else 0.0,
        "num_templates": len(per_template),
        "per_template": per_template,
    }


def _captioning_metrics(predictions: list[str], references: list[str]) -> dict[str, Any]:
    references = [reference.strip() for reference in references]
    bleu = load_metric("bleu").compute(predictions=predictions, references=references)
    rouge = load_metric("rouge").compute(predictions=predictions, references=references)
    predicted_words = sum(len(p.split()) for p in predictions)
    reference_words = sum(len(r.split()) for r in references)
    count = max(len(predictions), 1)
    return {
        "bleu": bleu["bleu"],
        "rouge1": rouge["rouge1"],
        "rouge2": rouge["rouge2"],
        "rougeL": rouge["rougeL"],
        "rougeLsum": rouge["rougeLsum"],
        "length_ratio": predicted_words / reference_words if reference_words else 0.0,
        "mean_prediction_words": predicted_words / count,
        "mean_reference_words": reference_words / count,
        **caption_fact_metrics(predictions, references),
    }


def caption_fact_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Whether captions state their series' trend direction, level and periodicity as the reference does
    (`opentslm_hub.parsing.read_caption_facts` on both). Each rate counts the samples whose reference states that
    fact; a prediction that does not state it counts as wrong. `mean_within_10pct`: the stated mean within 10% of
    the reference's (of its magnitude)."""
    pairs = [(read_caption_facts(p), read_caption_facts(r)) for p, r in zip(predictions, references)]
    trend = [p.trend == r.trend for p, r in pairs if r.trend is not None]
    level = [
        p.mean is not None and abs(p.mean - r.mean) <= 0.1 * max(abs(r.mean), 1e-12)
        for p, r in pairs
        if r.mean is not None
    ]
    periodic = [p.periodic == r.periodic for p, r in pairs if r.periodic is not None]
    period = [
        p.period is not None and abs(p.period - r.period) <= 0.2 * r.period for p, r in pairs if r.period is not None
    ]
    metrics: dict[str, Any] = {}
    for name, hits in (
        ("trend_accuracy", trend),
        ("mean_within_10pct", level),
        ("periodicity_accuracy", periodic),
        ("period_within_20pct", period),
    ):
        metrics[name] = float(np.mean(hits)) if hits else None
        metrics[f"{name}_count"] = len(hits)
    return metrics


def _aggregate(
    task: str, references: Sequence[str], samples: list[dict[str, Any]], labels: Sequence[str] | None
) -> dict[str, Any]:
    family = task_family(task)
    metrics: dict[str, Any] = {"task": task, "num_samples": len(samples)}
    if family == CAPTIONING:
        metrics.update(_captioning_metrics([s["parsed_prediction"] for s in samples], list(references)))
        if task == "ou_annotation":
            metrics["json_valid_rate"] = float(np.mean([s["json_valid"] for s in samples])) if samples else 0.0
    elif family == FORECASTING:
        parsed = [s for s in samples if s["parsed"]]
        metrics["num_unparsable"] = len(samples) - len(parsed)
        metrics["mse"] = float(np.mean([s["mse"] for s in parsed])) if parsed else None
        metrics["mae"] = float(np.mean([s["mae"] for s in parsed])) if parsed else None
    elif task == "ecg_qa_cot":
        metrics.update(_ecg_metrics(samples))
    else:
        gold = [s["label"] for s in samples]
        predictions = [s["parsed_prediction"] for s in samples]
        metrics.update(_classification_metrics(predictions, gold, _label_set(task, gold, labels)))
    if family == CHAIN_OF_THOUGHT:
        metrics["num_missing_answer_marker"] = sum(not s["answer_marker"] for s in samples)
    return metrics


def compute_metrics(
    task: str,
    predictions: Sequence[str],
    references: Sequence[str],
    records: Sequence[Mapping[str, Any]] | None = None,
    *,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of generated texts against references for `task` (see the module docstring for the families).

    `records` (one per prediction) give gold labels (`label`), ECG-QA templates and possible answers, TSQA option
    texts and the true future of forecasts (`metadata["future"]`). `labels` fixes the label set of a
    classification task; by default it is the gold labels present (plus `(a)`–`(c)` for TSQA), as upstream's sleep
    evaluation does.
    """
    samples = score_samples(task, predictions, references, records, labels=labels)
    return _aggregate(task, references, samples, labels)


# ---------------------------------------------------------------------------------------------------------------------
# Generation and loss
# ---------------------------------------------------------------------------------------------------------------------
def build_generation_config(
    processor: Any,
    model: Any = None,
    *,
    max_new_tokens: int,
    do_sample: bool = False,
    num_beams: int = 1,
    top_p: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
) -> GenerationConfig:
    """The decoding to evaluate with, from the arguments only: greedy (or beam search) by default; with `do_sample`,
    pure sampling (temperature 1, no top-p, no top-k) unless `top_p`, `temperature` or `top_k` say otherwise. The
    stop tokens are the model's EOS ids plus the tokenizer's (the one training appends)."""
    if max_new_tokens < 1 or num_beams < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}, num_beams={num_beams}; both must be at least 1.")
    if not do_sample and any(value is not None for value in (top_p, temperature, top_k)):
        raise ValueError(
            f"top_p={top_p}, temperature={temperature}, top_k={top_k} only apply when sampling; pass do_sample=True "
            "or leave them unset for greedy/beam decoding."
        )
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p}; expected a value in (0, 1], e.g. 0.9 for nucleus sampling.")
    if temperature is not None and temperature <= 0.0:
        raise ValueError(f"temperature={temperature}; expected a positive value (use do_sample=False for greedy).")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k={top_k}; expected 0 (off) or a positive number of tokens.")
    tokenizer = getattr(processor, "tokenizer", processor)
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    sampling = {}
    if do_sample:  # transformers' own default would add top_k=50
        sampling = {
            "temperature": 1.0 if temperature is None else temperature,
            "top_p": 1.0 if top_p is None else top_p,
            "top_k": 0 if top_k is None else top_k,
        }
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_beams=num_beams,
        **sampling,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos or None,
    )


@contextlib.contextmanager
def _without_model_decoding_defaults(model: Any) -> Iterator[None]:
    """Hide the model's `generation_config` during `generate`, which fills every field the given config leaves unset
    from it (a checkpoint's `do_sample`, `temperature`, `top_p`, `repetition_penalty`...); transformers' neutral
    defaults apply instead. Only the special-token ids are kept."""
    saved = model.generation_config
    model.generation_config = GenerationConfig(
        bos_token_id=saved.bos_token_id,
        eos_token_id=saved.eos_token_id,
        pad_token_id=saved.pad_token_id,
        decoder_start_token_id=saved.decoder_start_token_id,
    )
    try:
        yield
    finally:
        model.generation_config = saved


def _batches(items: Sequence[Any], batch_size: int) -> Iterable[Sequence[Any]]:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected at least 1.")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


def _as_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    records = list(records)
    if not records:
        raise ValueError("No records to evaluate; give at least one record of the shared schema.")
    return records


@torch.no_grad()
def generate_predictions(
    model: Any,
    processor: Any,
    records: Iterable[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    num_beams: int = 1,
    top_p: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Generate an answer for every record, in left-padded batches, with exactly the decoding given.

    Returns one dict per record: `id`, `prompt` (the text with one `<ts>` marker per series), `reference` (the
    record's answer) and `prediction` (the decoded new tokens, special tokens skipped). `seed` is set before
    generating, so sampled runs repeat.
    """
    records = _as_records(records)
    config = build_generation_config(
        processor,
        model,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_beams=num_beams,
        top_p=top_p,
        temperature=temperature,
        top_k=top_k,
    )
    set_seed(seed)
    was_training = model.training
    model.eval()
    results = []
    try:
        for batch in _batches(records, batch_size):
            inputs = encode_prompts(processor, batch).to(model.device)
            with _without_model_decoding_defaults(model):
                output = model.generate(**inputs, generation_config=config)
            texts = processor.tokenizer.batch_decode(
                output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for record, text in zip(batch, texts):
                results.append(
                    {
                        "id": record.get("id"),
                        "prompt": record_inputs(record, processor)["text"],
                        "reference": record.get("answer") or "",
                        "prediction": text,
                    }
                )
    finally:
        model.train(was_training)
    return results


@torch.no_grad()
def test_loss(
    model: Any, processor: Any, records: Iterable[Mapping[str, Any]], batch_size: int = 8
) -> dict[str, float]:
    """Mean cross-entropy per answer token over all records (answer and EOS tokens only, as in training) and its
    perplexity `exp(loss)`. Tokens are averaged over the whole set, not per batch."""
    records = _as_records(records)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in _batches(records, batch_size):
            inputs = OpenTSLMDataCollator(processor)(batch).to(model.device)
            labels = inputs.pop("labels")
            logits = model(**inputs).logits[:, :-1].float()
            targets = labels[:, 1:]
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
            ).item()
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf, "num_tokens": count}


test_loss.__test__ = False  # not a pytest test, whatever imports it


def evaluate_records(
    model: Any,
    processor: Any,
    records: Iterable[Mapping[str, Any]],
    task: str | None = None,
    output_dir: str | Path | None = None,
    *,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    num_beams: int = 1,
    top_p: float | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    seed: int = 0,
    with_loss: bool = True,
    labels: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Generate, score and (with `output_dir`) write `metrics.json` and `predictions.jsonl`; return the metrics.

    `task` defaults to the records' common `task` field. `metrics.json` holds the task metrics, the decoding used
    and, with `with_loss`, `test_loss` and `test_perplexity` over the answer tokens. Each line of
    `predictions.jsonl` has `id`, `prompt`, `reference`, `prediction` and the parsed fields of `score_samples`.
    """
    records = _as_records(records)
    if task is None:
        tasks = sorted({record.get("task") for record in records})
        if len(tasks) != 1:
            raise ValueError(f"The records mix the tasks {tasks}; evaluate one task at a time or pass task=....")
        task = tasks[0]
    task_family(task)
    generated = generate_predictions(
        model,
        processor,
        records,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_beams=num_beams,
        top_p=top_p,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
    )
    predictions = [row["prediction"] for row in generated]
    references = [row["reference"] for row in generated]
    samples = score_samples(task, predictions, references, records, labels=labels)
    metrics = _aggregate(task, references, samples, labels)
    metrics["decoding"] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": do_sample,
        "num_beams": num_beams,
        "top_p": top_p,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "batch_size": batch_size,
    }
    if with_loss:
        loss = test_loss(model, processor, records, batch_size=batch_size)
        metrics["test_loss"] = loss["loss"]
        metrics["test_perplexity"] = loss["perplexity"]
    if output_dir is not None:
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
        with open(output_dir / "predictions.jsonl", "w", encoding="utf-8") as handle:
            for row, sample in zip(generated, samples):
                handle.write(json.dumps({**row, **sample}, ensure_ascii=False) + "\n")
    return metrics


__all__ = [
    "TASK_FAMILIES",
    "build_generation_config",
    "compute_metrics",
    "evaluate_records",
    "generate_predictions",
    "load_metric",
    "score_samples",
    "task_family",
    "test_loss",
]
