"""MaxEnt-TS as a transformers custom generation strategy: the search config, the loadable folder (from disk and from
a local fake Hub) giving what a direct call gives, and the benchmark running on the defaults.

The Hub client runs in a subprocess because ``HF_ENDPOINT`` / ``HF_HUB_DISABLE_XET`` must be set before
``huggingface_hub`` is imported.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fake_hub import FakeHub
from tiny import tiny_text_config
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import maxent_ts  # noqa: E402
from maxent_ts import CUSTOM_GENERATE_FOLDER, MaxEntTSConfig, maxent_ts_generate  # noqa: E402
from maxent_ts.hub import NOT_UPLOADED, UPLOADED  # noqa: E402

LOADABLE = Path(CUSTOM_GENERATE_FOLDER) / "custom_generate"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(vocab_size: int = 32, seed: int = 6) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        **tiny_text_config("llama", vocab_size), eos_token_id=vocab_size - 1, pad_token_id=0, bos_token_id=None
    )
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)
    model.generation_config.eos_token_id = vocab_size - 1
    model.generation_config.pad_token_id = 0
    return model


def length_reward(texts, context):
    return [min(len(ids), 10) / 10 for ids in context.token_ids]


# ---------------------------------------------------------------------------------------------------------------------
# The config


def test_config_defaults_are_the_settings_of_every_committed_search_benchmark():
    """The defaults are what ``bench_search.py`` ran MaxEnt-TS with for the committed results (recorded in each
    result file's settings, before the config existed as flags: no cap on children was ``expansion_k=10**6``)."""
    config = MaxEntTSConfig()
    files = sorted((ROOT / "benchmarks/results").glob("bench_search_*.json"))
    benches = [json.loads(path.read_text()) for path in files if not path.stem.endswith("pool")]
    assert len(benches) >= 10
    for bench in benches:
        settings = bench["settings"]
        if "search_config" in settings:
            recorded = {
                k: v for k, v in settings["search_config"].items() if k not in ("num_rollouts", "token_budget")
            }
        else:
            recorded = {
                "lam": settings["lam"],
                "widening": "mass" if settings["mass_widening"] else "fixed",
                "expansion_k": None if settings["expansion_k"] >= 10**6 else settings["expansion_k"],
                "max_depth": settings["max_depth"],
                "widening_alpha": settings["widening_alpha"],
                "unexplored_prior": settings["unexplored_prior"],
                "min_branch_mass": settings["min_branch_mass"],
                "rollout_batch_size": settings["rollout_batch_size"],
            }
        assert {key: getattr(config, key) for key in recorded} == recorded
    assert (config.commit_every, config.select, config.return_trees, config.token_budget) == (
        None,
        "best",
        False,
        None,
    )
    assert config.num_rollouts == 64  # the benchmark's 8 N at N = 8, where the token budget binds first


def test_benchmark_passes_only_the_budget_it_sweeps(monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_search

    calls = []
    monkeypatch.setattr(bench_search, "maxent_ts_generate", lambda *args, **kwargs: calls.append(kwargs))
    args = SimpleNamespace(max_new_tokens=40, tokenizer=None, search_config=bench_search.search_config([]))
    task = {"seed": 3, "reward": length_reward, "stop": None}
    bench_search.run_method("maxent_ts", None, None, task, 8, args, token_budget=250)
    (kwargs,) = calls
    assert MaxEntTSConfig.coerce(kwargs["search_config"]) == MaxEntTSConfig()
    assert set(kwargs) & set(MaxEntTSConfig.field_names()) == {"num_rollouts", "token_budget"}
    assert (kwargs["num_rollouts"], kwargs["token_budget"]) == (64, 250)
    tuned = bench_search.search_config(["lam=50", "widening=fixed", "expansion_k=3", "max_depth=null"])
    assert (tuned.lam, tuned.widening, tuned.expansion_k, tuned.max_depth) == (50, "fixed", 3, None)
    with pytest.raises(SystemExit, match="lamda"):
        bench_search.search_config(["lamda=50"])


def test_config_round_trip_overrides_and_clear_errors():
    config = MaxEntTSConfig(lam=5.0, widening="fixed", expansion_k=3, max_depth=5)
    assert MaxEntTSConfig.from_dict(config.to_dict()) == config
    assert MaxEntTSConfig.from_dict(json.loads(config.to_json_string())) == config
    assert MaxEntTSConfig.from_dict(config.to_dict(), lam=2.0).lam == 2.0
    assert MaxEntTSConfig.coerce({"num_rollouts": 8}) == MaxEntTSConfig(num_rollouts=8)
    coerced = MaxEntTSConfig.coerce(config)
    assert coerced == config and coerced is not config
    unused = coerced.update(num_rollouts=5, max_new_tokens=9)
    assert unused == {"max_new_tokens": 9} and coerced.num_rollouts == 5 and config.num_rollouts == 64
    cases = [
        (dict(widening="fixed"), "needs expansion_k"),
        (dict(widening="visits", expansion_k=4), "widening_alpha > 0"),
        (dict(widening="wide"), r"widening must be one of 'mass', 'fixed', 'visits'; got 'wide'"),
        (dict(select="argmax"), "select must be one of"),
        (dict(unexplored_prior="max"), "unexplored_prior"),
        (dict(min_branch_mass=1.0), r"min_branch_mass must be in \[0, 1\), got 1.0"),
        (dict(num_rollouts=0), "num_rollouts must be an int >= 1, got 0"),
        (dict(num_rollouts=2.5), "num_rollouts must be an int"),
        (dict(max_depth=0), "max_depth must be an int >= 1 or None"),
        (dict(lam=-1.0), "lam must be a number >= 0"),
    ]
    for settings, message in cases:
        with pytest.raises(ValueError, match=message):
            MaxEntTSConfig(**settings)
    with pytest.raises(ValueError, match=r"Unknown MaxEnt-TS settings \['mass_widening'\]"):
        MaxEntTSConfig.from_dict({"mass_widening": True})
    with pytest.raises(TypeError, match="search_config must be"):
        MaxEntTSConfig.coerce(5)


def test_search_config_and_keyword_overrides_are_the_same_search():
    model = tiny_llama()
    prompt = torch.tensor([[4, 8, 15, 16]])
    settings = dict(num_rollouts=12, lam=5.0, widening="fixed", expansion_k=3, max_depth=3)
    by_keywords = maxent_ts_generate(model, prompt, length_reward, max_new_tokens=6, seed=1, **settings)
    config = MaxEntTSConfig(**settings)
    by_config = maxent_ts_generate(model, prompt, length_reward, search_config=config, max_new_tokens=6, seed=1)
    by_dict = maxent_ts_generate(model, prompt, length_reward, search_config=settings, max_new_tokens=6, seed=1)
    assert torch.equal(by_keywords.sequences, by_config.sequences) and torch.equal(
        by_config.sequences, by_dict.sequences
    )
    assert by_config.stats[0].rollouts == 12 and config == MaxEntTSConfig(**settings)  # the caller's config untouched
    overridden = maxent_ts_generate(
        model, prompt, length_reward, search_config=config, num_rollouts=3, max_new_tokens=6, seed=1
    )
    assert overridden.stats[0].rollouts == 3


# ---------------------------------------------------------------------------------------------------------------------
# The loadable folder


def test_loadable_folder_imports_only_its_own_files_and_pip_packages():
    allowed = {"torch", "numpy", "transformers"} | set(sys.stdlib_module_names)
    modules = {path.stem for path in LOADABLE.glob("*.py")}
    for path in LOADABLE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name.split(".")[0] for alias in node.names]
                assert set(names) <= allowed, (path.name, names)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] in allowed, (path.name, node.module)
                else:  # transformers copies single-dot relative imports of sibling files only
                    assert node.level == 1 and node.module in modules, (path.name, node.module)
    requirements = (LOADABLE / "requirements.txt").read_text().split()
    assert {r.split(">")[0] for r in requirements} == {"torch", "numpy", "transformers"}


