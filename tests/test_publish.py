"""Publishing round trip against the local fake Hub: ``python -m opentslm_hub.publish`` pushes tiny SP and Flamingo
folders (LoRA as adapters at a revision, LoRA merged, no LoRA), then a process that cannot import this project's
packages loads each from the "Hub" with ``trust_remote_code`` and gets the local model's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_hub import FakeHub
from test_flamingo import make_processor as make_flamingo_processor
from test_modeling import POST, PRE
from test_modeling import make_model as make_sp
from test_modeling import make_processor as make_sp_processor
from tiny import tiny_flamingo

from opentslm_hub.publish import COMPATIBILITY_CARD_SECTION, lineage, render_card

pytestmark = pytest.mark.slow  # subprocesses that import transformers, and a training run
ROOT = Path(__file__).resolve().parents[1]
SERIES = [np.sin(np.arange(40) / 4) * 3 + 10, np.linspace(-1, 1, 24)]

LOADER = """
import importlib.abc, json, sys
import numpy as np, torch

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"modeling_opentslm", "opentslm_hub", "hub_datasets", "recipes", "maxent_ts"}:
            raise ImportError("blocked: " + name)

sys.meta_path.insert(0, Block())
from transformers import AutoModelForCausalLM, AutoProcessor

series = [np.asarray(s) for s in json.loads(sys.argv[1])]
out = {}
for spec in json.loads(sys.argv[2]):
    kwargs = dict(trust_remote_code=True, revision=spec["revision"])
    model = AutoModelForCausalLM.from_pretrained(spec["repo"], **kwargs).eval()
    processor = AutoProcessor.from_pretrained(spec["repo"], **kwargs)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    inputs = processor(text=processor.format_prompt(PRE, POST, num_series=2), time_series=series)
    with torch.no_grad():
        out[spec["repo"]] = {"logits": model(**inputs).logits[0].tolist(), "lora": model.config.lora}
