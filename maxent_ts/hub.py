"""Upload the MaxEnt-TS custom generation strategy (``README.md`` card + ``custom_generate/``) to a Hub repo.

    python -m maxent_ts.hub <user>/maxent-ts [--private]

Then ``model.generate(..., custom_generate="<user>/maxent-ts", trust_remote_code=True, reward=...)`` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
#: What the Hub repo holds: the card and the loadable code (no package ``__init__``, rewards or baselines).
UPLOADED = ("README.md", "custom_generate/*.py", "custom_generate/requirements.txt")
NOT_UPLOADED = ("custom_generate/__init__.py",)


def push_to_hub(repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
    """Create ``repo_id`` (a model repo) if needed and upload the folder; returns the commit URL."""
    from huggingface_hub import create_repo, upload_folder

    missing = [name for name in ("README.md", "custom_generate/generate.py") if not (FOLDER / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{FOLDER} lacks {missing}: upload from a source checkout of opentslm-hub (or an editable install)."
        )
    create_repo(repo_id, private=private, token=token, exist_ok=True)
    info = upload_folder(
        repo_id=repo_id,
        folder_path=FOLDER,
        allow_patterns=list(UPLOADED),
        ignore_patterns=list(NOT_UPLOADED),
        commit_message="Upload the MaxEnt-TS custom_generate strategy",
        token=token,
    )
    return info.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_id", help="the Hub repo to create or update, e.g. <user>/maxent-ts")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    args = parser.parse_args(argv)
    print(push_to_hub(args.repo_id, private=args.private or None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
