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


@pytest.fixture(scope="session")
def mnist_data_dir(request, tmp_path_factory):
    """A TFDS data directory with MNIST prepared (offline), shared by the whole session.

    Kept in pytest's cache folder when it is available, so local reruns skip the build.
    """
    from recipes import data

    cache = getattr(request.config, "cache", None)
    if cache is not None:
        data_dir = str(cache.mkdir("tf_admm_tfds"))
        download_dir = str(cache.mkdir("tf_admm_offline_data"))
    else:
        data_dir = str(tmp_path_factory.mktemp("tfds"))
        download_dir = None
    return data.prepare_mnist(data_dir, download_dir=download_dir)
