"""The one place that decides which Keras tf-admm builds on.

TensorFlow 2.16+ ships Keras 3 as ``tf.keras``; the model-optimization toolkit (tfmot) works only
with the legacy Keras 2 package ``tf_keras``. tf-admm builds on ``tf_keras`` so that models move
freely between tfmot and tf-admm. Setting ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported
also makes ``tf.keras`` resolve to ``tf_keras`` for code that still spells it that way.

Every module of the tf_keras adapter imports ``keras`` and ``tf`` from here, never directly; the
Keras 3 adapter (:mod:`tf_admm.keras3`) imports ``keras`` (Keras 3) itself, and code that takes
either kind of model (``tflite_export``) names Keras 3 ``keras3`` from here.
"""

import contextlib
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The lines TensorFlow's shared libraries write to file descriptor 2 while they load, before
# absl logging is initialised, so that no setting silences them (TF 2.21: TF_CPP_MIN_LOG_LEVEL=3,
# ABSL_MIN_LOG_LEVEL and GLOG_minloglevel were tried): absl's notice that early messages go to
# stderr, and INFO lines in glog format ("I0000 00:00:1796323184.849949  32063 cudart_stub.cc:31]
# Could not find cuda drivers ...").
_EARLY_NOTICE = b"WARNING: All log messages before absl::InitializeLog() is called are written"
_INFO_LINE = re.compile(rb"^I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")


def startup_line_shown(line: bytes) -> bool:
    """Whether a line written while TensorFlow loads is passed on: all but absl's early-logging
    notice and, unless ``TF_CPP_MIN_LOG_LEVEL`` is 0, native INFO lines."""
    if line.startswith(_EARLY_NOTICE):
        return False
    quiet = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") not in ("", "0")
    return not (quiet and _INFO_LINE.match(line))


@contextlib.contextmanager
def _startup_lines_filtered():
    """Runs the block with file descriptor 2 captured, then writes back the lines that
    :func:`startup_line_shown` keeps (errors and warnings from the import among them)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [x for x in captured.read().splitlines(True) if startup_line_shown(x)]
            if kept:
                os.write(2, b"".join(kept))


with _startup_lines_filtered() if "tensorflow" not in sys.modules else contextlib.nullcontext():
    # Keras 3 is imported here too, for the Keras 3 adapter (tf_admm.keras3): on the
    # TensorFlow backend its import loads more of TensorFlow's native libraries, which write
    # the same lines.
    import keras as keras3
    import tensorflow as tf
    import tf_keras as keras

__all__ = ["keras", "keras3", "keras3_adapter", "tf"]


def keras3_adapter(model):
    """The Keras 3 adapter (:mod:`tf_admm.keras3`) if ``model`` is a Keras 3 model (``import
    keras``), else None: the public functions pick the adapter from the model they are given."""
    keras3 = sys.modules.get("keras")
    if keras3 is None or not isinstance(model, getattr(keras3, "Model", ())):
        return None
    from tf_admm import keras3 as adapter

    return adapter
