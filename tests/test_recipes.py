"""Recipes: every YAML parses with the real TrlParser; tiny end-to-end runs of the stage scripts through real
subprocesses (one process, two-process CPU DDP, a kill and resume, a chained curriculum with LoRA)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny import TINY_ENCODER, save_tiny_llm, save_toy_records
from trl import ScriptArguments

from recipes.curriculum import parse_stages, run_curriculum
from recipes.sft import (
    STAGES,
    OpenTSLMScriptArguments,
    last_complete_checkpoint,
    load_records,
    make_parser,
    parse_offline_name,
    validate_arguments,
    with_replay,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*/*.yaml"))
PAPER_EPOCHS = {"stage1": 30, "stage2": 20, "stage3": 30, "stage4": 60, "stage5": 60}


# ---------------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------------
def test_there_are_configs_for_three_llms_and_five_stages():
    by_llm = {}
    for path in CONFIGS:
        by_llm.setdefault(path.parent.name, set()).add(path.stem)
    for llm in ("smollm2-135m", "llama-3.2-1b", "gemma-3-270m"):
        assert set(STAGES) <= by_llm[llm], llm
        assert set(STAGES) <= by_llm[f"{llm}-flamingo"], llm


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_yaml_parses_with_trl_parser(path):
    script_args, training_args, model_args = make_parser().parse_args_and_config(["--config", str(path)])
    validate_arguments(script_args, training_args, model_args, check_paths=False)
    assert isinstance(script_args, ScriptArguments)  # TRL's own script arguments, extended
    assert script_args.stage == path.stem or path.parent.name.endswith("quickstart")
    assert training_args.remove_unused_columns is False
    assert training_args.dataset_kwargs == {"skip_prepare_dataset": True}
    assert training_args.bf16 is False and training_args.gradient_checkpointing is False
    assert script_args.eval_do_sample is False
    # The prompt format is stated in every file, never left to whether the tokenizer has a chat template.
    assert re.search(r"^use_chat_template: (true|false)\b", path.read_text(), flags=re.M)
    assert script_args.use_chat_template is path.parent.name.startswith("smollm2")
    stage_number = int(script_args.stage[-1])
    flamingo = path.parent.name.endswith("-flamingo")
    # The quickstart and the shipped default model's curriculum are short CPU runs, not the paper's schedule; the
    # default model trains LoRA from stage 1 on.
    short = path.parent.name.endswith(("-quickstart", "-default"))
    assert script_args.architecture == ("flamingo" if flamingo else "sp")
    first_lora_stage = 1 if path.parent.name.endswith("-default") else 3
    assert model_args.use_peft is (stage_number >= first_lora_stage and not flamingo)  # original Flamingo: no LoRA
    if model_args.use_peft:
        assert (model_args.lora_r, model_args.lora_alpha, model_args.lora_dropout) == (16, 32, 0.0)
    if stage_number == 1:
        assert script_args.init_from is None and model_args.model_name_or_path
    else:
        assert script_args.init_from == str(
            Path(training_args.output_dir).parent / f"stage{stage_number - 1}" / "best"
        )
    if not short:
        assert training_args.num_train_epochs == PAPER_EPOCHS[script_args.stage]
        if flamingo:  # the original Flamingo: 2e-4 everywhere, weight decay 0.1 on the cross-attention only
            assert (script_args.learning_rate_encoder, script_args.learning_rate_projector) == (2e-4, 2e-4)
            assert script_args.learning_rate_cross_attention == 2e-4 and training_args.weight_decay == 0.0
            assert script_args.weight_decay_cross_attention == 0.1
        else:
            assert (script_args.learning_rate_encoder, script_args.learning_rate_projector) == (2e-4, 1e-4)
            assert script_args.learning_rate_lora == 2e-4 and training_args.weight_decay == 0.01
        assert training_args.max_grad_norm == 1.0 and training_args.warmup_steps == 0.03
        assert (script_args.early_stopping_patience, script_args.early_stopping_threshold) == (5, 1e-4)


def parse(argv):
    return make_parser().parse_args_and_config(argv)


def test_bad_configs_give_clear_errors(tmp_path):
    base = [
        "--dataset_name",
        "offline:tsqa_synthetic",
        "--model_name_or_path",
        "x",
        "--output_dir",
        str(tmp_path),
        "--bf16",
        "false",
    ]
    args = parse([*base, "--stage", "stage9", "--remove_unused_columns", "false"])
    with pytest.raises(ValueError, match=r"Unknown stage 'stage9'; choose one of stage1, stage2"):
        validate_arguments(*args)
    args = parse([*base, "--learning_rate_encoder", "-1", "--remove_unused_columns", "false"])
    with pytest.raises(ValueError, match="learning_rate_encoder must be > 0"):
        validate_arguments(*args)
    args = parse([*base, "--init_from", str(tmp_path / "missing"), "--remove_unused_columns", "false"])
    with pytest.raises(ValueError, match="is not a folder. Run the previous stage first"):
        validate_arguments(*args)
    args = parse([*base, "--architecture", "perceiver", "--remove_unused_columns", "false"])
    with pytest.raises(ValueError, match="architecture must be 'sp' or 'flamingo', got 'perceiver'"):
        validate_arguments(*args)
    args = parse([*base, "--dataset_streaming", "true", "--remove_unused_columns", "false"])
    with pytest.raises(ValueError, match="dataset_streaming is not supported"):
        validate_arguments(*args)
    args = parse([*base, "--loss_emphasis", "trend", "--remove_unused_columns", "false"])
    with pytest.raises(ValueError, match="loss_emphasis needs loss_weighting: sample"):
        validate_arguments(*args)
    emphasis = ["--loss_weighting", "sample", "--remove_unused_columns", "false", "--loss_emphasis"]
    with pytest.raises(ValueError, match="not a regular expression"):
        validate_arguments(*parse([*base, *emphasis, "(trend"]))
    with pytest.raises(ValueError, match="weight must be a finite number > 0"):
        validate_arguments(*parse([*base, *emphasis, "trend", "--loss_emphasis_weight", "0"]))
    with pytest.raises(ValueError, match="remove_unused_columns must be false"):
        validate_arguments(*parse(base))
    replay = ["--remove_unused_columns", "false", "--replay_datasets", "a", "b", "--replay_fraction"]
    with pytest.raises(
        ValueError, match="replay_fraction has 3 values for 2 replay_datasets; give one number for all"
    ):
        validate_arguments(*parse([*base, *replay, "0.5", "0.1", "0.1"]))
    with pytest.raises(ValueError, match="replay_fraction must be > 0"):
        validate_arguments(*parse([*base, *replay, "0.5", "0"]))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("stage: stage1\nbf16: false\nlerning_rate_encoder: 1.0e-3\n")
    with pytest.raises(ValueError, match="lerning_rate_encoder"):
        parse(["--config", str(bad_yaml)])
    with pytest.raises(ValueError, match="Unknown stage"):
        run_curriculum(tmp_path, ["stage7"])
    assert parse_stages(["1", "stage2"]) == ["stage1", "stage2"]


def test_offline_set_parameters_and_replay(tmp_path):
    assert parse_offline_name("offline:tsqa_synthetic") == ("tsqa_synthetic", {})
    assert parse_offline_name("offline:tsqa_synthetic?num_per_class=3&seed=7&lengths=[64,128]") == (
        "tsqa_synthetic",
        {"num_per_class": 3, "seed": 7, "lengths": [64, 128]},
    )
    with pytest.raises(ValueError, match="written key=value"):
        parse_offline_name("offline:tsqa_synthetic?seed")
    with pytest.raises(TypeError, match="does not take \\['sizes'\\]"):
        load_records("offline:tsqa_synthetic?sizes=3")
    # Other builder parameters, other records: a larger set of other series keeps its test split apart.
    small = load_records("offline:tsqa_synthetic?num_per_class=2")
    other = load_records("offline:tsqa_synthetic?num_per_class=3&seed=7")
    assert sum(map(len, other.values())) == 5 * 3 * 3
    assert not {str(r["time_series"]) for r in small["test"]} & {str(r["time_series"]) for r in other["train"]}

    captions = load_records(save_toy_records(tmp_path / "captions", sizes=(20, 4, 4)))["train"]
    arguments = OpenTSLMScriptArguments(
        dataset_name="captions",
        replay_datasets=["offline:tsqa_synthetic?num_per_class=3&seed=7", "offline:tsqa_synthetic?num_per_class=3"],
        replay_fraction=0.25,
    )
    mixed, counts = with_replay(captions, arguments, seed=0)
    assert sorted(mixed["task"]) == ["m4"] * 20 + ["tsqa"] * 10
    assert counts == dict.fromkeys(arguments.replay_datasets, 5)
    assert set(mixed["id"]) >= set(captions["id"]) and mixed["task"][:15] != sorted(mixed["task"][:15])  # shuffled
    assert with_replay(captions, OpenTSLMScriptArguments(dataset_name="captions"), seed=0) == (captions, {})
    arguments.replay_fraction = 3.0
    with pytest.raises(ValueError, match="asks for 60 records from .* which has \\d+; lower replay_fraction"):
        with_replay(captions, arguments, seed=0)
    arguments.replay_fraction = [0.25, 0.1]  # one per data set, in order
    mixed, counts = with_replay(captions, arguments, seed=0)
    assert list(counts.values()) == [5, 2] and len(mixed) == 27


def test_last_complete_checkpoint_skips_a_half_written_one(tmp_path):
    for step, complete in ((4, True), (8, True), (12, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-8")
    assert last_complete_checkpoint(tmp_path / "nothing") is None


# ---------------------------------------------------------------------------------------------------------------------
# Tiny runs through the real scripts
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe-assets")
    return {"llm": save_tiny_llm(root / "llm"), "data": save_toy_records(root / "data")}


def write_config(folder: Path, assets, **overrides) -> Path:
    config = {
        "stage": "stage2",
        "dataset_name": assets["data"],
        "model_name_or_path": assets["llm"],
        "encoder_config": TINY_ENCODER,
        "dtype": "float32",
        "train_llm": True,
        "learning_rate": 3.0e-3,
        "learning_rate_encoder": 3.0e-3,
        "learning_rate_projector": 3.0e-3,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0.03,
        "num_train_epochs": 3,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 4,
        "eval_strategy": "epoch",
        "save_strategy": "epoch",
        "load_best_model_at_end": True,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "output_dir": str(folder / "out"),
        "seed": 42,
        "data_seed": 42,
        "bf16": False,
        "gradient_checkpointing": False,
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "report_to": ["tensorboard"],
        "logging_steps": 1,
        "run_test": False,
        "dataloader_pin_memory": False,
        "disable_tqdm": True,
    }
    config.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config['stage']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a stage script: this one, the checkout first on PYTHONPATH (what was there stays)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_script(args: list[str], env_extra: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = script_env(**(env_extra or {}))
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


# Four steps, no evaluation or checkpoints: enough to see a stage train and hand its model on.
SHORT_RUN = dict(
    max_steps=4,
    eval_strategy="no",
    load_best_model_at_end=False,
    early_stopping_patience=None,
    save_strategy="no",
    train_llm=False,
)


def trained_weights(output_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output_dir / "best" / "model.safetensors"))


def assert_weights_close(a: dict, b: dict, atol: float):
    assert a.keys() == b.keys()
    worst = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert worst <= atol, f"largest weight difference {worst:.3g} > {atol}"


def test_stage2_script_trains_and_saves_the_best_model(tmp_path, assets):
    config = write_config(tmp_path, assets, run_test=True, eval_max_new_tokens=6, max_test_samples=4)
    run_script([sys.executable, "recipes/stage2.py", "--config", str(config)])
    out = tmp_path / "out"
    state = json.loads((Path(last_complete_checkpoint(out)) / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5, losses
    eval_losses = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert eval_losses[-1] < eval_losses[0]
    best = out / "best"
    for name in ("model.safetensors", "config.json", "modeling_opentslm.py", "processor_config.json"):
        assert (best / name).exists(), name
    assert not list(best.glob("*.pt")) and not list(best.glob("pytorch_model*"))
    metrics = json.loads((out / "stage_metrics.json").read_text())
    assert metrics["completed"] is True and metrics["best_eval_loss"] == min(eval_losses)
    assert metrics["test"]["test_perplexity"] == pytest.approx(
        float(torch.exp(torch.tensor(metrics["test"]["test_loss"])))
    )
    assert (out / "metrics.json").exists() and (out / "predictions.jsonl").exists()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4
    assert list((out / "runs").rglob("events.out.tfevents.*")), "TensorBoard logs are written by default"
    card = (out / "README.md").read_text()  # TRL's model card, with the transformers versions the code runs under
    assert "## Compatibility" in card and "`>=5.16.1,<=5.25.0`" in card


def test_entry_point_refuses_another_stages_config(tmp_path, assets):
    config = write_config(tmp_path, assets, stage="stage1")
    result = subprocess.run(
        [sys.executable, "recipes/stage2.py", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=script_env(),
        timeout=300,
    )
    assert (
        result.returncode != 0
        and "This entry point trains stage2, but the config says stage='stage1'" in result.stderr
    )


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_weights(tmp_path, assets):
    common = dict(
        eval_strategy="no",
        load_best_model_at_end=False,
        early_stopping_patience=None,
        save_strategy="steps",
        save_steps=3,
        max_steps=15,
        num_train_epochs=10,
    )
    reference = write_config(tmp_path / "reference", assets, **common)
    run_script([sys.executable, "recipes/stage2.py", "--config", str(reference)])

    killed = write_config(tmp_path / "killed", assets, **common)
    out = tmp_path / "killed" / "out"
    env = script_env()
    process = subprocess.Popen(
        [sys.executable, "recipes/stage2.py", "--config", str(killed)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (out / "checkpoint-6" / "trainer_state.json").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (out / "best").exists()
    assert last_complete_checkpoint(out) is not None

    run_script([sys.executable, "recipes/stage2.py", "--config", str(killed), "--resume_from_checkpoint", "last"])
    assert_weights_close(trained_weights(out), trained_weights(tmp_path / "reference" / "out"), atol=1e-6)


@pytest.mark.slow
def test_two_process_cpu_ddp_equals_one_process(tmp_path, assets):
    common = dict(
        attn_implementation="opentslm_varlen",  # with the LLM frozen: the two-pass forward under DDP too
        train_llm=False,
        eval_strategy="no",
        load_best_model_at_end=False,
        early_stopping_patience=None,
        save_strategy="no",
        max_steps=6,
        logging_steps=1,
    )
    single = write_config(tmp_path / "single", assets, per_device_train_batch_size=4, **common)
    run_script([sys.executable, "recipes/stage2.py", "--config", str(single)])
    ddp = write_config(tmp_path / "ddp", assets, per_device_train_batch_size=2, **common)
    result = run_script(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(ROOT / "recipes" / "accelerate_configs" / "cpu_ddp.yaml"),
            "--main_process_port",
            "29531",
            "recipes/stage2.py",
            "--config",
            str(ddp),
            "--use_cpu",
            "true",
        ]
    )
    log = result.stdout + result.stderr
    assert "process 0 of 2" in log and "process 1 of 2" in log, log[-3000:]
    assert_weights_close(
        trained_weights(tmp_path / "ddp" / "out"), trained_weights(tmp_path / "single" / "out"), atol=1e-4
    )


@pytest.mark.slow
def test_curriculum_chains_stages_and_carries_lora(tmp_path, assets):
    """Stages 1 → 3 → 4 in separate processes: stage 3 adds LoRA (and replays stage 1's records), stage 4 starts
    from stage 3's trained adapters."""
    configs = tmp_path / "configs"
    common = SHORT_RUN
    write_config(configs, assets, stage="stage1", output_dir=str(tmp_path / "s1"), **common)
    lora = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    for stage, previous, lora_lr in (("stage3", "s1", 5e-2), ("stage4", "s3", 1e-6)):
        write_config(
            configs,
            assets,
            stage=stage,
            init_from=str(tmp_path / previous / "best"),
            model_name_or_path=None,
            output_dir=str(tmp_path / stage.replace("stage", "s")),
            learning_rate_lora=lora_lr,
            **({"replay_datasets": [assets["data"]], "replay_fraction": 0.5} if stage == "stage3" else {}),
            **lora,
            **common,
        )
    results = run_curriculum(configs, ["stage1", "stage3", "stage4"], extra_args=[])
    assert all(results[stage]["completed"] for stage in ("stage1", "stage3", "stage4"))

    stage3, stage4 = trained_weights(tmp_path / "s3"), trained_weights(tmp_path / "s4")
    lora_b = [k for k in stage3 if "lora_B" in k]
    assert lora_b and all(k in stage4 for k in lora_b)
    assert max(stage3[k].abs().max().item() for k in lora_b) > 1e-2, "stage 3 trained its adapters"
    # Stage 4 (lr 1e-6) ends next to stage 3's adapters: it started from them, not from fresh zeros.
    assert max((stage3[k] - stage4[k]).abs().max().item() for k in lora_b) < 1e-3
    assert any(not torch.equal(stage3[k], stage4[k]) for k in lora_b), "stage 4 trained them further"
    config4 = json.loads((tmp_path / "s4" / "best" / "config.json").read_text())
    assert config4["lora"]["r"] == 4
    info4 = json.loads((tmp_path / "s4" / "best" / "stage_info.json").read_text())
    assert info4["init_from"] == str(tmp_path / "s3" / "best")
    info3 = json.loads((tmp_path / "s3" / "best" / "stage_info.json").read_text())
    assert info3["replayed"] == {assets["data"]: 12}
    from opentslm_hub.publish import render_card

    assert f"plus 12 records replayed from `{assets['data']}`" in render_card(tmp_path / "s4" / "best", "demo")
    # A second call finds every stage complete and re-runs nothing.
    mtime = (tmp_path / "s4" / "best" / "model.safetensors").stat().st_mtime
    run_curriculum(configs, ["stage1", "stage3", "stage4"])
    assert (tmp_path / "s4" / "best" / "model.safetensors").stat().st_mtime == mtime


@pytest.mark.slow
def test_flamingo_curriculum_carries_its_weights_to_the_next_stage(tmp_path, assets):
    """A tiny Flamingo: stage 1 builds it (resampler + gated cross-attention), stage 2 starts from stage 1's best."""
    configs = tmp_path / "configs"
    common = dict(**SHORT_RUN, architecture="flamingo", learning_rate_cross_attention=5e-2)
    flamingo = dict(
        num_latents=4,
        resampler_num_layers=1,
        resampler_num_heads=2,
        resampler_head_dim=8,
        cross_attention_num_heads=2,
        cross_attention_head_dim=8,
        cross_attention_every_n_layers=1,
    )
    write_config(
        configs,
        assets,
        stage="stage1",
        output_dir=str(tmp_path / "s1"),
        encoder_config={**TINY_ENCODER, "num_hidden_layers": 0},
        architecture_config=flamingo,
        **common,
    )
    write_config(
        configs,
        assets,
        stage="stage2",
        init_from=str(tmp_path / "s1" / "best"),
        model_name_or_path=None,
        output_dir=str(tmp_path / "s2"),
        **{**common, "learning_rate_cross_attention": 1e-6, "learning_rate_encoder": 1e-6},
        learning_rate_projector=1e-6,
    )
    results = run_curriculum(configs, ["stage1", "stage2"], extra_args=[])
    assert all(results[stage]["completed"] for stage in ("stage1", "stage2"))
    stage1, stage2 = trained_weights(tmp_path / "s1"), trained_weights(tmp_path / "s2")
    gates = [k for k in stage1 if k.endswith("attention_gate")]
    assert gates and any(k.startswith("model.resampler.") for k in stage1)
    assert not any(k.startswith("model.projector.") for k in stage1)
    assert max(stage1[k].abs().item() for k in gates) > 1e-3, "stage 1 opened its gates"
    # Stage 2 (lr 1e-6) ends next to stage 1's weights: it started from them, not from closed gates.
    assert max((stage1[k] - stage2[k]).abs().max().item() for k in gates) < 1e-4
    config2 = json.loads((tmp_path / "s2" / "best" / "config.json").read_text())
    assert config2["architecture"] == "flamingo" and config2["num_latents"] == 4
    processor2 = json.loads((tmp_path / "s2" / "best" / "processor_config.json").read_text())
    assert processor2["placeholders"] == "per_series"
    info2 = json.loads((tmp_path / "s2" / "best" / "stage_info.json").read_text())
    assert info2["architecture"] == "flamingo" and info2["init_from"] == str(tmp_path / "s1" / "best")
    # A stage whose config names the other variant refuses to start from it.
    write_config(
        configs,
        assets,
        stage="stage3",
        init_from=str(tmp_path / "s2" / "best"),
        model_name_or_path=None,
        output_dir=str(tmp_path / "s3"),
        **{**common, "architecture": "sp"},
    )
    with pytest.raises(subprocess.CalledProcessError):
        run_curriculum(configs, ["stage3"], extra_args=[])
