"""Which sa-engine made something: the installed version and, from a git checkout, its commit."""

from __future__ import annotations

import functools
import os
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

COMMIT_ENV = "SA_ENGINE_COMMIT"
"""Names the commit where the code runs without its .git folder (a wheel, a Ray job's working dir)."""


def engine_version() -> str:
    """The installed distribution's version, or "unknown" when sa-engine runs from a bare copy."""
    try:
        return version("sa-engine")
    except PackageNotFoundError:
        return "unknown"


@functools.cache
def engine_commit() -> str | None:
    """The code's git commit (with "-dirty" when tracked files were changed), from SA_ENGINE_COMMIT
    if set, else from the checkout this file lies in; None when neither tells."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():  # an installed copy: a repo around it would be another's
        return None
    try:
        commit = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True, timeout=10)
    return done.stdout.strip()