assert not any(name.split(".")[0] == "modeling_opentslm" for name in sys.modules)
print("RESULT " + json.dumps(out))
"""


def save(model, processor, folder: Path, stage: str, init_from: str | None, metrics: dict) -> Path:
    best = folder / stage / "best"
    model.save_pretrained(best)
    processor.save_pretrained(best)
    info = {
        "stage": stage,
        "dataset_name": f"offline:{stage}_set",
        "init_from": init_from,
        "model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct" if init_from is None else None,
        "architecture": model.config.architecture,
        "lora": model.config.lora,
    }
    (best / "stage_info.json").write_text(json.dumps(info))
    (best.parent / "stage_metrics.json").write_text(json.dumps(metrics))
    return best


def local_logits(model, processor) -> np.ndarray:
    inputs = processor(text=processor.format_prompt(PRE, POST, num_series=2), time_series=SERIES)
    with torch.no_grad():
        return model(**inputs).logits[0].numpy()


def publish_then_load(tmp_path, pushes: list[tuple], specs: list[dict]) -> tuple[dict, FakeHub]:
    """Run `python -m opentslm_hub.publish` for each (folder, repo, extra args) against a fake Hub, then load each
    spec's repo in a process that cannot import this project; returns its logits per repo and the Hub's state."""
    with FakeHub() as hub:
        env = hub.env(os.environ)
        env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT))
        script = "import sys\nfrom opentslm_hub.publish import main\nfor args in sys.argv[1:]:\n"
        script += "    assert main(args.split('\\t')) == 0\n"
        argv = ["\t".join([str(folder), repo, *extra]) for folder, repo, extra in pushes]
        result = subprocess.run(
            [sys.executable, "-c", script, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-4000:]

        # the loader: no PYTHONPATH, run outside the checkout, the project's packages blocked
        env.pop("PYTHONPATH")
        env["HF_HOME"] = str(tmp_path / "hf-loader")
        loader = textwrap.dedent(LOADER).replace("PRE, POST", f"{PRE!r}, {POST!r}")
        result = subprocess.run(
            [sys.executable, "-c", loader, json.dumps([s.tolist() for s in SERIES]), json.dumps(specs)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    return loaded, hub


def test_publish_round_trip(tmp_path):
    sp_processor = make_sp_processor()
    sp = make_sp("llama", sp_processor)
    stage1 = save(sp, sp_processor, tmp_path / "run", "stage1", None, {"test": {"test_loss": 1.5}})
    sp.add_lora(r=4, lora_alpha=8)
    torch.manual_seed(1)
    with torch.no_grad():  # fresh lora_B is 0 (a no-op); make the adapters matter
        for name, parameter in sp.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.2)
    metrics = {"test": {"test_loss": 1.25, "test_perplexity": 3.49}, "test_generation": {"accuracy": 0.75}}
    stage3 = save(sp, sp_processor, tmp_path / "run", "stage3", str(stage1), metrics)
    fl_processor = make_flamingo_processor()
    flamingo = tiny_flamingo(fl_processor, "llama")
    stage2 = save(flamingo, fl_processor, tmp_path / "flamingo", "stage2", None, {"test": {"test_loss": 2.0}})

    card = render_card(stage3, "me/sp-stage3")
    for text in (
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "license: apache-2.0",
        "base_model: HuggingFaceTB/SmolLM2-135M-Instruct",
        "| variant | `sp`",
        "| stage | stage3 (human activity recognition with chain of thought) |",
        "adapters kept in the checkpoint (r 4, alpha 8",
        "1. **stage1** (multiple-choice time-series QA) on `offline:stage1_set`",
        "2. **stage3**",
        "| test_generation.accuracy | 0.75 |",
        "| test.test_perplexity | 3.49 |",
        'AutoModelForCausalLM.from_pretrained("me/sp-stage3", trust_remote_code=True)',
        "## Limitations",
        "## License",
    ):
        assert text in card, text
    assert "merged into the LLM's weights" in render_card(stage3, "me/x", merged_lora=True)
    assert "`flamingo`: OpenTSLM-Flamingo" in render_card(stage2, "me/fl")
    assert COMPATIBILITY_CARD_SECTION in card  # the transformers range the model's code runs under

    pushes = [
        (stage3, "me/sp-stage3", ["--revision", "stage3", "--private"]),
        (stage3, "me/sp-merged", ["--merge_lora"]),
        (stage2, "me/flamingo", []),
    ]
    specs = [{"repo": "me/sp-stage3", "revision": "stage3"}, {"repo": "me/sp-merged", "revision": None}]
    specs.append({"repo": "me/flamingo", "revision": None})
    loaded, hub = publish_then_load(tmp_path, pushes, specs)
    stored = hub.files("models", "me/sp-stage3", "stage3")
    main_files = hub.files("models", "me/sp-stage3", "main")
    private = hub.repos[("models", "me/sp-stage3")].private
    merged_card = hub.files("models", "me/sp-merged")["README.md"].decode()

    np.testing.assert_allclose(loaded["me/sp-stage3"]["logits"], local_logits(sp, sp_processor), atol=1e-5)
    np.testing.assert_allclose(loaded["me/sp-merged"]["logits"], local_logits(sp, sp_processor), atol=1e-5)
    np.testing.assert_allclose(loaded["me/flamingo"]["logits"], local_logits(flamingo, fl_processor), atol=1e-5)
    assert loaded["me/sp-stage3"]["lora"]["r"] == 4 and loaded["me/sp-merged"]["lora"] is None

    # the branch holds the checkpoint, main only the repo's start; the layout a Hub user expects
    assert "model.safetensors" in stored and "model.safetensors" not in main_files and private
    for name in ("config.json", "modeling_opentslm.py", "generation_config.json", "processor_config.json"):
        assert name in stored, sorted(stored)
    assert json.loads(stored["config.json"])["auto_map"]["AutoModelForCausalLM"].endswith("OpenTSLMForCausalLM")
    assert stored["README.md"].decode() == render_card(stage3, "me/sp-stage3")
    assert "merged into the LLM's weights" in merged_card


def test_recipe_push_to_hub(tmp_path):
    """`--push_to_hub` on a stage script publishes best/ with its card, at `--hub_revision`."""
    from test_recipes import write_config
    from tiny import save_tiny_llm, save_toy_records

    assets = {"llm": save_tiny_llm(tmp_path / "llm"), "data": save_toy_records(tmp_path / "data", sizes=(8, 4, 4))}
    config = write_config(tmp_path / "run", assets, num_train_epochs=1, report_to=[])
    args = ["--push_to_hub", "true", "--hub_model_id", "me/recipe", "--hub_revision", "stage2"]
    with FakeHub() as hub:
        env = hub.env(os.environ)
        env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        result = subprocess.run(
            [sys.executable, "recipes/stage2.py", "--config", str(config), *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        stored = hub.files("models", "me/recipe", "stage2")
    best = tmp_path / "run" / "out" / "best"
    assert stored["model.safetensors"] == (best / "model.safetensors").read_bytes()
    assert "training_args.bin" not in stored and "stage_info.json" in stored
    card = stored["README.md"].decode()
    assert card == render_card(best, "me/recipe")
    assert "| stage | stage2 (time-series captioning) |" in card and "best_eval_loss" in card


def test_lineage_follows_paths_relative_to_where_the_curriculum_ran(tmp_path, monkeypatch):
    run = tmp_path / "project"
    for stage, init_from in (("stage1", None), ("stage2", "outputs/demo/stage1/best")):
        best = run / "outputs" / "demo" / stage / "best"
        best.mkdir(parents=True)
        info = {"stage": stage, "init_from": init_from, "best_model": f"outputs/demo/{stage}/best"}
        (best / "stage_info.json").write_text(json.dumps(info))
    monkeypatch.chdir(tmp_path)  # not the run's root
    assert [info["stage"] for info in lineage(run / "outputs" / "demo" / "stage2" / "best")] == ["stage1", "stage2"]


def test_lineage_warns_when_an_earlier_stage_is_not_found(tmp_path, caplog):
    best = tmp_path / "moved" / "stage2" / "best"
    best.mkdir(parents=True)
    info = {"stage": "stage2", "init_from": "outputs/demo/stage1/best", "best_model": "outputs/demo/stage2/best"}
    (best / "stage_info.json").write_text(json.dumps(info))
    with caplog.at_level("WARNING", logger="opentslm_hub.publish"):
        assert [info["stage"] for info in lineage(best)] == ["stage2"]
    assert "stage2 started from outputs/demo/stage1/best, which has no stage_info.json" in caplog.text
