"""Publish a saved OpenTSLM model folder to the Hugging Face Hub with a model card.

    python -m opentslm_hub.publish outputs/smollm2-135m/stage2/best USER/opentslm-smollm2-stage2
    python -m opentslm_hub.publish FOLDER USER/REPO --revision stage2 --private --merge_lora

The folder is what ``save_pretrained`` wrote (safetensors, ``config.json`` with ``auto_map``, the model code, the
processor and the generation config; the recipes' ``best/`` folders). The card (``README.md``) is written from
``config.json``, the recipe's ``stage_info.json`` (and those of earlier stages, for the curriculum lineage) and the
metrics the recipe saved next to the folder (``metrics.json``, ``stage_metrics.json``). LoRA adapters are uploaded
as they are in the checkpoint (restored from ``config.lora``, needs ``peft``) or, with ``--merge_lora``, merged into
the LLM's weights; the card says which. ``--revision`` pushes to that branch (created from main if needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modeling_opentslm.compat_opentslm import SUPPORTED_TRANSFORMERS, TRANSFORMERS_FLOOR, TRANSFORMERS_NEWEST_TESTED

# Every model card the project writes (this one, and TRL's card of the recipes' checkpoints) states it.
COMPATIBILITY_CARD_SECTION = (
    "## Compatibility\n\n"
    f"This model loads with `trust_remote_code=True`. Its code runs under transformers {TRANSFORMERS_FLOOR} or newer, "
    f"tested from {TRANSFORMERS_FLOOR} to {TRANSFORMERS_NEWEST_TESTED} (`{SUPPORTED_TRANSFORMERS}`); under an older "
    f'transformers, loading stops with an error that names this range: `pip install -U "transformers>={TRANSFORMERS_FLOOR}"`.\n'
)

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
STAGE_INFO_FILE = "stage_info.json"
METRICS_FILES = ("metrics.json", "stage_metrics.json")
IGNORE_FILES = ("training_args.bin", "*.pt", "checkpoint-*", "runs", CARD_FILE)  # trainer state, an old card
STAGE_TASKS = {
    "stage1": "multiple-choice time-series QA",
    "stage2": "time-series captioning",
    "stage3": "human activity recognition with chain of thought",
    "stage4": "sleep staging with chain of thought",
    "stage5": "ECG question answering with chain of thought",
}
LICENSES = {"smollm": "apache-2.0", "qwen": "apache-2.0", "llama-3.2": "llama3.2", "gemma": "gemma"}


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lineage(folder: Path) -> list[dict[str, Any]]:
    """The stage_info of this folder and of each stage it started from (``init_from``), earliest first."""
    chain, seen = [], set()
    current: Path | None = folder
    while current is not None and current.resolve() not in seen:
        seen.add(current.resolve())
        info = _read_json(current / STAGE_INFO_FILE)
        if info is None:
            if chain:
                logger.warning(
                    "%s started from %s, which has no %s (not a recipe output, or moved or renamed since): "
                    "the lineage starts at %s.",
                    chain[-1].get("stage", "a stage"),
                    current,
                    STAGE_INFO_FILE,
                    chain[-1].get("stage", "that stage"),
                )
            break
        chain.append(info)
        current = _resolve_init_from(current, info)
    return chain[::-1]


def _resolve_init_from(folder: Path, info: dict[str, Any]) -> Path | None:
    """The folder a stage started from. Recipes record `init_from` and `best_model` as given, often relative to
    where the curriculum ran: when this folder's `best_model` is such a relative path, `init_from` is read from that
    same run root, so the lineage is found from any working directory."""
    if not info.get("init_from"):
        return None
    start = Path(info["init_from"])
    if start.is_absolute():
        return start
    best = Path(str(info.get("best_model") or ""))
    here = folder.resolve()
    if best.parts and not best.is_absolute() and here.parts[-len(best.parts) :] == best.parts:
        return Path(*here.parts[: -len(best.parts)]) / start
    return start


def find_metrics(folder: Path) -> tuple[str, dict[str, Any]] | None:
    """The metrics the recipe saved: in the folder, or in its parent (the stage's ``output_dir``)."""
    for place in (folder, folder.parent):
        for name in METRICS_FILES:
            data = _read_json(place / name)
            if data:
                return name, data
    return None


def _numbers(data: Mapping[str, Any], prefix: str = "") -> list[tuple[str, float]]:
    rows = []
    for key, value in data.items():
        if key in ("train", "best_checkpoint", "stage", "completed"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            rows.extend(_numbers(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            rows.append((name, float(value)))
    return rows


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/", "~"))


def base_llm(config: Mapping[str, Any], chain: list[dict[str, Any]]) -> str:
    if config.get("base_model_name_or_path"):
        return config["base_model_name_or_path"]
    for info in chain:
        if info.get("model_name_or_path"):
            return info["model_name_or_path"]
    return (config.get("text_config") or {}).get("_name_or_path") or "unknown"


def guess_license(llm: str) -> str:
    lowered = llm.lower()
    return next((value for key, value in LICENSES.items() if key in lowered), "other")


def render_card(
    folder: str | Path,
    repo_id: str,
    *,
    merged_lora: bool = False,
    license: str | None = None,
    base_model: str | None = None,
    llm_weights: str | None = None,
) -> str:
    """The model card (YAML metadata + Markdown) for ``folder`` as it will be published to ``repo_id``
    (``llm_weights``: the layout it is published in, default the folder's)."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    if config is None:
        raise ValueError(f"{folder} has no readable config.json; is it a saved OpenTSLM model?")
    chain = lineage(folder)
    llm = base_model or base_llm(config, chain)
    variant = config.get("architecture", "sp")
    variant_name = {"sp": "OpenTSLM-SP (soft prompt)", "flamingo": "OpenTSLM-Flamingo"}.get(variant, variant)
    stage = chain[-1]["stage"] if chain else None
    datasets = list(
        dict.fromkeys(
            name for info in chain for name in (info.get("dataset_name"), *(info.get("replayed") or {})) if name
        )
    )
    lora = config.get("lora")
    license = license or guess_license(llm)
    llm_weights = llm_weights or config.get("llm_weights", "included")

    meta: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "license": license,
        "tags": ["time-series", "opentslm", f"opentslm-{variant}", "custom_code", *([stage] if stage else [])],
    }
    if _is_hub_id(llm):
        meta["base_model"] = llm
    hub_datasets = [name for name in datasets if _is_hub_id(name)]
    if hub_datasets:
        meta["datasets"] = hub_datasets

    if lora is None:
        lora_text = "none (the LLM is frozen or fully fine-tuned, see the lineage)"
    elif merged_lora:
        lora_text = f"merged into the LLM's weights (was r {lora['r']}, alpha {lora['lora_alpha']}); no `peft` needed"
    else:
        lora_text = (
            f"adapters kept in the checkpoint (r {lora['r']}, alpha {lora['lora_alpha']}, on "
            f"{', '.join(lora['target_modules'])}); restored from `config.lora` at load time, needs `peft`"
        )
    lines = [
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A time-series language model: {variant_name} on **{llm}**, trained with the OpenTSLM curriculum "
        "(opentslm-hub). A time-series encoder turns each series into inputs for the LLM; the model answers in text.",
        "",
        "| | |",
        "|---|---|",
        f"| base LLM | {llm} |",
        f"| variant | `{variant}`: {variant_name} |",
        f"| stage | {stage or 'unknown'}" + (f" ({STAGE_TASKS[stage]})" if stage in STAGE_TASKS else "") + " |",
        f"| LoRA | {lora_text} |",
        "| weights | "
        + (
            "OpenTSLM's own only (encoder, projector or resampler and cross-attention, LoRA adapters, the added "
            f"tokens' embedding rows); the LLM's weights are loaded from `{llm}` at load time"
            if llm_weights == "base"
            else "the whole model, LLM included"
        )
        + " |",
        f"| encoder | patch size {config.get('encoder_config', {}).get('patch_size', 4)}, at most "
        f"{config.get('encoder_config', {}).get('max_patches', 1024) * config.get('encoder_config', {}).get('patch_size', 4)}"
        " samples per series |",
        "",
        "## Curriculum lineage",
        "",
    ]
    if chain:
        for number, info in enumerate(chain, start=1):
            task = STAGE_TASKS.get(info.get("stage"), "")
            start = info.get("init_from") or info.get("model_name_or_path") or "?"
            replay = "".join(
                f" plus {count} records replayed from `{name}`" for name, count in (info.get("replayed") or {}).items()
            )
            lines.append(
                f"{number}. **{info.get('stage')}** ({task}) on `{info.get('dataset_name')}`{replay}, starting from "
                f"`{start}`"
            )
    else:
        lines.append("No `stage_info.json` in the folder: the training history is unknown.")
    lines += ["", "## Data sets", ""]
    lines += [f"- `{name}`" for name in datasets] or ["Unknown (no `stage_info.json`)."]
    lines += ["", "## Metrics", ""]
    found = find_metrics(folder)
    rows = _numbers(found[1]) if found else []
    if rows:
        lines += [f"On the test split, from `{found[0]}`:", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for name, value in rows]
    else:
        lines.append("No metrics were saved with this model.")
    lines += [
        "",
        "## How to load",
        "",
        "The model code travels with the checkpoint, so only `transformers` (and `peft` for LoRA adapters) is needed"
        + (
            f"; the LLM comes from `{llm}` (pass `base_model_name_or_path=` to `from_pretrained` to load it from "
            "elsewhere, e.g. a local copy):"
            if llm_weights == "base"
            else ":"
        ),
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoProcessor",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{repo_id}", trust_remote_code=True)',
        f'processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)',
        "prompt = processor.format_prompt(",
        '    "You are an expert in time series analysis.",',
        '    "Please generate a detailed caption for this time-series, describing it as accurately as possible.",',
        ")",
        'inputs = processor(text=prompt, time_series=[series], return_tensors="pt")  # series: a 1-D array',
        "out = model.generate(**inputs, max_new_tokens=64)",
        'print(processor.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))',
        "```",
        "",
        COMPATIBILITY_CARD_SECTION,
        "## Limitations",
        "",
        "- Trained on the curriculum's data sets only; answers about other kinds of series are unreliable, and the "
        "model can state features the series does not have. Check its answers against the data.",
        "- Series are z-normalised per channel; the original scale reaches the model only through the text that "
        "states each channel's mean and std.",
        "- Not a medical device: ECG and sleep answers are research outputs, not diagnoses.",
        "- Loading runs the model code in this repository (`trust_remote_code=True`); read it first.",
        "",
        "## License",
        "",
        f"`{license}`, following the base LLM ({llm}); the data sets keep their own licenses.",
        "",
    ]
    return _front_matter(meta) + "\n".join(lines)


def _front_matter(meta: Mapping[str, Any]) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True) + "---\n\n"


def save_as(
    folder: Path,
    target: Path,
    *,
    merge_lora: bool = False,
    llm_weights: str = "included",
    base_model: str | None = None,
) -> None:
    """Save ``folder``'s model (with its processor and stage info) to ``target``: LoRA adapters merged into the
    LLM (``config.lora`` removed) if ``merge_lora``; OpenTSLM's own weights only if ``llm_weights="base"``, after
    checking that the LLM still is its base model (``base_model``: a local copy of it, default the one the config
    names), else the whole model."""
    import torch

    from modeling_opentslm import OpenTSLMForCausalLM, OpenTSLMProcessor

    config = _read_json(folder / "config.json") or {}
    base = {"base_model_name_or_path": base_model} if base_model and config.get("llm_weights") == "base" else {}
    model = OpenTSLMForCausalLM.from_pretrained(folder, dtype=torch.float32, **base)
    if merge_lora:
        if model.config.lora is None:
            raise ValueError(f"{folder} has no LoRA adapters to merge.")
        from peft.tuners.lora import LoraLayer

        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLayer):
                module.merge()
                parent_name, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent_name), child, module.get_base_layer())
        model.config.lora = None
    if llm_weights == "base":
        if model.config.base_model_name_or_path is None:
            raise ValueError(f"{folder}'s config names no base_model_name_or_path; publish the whole model instead.")
        assert_llm_is_base(model, base_model)
    model.save_pretrained(target, llm_weights=llm_weights)
    OpenTSLMProcessor.from_pretrained(folder).save_pretrained(target)
    for extra in (STAGE_INFO_FILE,):
        if (folder / extra).is_file():
            shutil.copy2(folder / extra, target / extra)


def assert_llm_is_base(model, base_model: str | None = None, atol: float = 0.0) -> None:
    """Raise unless the LLM inside ``model`` still has its base model's weights (LoRA adapters and the added
    tokens' rows aside): a checkpoint of OpenTSLM's own weights would silently drop any other change.
    ``base_model``: where to load the base from (default: ``config.base_model_name_or_path``)."""
    import torch
    from transformers import AutoModelForCausalLM

    base_model = base_model or model.config.base_model_name_or_path
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    ours = {
        name.replace(".base_layer", ""): tensor for name, tensor in model.model.language_model.state_dict().items()
    }
    rows = model.config.base_vocab_size
    changed = []
    for name, tensor in base.get_decoder().state_dict().items():
        mine = ours.get(name)
        if mine is None:
            changed.append(f"{name} (missing)")
            continue
        if mine.dim() == 2 and mine.shape[0] > tensor.shape[0] and tensor.shape[0] == rows:
            mine = mine[:rows]
        if mine.shape != tensor.shape or not torch.allclose(mine.float(), tensor.float(), atol=atol, rtol=0):
            changed.append(name)
    if not model.config.tie_word_embeddings:
        head = model.get_output_embeddings().weight[:rows].float()
        if not torch.allclose(head, base.get_output_embeddings().weight.float(), atol=atol, rtol=0):
            changed.append("lm_head.weight")
    if changed:
        raise ValueError(
            f"The LLM's own weights differ from {base_model} ({len(changed)} tensors, e.g. "
            f"{changed[:3]}): publish the whole model (llm_weights='included') instead of OpenTSLM's own weights."
        )


def _add_model_code(upload: Path) -> None:
    """A folder saved without the model code (e.g. the package's default model) gets this package's copy, so that
    the repo loads with `trust_remote_code=True`."""
    import modeling_opentslm

    package = Path(modeling_opentslm.__file__).parent
    for source in package.glob("*_opentslm.py"):
        if not (upload / source.name).exists():
            shutil.copy2(source, upload / source.name)


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    merge_lora: bool = False,
    llm_weights: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload ``folder`` with its model card to ``repo_id`` (created if needed; ``revision``: a branch, created
    from main if needed). ``llm_weights="base"`` uploads OpenTSLM's own weights only (the LLM loads from the base
    model the config names), ``"included"`` the whole model; default: as the folder is. Returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json; pass a folder written by save_pretrained.")
    saved_as = (_read_json(folder / "config.json") or {}).get("llm_weights", "included")
    llm_weights = llm_weights or saved_as
    if llm_weights not in ("included", "base"):
        raise ValueError(f'llm_weights must be "included" or "base", got {llm_weights!r}.')
    if merge_lora and llm_weights == "base":
        raise ValueError("Merging LoRA changes the LLM's weights: merge_lora needs llm_weights='included'.")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private or None, exist_ok=True)  # None: the namespace default
    repo_id = repo_url.repo_id
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory() as staging:
        upload = Path(staging) / "upload"
        if merge_lora or llm_weights != saved_as:
            save_as(folder, upload, merge_lora=merge_lora, llm_weights=llm_weights, base_model=base_model)
        else:  # hard links where possible: no copy of the weights
            shutil.copytree(folder, upload, ignore=shutil.ignore_patterns(*IGNORE_FILES), copy_function=_link_or_copy)
        _add_model_code(upload)
        card = render_card(folder, repo_id, merged_lora=merge_lora, license=license, llm_weights=llm_weights)
        (upload / CARD_FILE).write_text(card)
        info = api.upload_folder(
            folder_path=upload,
            repo_id=repo_id,
            revision=revision,
            commit_message=commit_message
            or f"Upload {folder} ({'LoRA merged' if merge_lora else 'own weights' if llm_weights == 'base' else 'as saved'})",
        )
    return str(getattr(info, "commit_url", info))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a saved OpenTSLM model folder (e.g. outputs/<llm>/stage2/best)")
    parser.add_argument("repo_id", help="the Hub repo, USER/NAME or ORG/NAME")
    parser.add_argument("--revision", help="push to this branch (created from main if needed)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--merge_lora", action="store_true", help="merge LoRA adapters into the LLM before pushing")
    parser.add_argument(
        "--llm_weights",
        choices=("included", "base"),
        help="'base': upload only OpenTSLM's own weights (a few MB; the LLM loads from the base model the config "
        "names), 'included': the whole model (default: as the folder is saved)",
    )
    parser.add_argument(
        "--base_model",
        help="a local copy of the base LLM, to check and load against (default: the one the config names)",
    )
    parser.add_argument("--license", help="license id for the card (default: the base LLM's)")
    parser.add_argument("--card_only", action="store_true", help="print the model card and push nothing")
    args = parser.parse_args(argv)
    if args.card_only:
        print(
            render_card(
                args.folder,
                args.repo_id,
                merged_lora=args.merge_lora,
                license=args.license,
                llm_weights=args.llm_weights,
            )
        )
        return 0
    url = push_to_hub(
        args.folder,
        args.repo_id,
        revision=args.revision,
        private=args.private,
        merge_lora=args.merge_lora,
        llm_weights=args.llm_weights,
        base_model=args.base_model,
        license=args.license,
    )
    print(
        f"Pushed {args.folder} to {args.repo_id}"
        + (f" (revision {args.revision})" if args.revision else "")
        + f": {url}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
