"""Packaging for tf-admm: ADMM weight pruning and quantization for TensorFlow/Keras."""

import setuptools
from setuptools.command.build_py import build_py


class BuildPyWithoutTests(build_py):
    """Leaves the ``*_test.py`` modules beside the code out of wheels: they need the checkout
    (its conftest.py, pyproject.toml and the recipes some of them import)."""

    def find_package_modules(self, package, package_dir):
        modules = super().find_package_modules(package, package_dir)
        return [entry for entry in modules if not entry[1].endswith("_test")]


setuptools.setup(
    name="tf-admm",
    version="0.1.0.dev0",
    description=(
        "ADMM weight pruning, clustering and quantization for TensorFlow/Keras, "
        "with TFLite export and storage accounting."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # recipes/ and bench/ run from the checkout (`python -m recipes.lenet5_mnist`); installed as
    # top-level packages they would collide with any other project's `recipes` or `bench`.
    packages=setuptools.find_packages(
        include=["tf_admm", "tf_admm.*", "tflite_export", "tflite_export.*"]
    ),
    cmdclass={"build_py": BuildPyWithoutTests},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf_keras>=2.16,<2.22",
        "tensorflow-model-optimization>=0.8,<0.9",
        "tensorflow-datasets>=4.9,<5",
        # tensorflow-datasets needs it (etils.epath) to read a dataset's files but does not
        # declare it: without it, building MNIST fails with "No module named importlib_resources".
        "importlib_resources>=5",
        "absl-py>=1.0,<3",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "ai-edge-litert>=2.0",
        "flatbuffers>=24.3.25",
    ],
    extras_require={
        # TFLite Micro export (target="tflm"/"tflm_int8"). It ships only nightly builds; the LUT
        # format behaviour was checked on this one. Its tests skip without it; CI installs it.
        "tflm": ["tflite-micro==0.dev20261023182759", "pyyaml>=6"],
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "hypothesis>=6.0",
            "ruff>=0.5",
            "matplotlib>=3.7",
            "pdoc>=14",
            # tools/wheel_check.sh builds the wheel with it.
            "build>=1",
            # The Keras 3 adapter's tests run on the JAX backend too (CPU wheel).
            "jax>=0.4.30",
        ],
        "docs": ["pdoc>=14"],
        "bench": ["matplotlib>=3.7"],
    },
)
