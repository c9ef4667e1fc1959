"""What a table can be traced back to: the code's commit, the packages, and each model file."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

# Shown first; every other installed distribution is listed below them.
KEY_PACKAGES = ("seqrerank", "torch", "numpy", "pandas", "snakemake", "matplotlib")


def git_commit(directory: str | Path) -> str:
    """``<commit>`` of the checkout holding ``directory``, with ``(uncommitted changes)`` when
    its tracked files differ from the commit; a sentence when it is not a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(directory), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return f"unknown: {directory} is not a git checkout (or git is not installed)"
    return f"{commit} (uncommitted changes)" if dirty else commit


def package_versions() -> dict[str, str]:
    """Python and every installed distribution, the key packages first."""
    installed = {
        dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()
    }
    versions = {"python": platform.python_version()}
    versions.update({name: installed.get(name, "not installed") for name in KEY_PACKAGES})
    versions.update(sorted(installed.items()))
    return versions


def file_digest(path: str | Path) -> str:
    """The first 16 hex digits of the file's SHA-256: enough to tell two model files apart."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
