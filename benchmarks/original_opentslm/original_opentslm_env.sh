#!/usr/bin/env bash
# Build a throw-away CPU environment that runs the ORIGINAL OpenTSLM code (for parity fixtures, never a
# dependency of the project).
#   usage: bash original_opentslm_env.sh <bare git dir of StanfordBDHG/OpenTSLM> [DIR (default: $TMPDIR/opentslm-original)]
# The git dir is a clone of github.com/StanfordBDHG/OpenTSLM (`git clone --bare`).
# Afterwards: DIR/venv/bin/python with DIR/opentslm/src and DIR/opentslm on sys.path imports
#   opentslm.model.llm.OpenTSLMSP / OpenTSLMFlamingo, opentslm.time_series_datasets.*, curriculum_learning.
set -euo pipefail
GITDIR=${1:?bare git dir of StanfordBDHG/OpenTSLM}
DIR=${2:-${TMPDIR:-$(dirname "$(mktemp -u)")}/opentslm-original}
mkdir -p "$DIR/opentslm"
git --git-dir="$GITDIR" archive HEAD | tar -x -C "$DIR/opentslm"
git --git-dir="$GITDIR" rev-parse HEAD > "$DIR/opentslm/.commit"
python3 -m venv "$DIR/venv"
PIP="$DIR/venv/bin/pip"
"$PIP" install torch==2.13.0                       # CPU wheel first; a plain torch pulls a CUDA build
# the original's own pins where they matter (transformers 4.x, peft 0.18, huggingface-hub < 1)
"$PIP" install "transformers==4.57.3" "peft==0.18.0" "huggingface-hub<1.0" numpy pandas tqdm einops einops-exts \
    scikit-learn matplotlib datasets wfdb requests psutil
# open-flamingo 2.0.1 is what the code was written against; its metadata pins torch 2.0.1, so no deps.
# It imports open_clip at package import; open_clip needs torchvision, whose registry wheel is a CUDA build
# that does not load beside the CPU torch. Put an empty module in sys.modules["open_clip"] before importing
# open_flamingo: OpenTSLM never calls the function that uses it.
"$PIP" install --no-deps "open-flamingo==2.0.1"
echo "ready: $DIR/venv/bin/python (add $DIR/opentslm/src and $DIR/opentslm to sys.path)"
