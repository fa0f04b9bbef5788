"""Run the curriculum: stage 1 → 5, each stage in its own process, each starting from the previous stage's best model.

    python -m recipes.curriculum --configs recipes/configs/smollm2-135m                 # stages 1-5
    python -m recipes.curriculum --configs recipes/configs/llama-3.2-1b --stages 3 4 5 \
        --accelerate_config recipes/accelerate_configs/ddp.yaml

A stage whose output folder already holds a completed `stage_metrics.json` is skipped (`--force` re-runs it), so an
interrupted curriculum continues where it stopped; a stage killed mid-way resumes from its last complete checkpoint.
Running every stage in a fresh process is deliberate: it is how the LoRA adapters must survive between stages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from recipes.sft import BEST_MODEL_DIR, STAGES

RECIPES_DIR = Path(__file__).resolve().parent


def stage_config(config_dir: Path, stage: str) -> tuple[Path, dict]:
    path = config_dir / f"{stage}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"No config for {stage} in {config_dir} (expected {path.name}).")
    config = yaml.safe_load(path.read_text())
    if config.get("stage") != stage:
        raise ValueError(f"{path} says stage={config.get('stage')!r}, expected {stage!r}.")
    return path, config


def is_complete(output_dir: Path) -> bool:
    metrics = output_dir / "stage_metrics.json"
    return metrics.exists() and json.loads(metrics.read_text()).get("completed") is True


def stage_command(stage: str, config_path: Path, accelerate_config: str | None, extra: list[str]) -> list[str]:
    script = str(RECIPES_DIR / f"{stage}.py")
    if accelerate_config:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config]
    else:
        launcher = [sys.executable]
    return [*launcher, script, "--config", str(config_path), *extra]


def run_curriculum(
    config_dir: str | Path,
    stages: list[str],
    *,
    accelerate_config: str | None = None,
    force: bool = False,
    extra_args: list[str] | None = None,
) -> dict[str, dict]:
    """Run `stages` in order with the YAML files of `config_dir`; returns each stage's metrics."""
    config_dir = Path(config_dir)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"Unknown stage(s) {unknown}; choose from {', '.join(STAGES)}.")
    results = {}
    previous_best: Path | None = None
    for stage in stages:
        config_path, config = stage_config(config_dir, stage)
        output_dir = Path(config["output_dir"])
        extra = list(extra_args or [])
        if previous_best is not None:
            declared = config.get("init_from")
            if declared and Path(declared).resolve() != previous_best.resolve():
                print(f"[curriculum] {stage}: init_from {declared} overridden by the stage just run: {previous_best}")
            extra += ["--init_from", str(previous_best)]
        if force or not is_complete(output_dir):
            command = stage_command(stage, config_path, accelerate_config, extra)
            print(f"[curriculum] {stage} ({STAGES[stage]['task']}): {' '.join(command)}", flush=True)
            subprocess.run(command, check=True, env=os.environ.copy())
        else:
            print(f"[curriculum] {stage}: already complete in {output_dir}, skipped (use --force to re-run)")
        results[stage] = json.loads((output_dir / "stage_metrics.json").read_text())
        previous_best = output_dir / BEST_MODEL_DIR
    return results


def parse_stages(values: list[str]) -> list[str]:
    return [value if value.startswith("stage") else f"stage{value}" for value in values]


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", required=True, help="folder with stage1.yaml … stage5.yaml")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), help="stages to run, in order (1 2 or stage1)")
    parser.add_argument("--accelerate_config", help="run each stage with `accelerate launch --config_file`")
    parser.add_argument("--force", action="store_true", help="re-run stages that already completed")
    args, extra = parser.parse_known_args(argv)
    results = run_curriculum(
        args.configs,
        parse_stages(args.stages),
        accelerate_config=args.accelerate_config,
        force=args.force,
        extra_args=extra,
    )
    for stage, metrics in results.items():
        print(f"[curriculum] {stage}: best eval loss {metrics.get('best_eval_loss')}, test {metrics.get('test')}")
    return results


if __name__ == "__main__":
    main()
