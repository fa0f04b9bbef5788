"""Local `evaluate` metric modules, loadable with no network (the Hub copies are unreachable offline).

Each folder holds one module in `evaluate`'s format (`<name>/<name>.py`, an `evaluate.Metric` subclass):

- ``rouge``: ROUGE-1/2/L/Lsum F-measures from `rouge-score`, averaged over the samples.
- ``bleu``: sacreBLEU corpus BLEU (0–100), one or several references per prediction.
- ``accuracy``: exact-match accuracy over strings.
- ``f1``: F1 from scikit-learn over an explicit label set; a prediction outside the set counts only as a false
  negative of the true class (as upstream OpenTSLM's evaluation does), never as a new class.

>>> from recipes.metrics import load_metric
>>> load_metric("rouge").compute(predictions=["a b c"], references=["a b c"])["rougeL"]
1.0
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("accuracy", "bleu", "f1", "rouge")


def _evaluate_library() -> Any:
    try:
        import evaluate
    except ImportError as error:
        raise ImportError(
            f"The metrics need `evaluate`, `rouge-score` and `sacrebleu` ({error}); install them with "
            "pip install -e . (they are core dependencies)."
        ) from None
    return evaluate


@functools.cache
def load_metric(name: str) -> Any:
    """Load the local metric module `name` (one of `METRIC_NAMES`) with `evaluate.load`, kept in memory."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; the local metric modules are {list(METRIC_NAMES)}.")
    return _evaluate_library().load(str(METRICS_DIR / name), keep_in_memory=True)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric"]
