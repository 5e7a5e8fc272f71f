import logging
import os
import types

import pytest
from absl import logging as absl_logging

from recipes import image_flags, image_recipe, lenet5_mnist, quiet_logs, stacks, training
from tf_admm.compat import tf


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def loggers():
    """The absl and TensorFlow loggers at INFO with a capturing handler and no quiet filter,
    restored afterwards."""
    capture = _Capture()
    names = ("absl", "tensorflow")
    saved = [
        (logging.getLogger(n), logging.getLogger(n).level, list(logging.getLogger(n).filters))
        for n in names
    ]
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.INFO)
    for logger, _, filters in saved:
        logger.setLevel(logging.INFO)
        logger.addHandler(capture)
        # A recipe's main run earlier in this process may have installed the filter already.
        for quiet in [f for f in filters if isinstance(f, quiet_logs.ThirdPartyInfoFilter)]:
            logger.removeFilter(quiet)
    yield capture
    absl_logging.set_verbosity(verbosity)
    for logger, level, filters in saved:
        logger.removeHandler(capture)
        logger.setLevel(level)
        logger.filters[:] = filters


def _record(logger_name, level, pathname, message):
    return logging.getLogger(logger_name).makeRecord(
        logger_name, level, pathname, 1, message, (), None
    )


def _checkpoint(tmp_path, name):
    tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(os.fspath(tmp_path / name))


def test_checkpoint_sharding_info_line_is_dropped_once_installed(loggers, tmp_path):
    # The line BackupAndRestore causes every epoch, logged by TensorFlow's functional_saver.
    _checkpoint(tmp_path, "before")
    assert any("Sharding callback duration" in m for m in loggers.messages)
    loggers.messages.clear()
    quiet_logs.install()
    _checkpoint(tmp_path, "after")
    absl_logging.info("Round 1/8 (ADMM) done")  # logged from this file, not from TensorFlow
    assert loggers.messages == ["Round 1/8 (ADMM) done"]


@pytest.mark.parametrize("logger_name", ["absl", "tensorflow"])
def test_tensorflow_info_dropped_but_warnings_and_recipe_info_pass(loggers, logger_name):
    quiet_logs.install()
    logger = logging.getLogger(logger_name)
    internal = tf.train.Checkpoint.__module__.replace(".", "/")
    tf_file = os.path.join(os.path.dirname(os.path.dirname(tf.__file__)), internal + ".py")
    logger.handle(_record(logger_name, logging.INFO, tf_file, "tf info"))
    logger.handle(_record(logger_name, logging.DEBUG, tf_file, "tf debug"))
    logger.handle(_record(logger_name, logging.WARNING, tf_file, "tf warning"))
    logger.handle(_record(logger_name, logging.INFO, lenet5_mnist.__file__, "recipe info"))
    logger.handle(_record(logger_name, logging.INFO, training.__file__, "shared info"))
    assert loggers.messages == ["tf warning", "recipe info", "shared info"]


def test_filter_drops_only_files_inside_the_given_folders(tmp_path):
    quiet = quiet_logs.ThirdPartyInfoFilter([os.fspath(tmp_path / "pkg")])
    inside = _record("absl", logging.INFO, os.fspath(tmp_path / "pkg" / "m.py"), "x")
    sibling = _record("absl", logging.INFO, os.fspath(tmp_path / "pkg2" / "m.py"), "x")
    error = _record("absl", logging.ERROR, os.fspath(tmp_path / "pkg" / "m.py"), "x")
    assert not quiet.filter(inside)
    assert quiet.filter(sibling)  # a folder whose name merely starts the same is not inside
    assert quiet.filter(error)


def test_default_folders_include_tensorflow_and_tfds():
    import tensorflow_datasets as tfds

    prefixes = quiet_logs.ThirdPartyInfoFilter().prefixes
    for module in (tf, tfds):
        folder = os.path.join(os.path.realpath(os.path.dirname(module.__file__)), "")
        assert folder in prefixes


def test_install_twice_leaves_one_filter(loggers):
    first = quiet_logs.install()
    second = quiet_logs.install()
    for name in ("absl", "tensorflow"):
        installed = [
            f
            for f in logging.getLogger(name).filters
            if isinstance(f, quiet_logs.ThirdPartyInfoFilter)
        ]
        assert installed == [second]
    assert first is not second


def _installed():
    return [
        f
        for f in logging.getLogger("absl").filters
        if isinstance(f, quiet_logs.ThirdPartyInfoFilter)
    ]


def test_lenet5_main_installs_the_filter_before_running(loggers, monkeypatch):
    seen = []
    # The stack this process runs, so that main does not restart the command on another backend.
    settings = types.SimpleNamespace(stack=stacks.Stack.TF_KERAS)
    monkeypatch.setattr(lenet5_mnist, "settings_from_flags", lambda: settings)
    monkeypatch.setattr(lenet5_mnist, "run", lambda settings: seen.append(_installed()))
    lenet5_mnist.main(["lenet5_mnist"])
    assert len(seen) == 1 and len(seen[0]) == 1


def test_image_recipe_main_installs_the_filter_before_running(loggers, monkeypatch):
    seen = []
    monkeypatch.setattr(image_flags, "image_settings_from_flags", lambda values: "settings")
    monkeypatch.setattr(
        image_recipe, "run_image_recipe", lambda task, settings: seen.append(_installed())
    )
    image_flags.main_for("task", values=None)(["vgg16_cifar10"])
    assert len(seen) == 1 and len(seen[0]) == 1


def test_installed_first_in_a_fresh_process_it_still_drops_tensorflow_lines(tmp_path):
    # As a recipe's main does: the filter goes in before TensorFlow is imported. Had it made a
    # plain "absl" logger first, absl's records would name absl's own file and pass the filter.
    import subprocess
    import sys

    code = (
        "import logging, sys\n"
        "from recipes import quiet_logs\n"
        "quiet_logs.install()\n"
        "from tf_admm.compat import tf\n"
        "from absl import logging as absl_logging\n"
        "absl_logging.set_verbosity(absl_logging.INFO)\n"
        "logging.getLogger('absl').addHandler(logging.StreamHandler(sys.stdout))\n"
        f"tf.train.Checkpoint(v=tf.Variable([1.0])).write({str(tmp_path / 'c')!r})\n"
        "absl_logging.info('recipe line')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(quiet_logs.__file__)))
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "recipe line" in done.stdout
    assert "Sharding callback duration" not in done.stdout + done.stderr
