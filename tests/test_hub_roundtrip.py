"""Push a built upstream dataset with the builder CLI (twice) to a local fake Hub, pull it with ``load_dataset``,
compare.

The client runs in a subprocess because ``HF_ENDPOINT`` / ``HF_HUB_DISABLE_XET`` must be set before
``huggingface_hub`` is imported, and this test process has imported it already (through ``datasets``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fake_hub import FakeHub
from upstream_data import FIXTURES

ROOT = Path(__file__).resolve().parents[1]
REPO_ID = "opentslm/har-cot"

CLIENT = """
import json, sys
from datasets import load_dataset
from huggingface_hub import DatasetCard
from hub_datasets import har_cot

raw, repo = sys.argv[1], sys.argv[2]
for _ in range(2):  # a second push (re-running the builder) must replace, not duplicate
    assert har_cot.main(["--raw", raw, "--push_to_hub", repo]) == 0
built = har_cot.build(raw)
pulled = load_dataset(repo)
card = DatasetCard.load(repo, repo_type="dataset")
print("RESULT " + json.dumps({
    "splits": sorted(pulled),
    "equal": {name: pulled[name].to_list() == built[name].to_list() for name in built},
    "features": all(pulled[name].features == built[name].features for name in built),
    "card": {"license": card.data.license, "configs": card.data.to_dict().get("configs"), "text": card.text},
}))
"""


def test_push_then_load_dataset_round_trip(tmp_path):
    with FakeHub() as hub:
        env = hub.env(os.environ)
        env.update(HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "datasets"), PYTHONPATH=str(ROOT))
        result = subprocess.run(
            [sys.executable, "-c", CLIENT, str(FIXTURES / "har_cot"), REPO_ID],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        stored = hub.repos[("datasets", REPO_ID)].snapshot("main")
        methods = {method for method, _, _ in hub.requests}

    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    assert report["splits"] == ["test", "train", "validation"]
    assert report["equal"] == {"train": True, "validation": True, "test": True}
    assert report["features"]

    card = report["card"]
    assert card["license"] == "unknown"
    assert card["configs"] == [
        {
            "config_name": "default",
            "data_files": [
                {"split": "train", "path": "data/train-*"},
                {"split": "validation", "path": "data/validation-*"},
                {"split": "test", "path": "data/test-*"},
            ],
        }
    ]
    assert "# OpenTSLM stage 3: HAR-CoT" in card["text"] and "| train | 4 |" in card["text"]

    # The Parquet shards went through the LFS batch API; the card is a regular file.
    parquet = sorted(path for path in stored if path.endswith(".parquet"))
    assert parquet == [f"data/{split}-00000-of-00001.parquet" for split in ("test", "train", "validation")]
    assert all(stored[path].lfs for path in parquet) and not stored["README.md"].lfs
    assert {"HEAD", "PUT"} <= methods
