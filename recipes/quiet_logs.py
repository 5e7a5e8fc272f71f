"""Quiet recipe output: INFO records from TensorFlow's own modules are dropped.

During ``fit`` with ``BackupAndRestore`` TensorFlow's checkpointing logs
``functional_saver.py:440] Sharding callback duration: ...`` at INFO every epoch, and TFDS logs
a few lines about dataset files at start-up; they land between the progress bars. A recipe's
own lines (its phases, the ADMM rounds of ``tf_admm``, the data preparation of
``recipes.data``) are logged at INFO too, through the same absl logger as TFDS, so a logger
level cannot tell them apart: :class:`ThirdPartyInfoFilter` looks at the file each record comes
from instead. Warnings and errors always pass, wherever they come from.

Example:

    def main(argv):
        quiet_logs.install()
        run(settings_from_flags())
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterable

# Imported before any logger is looked up: absl installs its Logger class then, which records the
# calling file. A plain "absl" logger created first would report absl's own file for every line.
from absl import logging as absl_logging  # noqa: F401

__all__ = ["QUIET_PACKAGES", "ThirdPartyInfoFilter", "install", "package_dirs"]

# Packages whose INFO records a recipe's reader never needs.
QUIET_PACKAGES = ("tensorflow", "tensorflow_datasets", "tf_keras", "keras")
# TensorFlow logs through the "tensorflow" logger; TFDS and the recipes through absl's.
_LOGGER_NAMES = ("tensorflow", "absl")


def package_dirs(packages: Iterable[str]) -> tuple[str, ...]:
    """The installation folders of those ``packages`` that are installed (none imported)."""
    dirs = []
    for name in packages:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(os.path.realpath(d) for d in spec.submodule_search_locations)
    return tuple(dirs)


class ThirdPartyInfoFilter(logging.Filter):
    """Drops records below WARNING logged from a file inside one of ``dirs``.

    Args:
      dirs: folders (package installations); by default those of :data:`QUIET_PACKAGES`.
    """

    def __init__(self, dirs: Iterable[str] | None = None):
        super().__init__()
        dirs = package_dirs(QUIET_PACKAGES) if dirs is None else dirs
        self.prefixes = tuple(os.path.join(os.path.realpath(d), "") for d in dirs)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return not os.path.realpath(record.pathname).startswith(self.prefixes)


def install() -> ThirdPartyInfoFilter:
    """Adds one :class:`ThirdPartyInfoFilter` to the TensorFlow and absl loggers.

    Calling it again replaces the filter instead of adding a second one.

    Returns:
      The installed filter.
    """
    quiet = ThirdPartyInfoFilter()
    for name in _LOGGER_NAMES:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, ThirdPartyInfoFilter)]:
            logger.removeFilter(old)
        logger.addFilter(quiet)
    return quiet
