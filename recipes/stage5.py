"""Stage 5 of the OpenTSLM curriculum. Usage:

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/stage5.py \
        --config recipes/configs/smollm2-135m/stage5.yaml
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python recipes/stage5.py` from a checkout

from recipes.sft import run  # noqa: E402

if __name__ == "__main__":
    run(stage="stage5")
