"""Stage 4 of the OpenTSLM curriculum. Usage:

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/stage4.py \
        --config recipes/configs/smollm2-135m/stage4.yaml
"""

import sys
from pathlib import Path

# Run as a script, Python puts recipes/ first on the path, where recipes/evaluate.py would shadow the `evaluate`
# library: put the repository root there instead.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from recipes.sft import run  # noqa: E402

if __name__ == "__main__":
    run(stage="stage4")
