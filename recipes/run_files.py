"""What a recipe run writes so that a kill cannot spoil it and its results can be quoted.

Weights and JSON go through a temporary file and an atomic rename (a killed run leaves the old
file or the new one, never half of one); every phase backs up into a folder keyed on its
settings (a run with other settings never resumes from it); :func:`provenance` records the
command, commit, seed and time that ``results.json`` was made with.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from tf_admm.compat import keras

__all__ = [
    "backup_dir",
    "provenance",
    "save_weights_atomically",
    "write_json_atomically",
]


def save_weights_atomically(model: keras.Model, path: str) -> None:
    """Writes ``model``'s weights to ``path`` (.h5) so that ``path`` is never half written."""
    directory, name = os.path.split(path)
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp.weights.h5")
    try:
        model.save_weights(temporary)
        with open(temporary, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_json_atomically(path: str, value: Any) -> None:
    """Writes ``value`` as indented JSON to ``path`` through a temporary file."""
    with open(f"{path}.tmp", "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(f"{path}.tmp", path)


def backup_dir(model_dir: str, phase: str, *parts: Any) -> str:
    """A backup directory of its own for ``phase`` run with the settings ``parts``."""
    key = json.dumps([phase, *parts], sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return os.path.join(model_dir, "backup", f"{phase}_{digest}")


def provenance(module: str, seed: int) -> dict[str, Any]:
    """What a results file needs to be quoted: the command, the commit, the seed and when.

    ``commit`` is the checkout's ``git`` HEAD (``+`` when files differ from it), or None
    outside a git checkout.
    """
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit and git("status", "--porcelain", "--untracked-files=no"):
        commit += "+"
    return {
        "command": " ".join(["python", "-m", module, *map(shlex.quote, sys.argv[1:])]),
        "commit": commit,
        "seed": seed,
        "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
