"""Test set-up shared by every test: two virtual CPUs, quiet TensorFlow, fixed seeds.

The logical devices must exist before TensorFlow initialises its runtime, hence module import
time here, before any test module runs an op.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


@pytest.fixture(autouse=True)
def _seed():
    import tf_keras

    tf_keras.utils.set_random_seed(1234)
    yield
    tf_keras.backend.clear_session()