def card_front_matter() -> tuple[dict, str]:
    import yaml

    text = (Path(CUSTOM_GENERATE_FOLDER) / "README.md").read_text()
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1]), text


def test_card_states_what_a_custom_generate_card_needs():
    meta, text = card_front_matter()
    assert meta["library_name"] == "transformers" and "custom_generate" in meta["tags"]
    for section in ("## Description", "## Base model", "## Additional arguments", "## Output type", "## Example"):
        assert section in text
    for name, value in MaxEntTSConfig().to_dict().items():  # every setting with its default
        shown = f'`"{value}"`' if isinstance(value, str) else str(value)
        assert f"| `{name}` |" in text and f"| {shown} |" in text.split(f"| `{name}` |")[1].split("\n")[0], name


def uploaded_copy(tmp_path: Path) -> Path:
    """The files the Hub repo gets, in a fresh folder: loading from it proves the folder stands on its own."""
    target = tmp_path / "maxent-ts"
    for pattern in UPLOADED:
        for source in Path(CUSTOM_GENERATE_FOLDER).glob(pattern):
            relative = source.relative_to(CUSTOM_GENERATE_FOLDER)
            if relative.as_posix() in NOT_UPLOADED:
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / relative)
    return target


def test_generate_from_a_local_folder_equals_the_direct_call(tmp_path):
    model = tiny_llama()
    ids = torch.tensor([[0, 0, 5, 6, 7], [9, 8, 7, 6, 5]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    common = dict(reward=length_reward, max_new_tokens=8, seed=0, num_rollouts=10, token_budget=40)
    direct = maxent_ts_generate(model, {"input_ids": ids, "attention_mask": mask}, **common)
    assert direct.stats[0].rollouts > 1 and all(s.tokens_processed - s.prompt_tokens <= 40 for s in direct.stats)
    for folder in (CUSTOM_GENERATE_FOLDER, str(uploaded_copy(tmp_path))):
        out = model.generate(
            input_ids=ids, attention_mask=mask, custom_generate=folder, trust_remote_code=True, **common
        )
        assert type(out).__module__.startswith("transformers_modules.")  # the folder's copy ran, not this package
        assert torch.equal(out.sequences, direct.sequences)
        assert out.rewards == direct.rewards and out.texts == direct.texts
        assert [s.tokens_processed for s in out.stats] == [s.tokens_processed for s in direct.stats]
    with pytest.raises(ValueError, match="trust_remote_code"):
        model.generate(input_ids=ids, custom_generate=CUSTOM_GENERATE_FOLDER, trust_remote_code=False, **common)
    with pytest.raises(ValueError, match="does not support streamer"):
        model.generate(
            input_ids=ids, custom_generate=CUSTOM_GENERATE_FOLDER, trust_remote_code=True, streamer=object(), **common
        )


def test_generate_from_a_local_folder_with_a_tiny_opentslm_and_its_series():
    from tiny import tiny_opentslm, tiny_processor

    processor = tiny_processor()
    model = tiny_opentslm(processor)
    text = processor.format_prompt("You are an expert in time series analysis.", "Describe the series.", num_series=1)
    series = np.sin(np.arange(40) / 3.0)
    inputs = processor(text=text, time_series=[[series]], return_tensors="pt")
    settings = MaxEntTSConfig(num_rollouts=6, lam=5.0)
    common = dict(reward=lambda texts, context: [0.5] * len(texts), max_new_tokens=6, seed=0, tokenizer=processor)
    direct = maxent_ts_generate(model, inputs, search_config=settings, **common)
    out = model.generate(
        **inputs, custom_generate=CUSTOM_GENERATE_FOLDER, trust_remote_code=True, search_config=settings, **common
    )
    assert torch.equal(out.sequences, direct.sequences) and out.texts == direct.texts
    assert out.stats[0].prompt_tokens == inputs["input_ids"].shape[1] and out.stats[0].rollouts == 6


HUB_CLIENT = """
import json, sys
import torch
from tiny import tiny_text_config
from transformers import AutoConfig, AutoModelForCausalLM
from maxent_ts import maxent_ts_generate
from maxent_ts.hub import main

repo = sys.argv[1]
assert main([repo]) == 0
assert main([repo]) == 0  # pushing again updates the same repo

torch.manual_seed(6)
config = AutoConfig.for_model(**tiny_text_config("llama", 32), eos_token_id=31, pad_token_id=0, bos_token_id=None)
model = AutoModelForCausalLM.from_config(config).eval()
model.generation_config.eos_token_id, model.generation_config.pad_token_id = 31, 0
reward = lambda texts, context: [min(len(ids), 10) / 10 for ids in context.token_ids]
ids = torch.tensor([[0, 0, 5, 6, 7], [9, 8, 7, 6, 5]])
mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
common = dict(reward=reward, max_new_tokens=8, seed=0, num_rollouts=10, token_budget=40)
hub = model.generate(input_ids=ids, attention_mask=mask, custom_generate=repo, trust_remote_code=True, **common)
direct = maxent_ts_generate(model, {"input_ids": ids, "attention_mask": mask}, **common)
print("RESULT " + json.dumps({
    "module": type(hub).__module__,
    "equal": torch.equal(hub.sequences, direct.sequences) and hub.rewards == direct.rewards,
    "rows": hub.sequences.shape[0],
}))
"""


def test_push_to_the_fake_hub_then_generate_from_the_repo(tmp_path):
    repo_id = "tester/maxent-ts"
    with FakeHub() as hub:
        env = hub.env(os.environ)
        env.update(HF_HOME=str(tmp_path / "hf"), PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        env["OMP_NUM_THREADS"] = "1"
        result = subprocess.run(
            [sys.executable, "-c", HUB_CLIENT, repo_id],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        stored = hub.files("models", repo_id)
        commits = len(hub.repos[("models", repo_id)].commits)

    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    assert report["equal"] and report["rows"] == 2
    assert report["module"].startswith("transformers_modules.tester.")  # the copy downloaded from the repo ran
    expected = {"README.md", "custom_generate/requirements.txt"} | {
        f"custom_generate/{path.name}" for path in LOADABLE.glob("*.py") if path.name != "__init__.py"
    }
    assert set(stored) - {".gitattributes"} == expected
    assert stored["custom_generate/search.py"] == (LOADABLE / "search.py").read_bytes()
    assert commits >= 2  # created, then uploaded (twice: the second push changes nothing but still commits)


def test_package_reexports_the_loadable_code():
    from maxent_ts.custom_generate import config, generate, search

    assert maxent_ts.maxent_ts_generate is search.maxent_ts_generate
    assert maxent_ts.MaxEntTSConfig is config.MaxEntTSConfig
    assert generate.generate.__module__ == "maxent_ts.custom_generate.generate"
    assert "__signature__" not in vars(maxent_ts.maxent_ts_generate)
