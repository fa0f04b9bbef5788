"""The transformers versions this remote code runs under, and the check that stops it under an older one.

Remote code runs under whatever transformers the user has installed, not the one the checkpoint was trained with.
The folder is tested, in a process that cannot import the `opentslm-hub` package, with the oldest and the newest
release of the range below (see `tests/test_transformers_versions.py`); newer releases are not refused. Where the
code needs an API that is younger than the floor, it falls back to an older one with the same behaviour.

Model cards state `SUPPORTED_TRANSFORMERS`.
"""

import dataclasses

import transformers
from packaging.version import Version
from transformers.modeling_outputs import BaseModelOutputWithPast

TRANSFORMERS_FLOOR = "5.16.1"
TRANSFORMERS_NEWEST_TESTED = "5.25.0"
SUPPORTED_TRANSFORMERS = f">={TRANSFORMERS_FLOOR},<={TRANSFORMERS_NEWEST_TESTED}"


def check_transformers_version(found: str = transformers.__version__) -> None:
    """Raise a clear `ImportError` below the floor (instead of one from deep inside transformers)."""
    if Version(found).release < Version(TRANSFORMERS_FLOOR).release:  # a dev build of the floor passes
        raise ImportError(
            f"OpenTSLM remote code needs transformers >= {TRANSFORMERS_FLOOR} (tested {TRANSFORMERS_FLOOR} to "
            f"{TRANSFORMERS_NEWEST_TESTED}); found {found}. Upgrade it: pip install -U 'transformers>={TRANSFORMERS_FLOOR}'"
        )


check_transformers_version()

# The name of the KV cache in model inputs and outputs: `cache` from transformers 5.24 on (`past_key_values` is
# deprecated there, with a warning on every call, and goes in 5.40), `past_key_values` before.
CACHE_NAME = (
    "cache" if "cache" in {field.name for field in dataclasses.fields(BaseModelOutputWithPast)} else "past_key_values"
)

__all__ = [
    "CACHE_NAME",
    "SUPPORTED_TRANSFORMERS",
    "TRANSFORMERS_FLOOR",
    "TRANSFORMERS_NEWEST_TESTED",
    "check_transformers_version",
]
