"""Packaging for tf-admm: ADMM weight pruning and quantization for TensorFlow/Keras."""

import setuptools

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
    packages=setuptools.find_packages(include=["tf_admm*", "recipes*", "tflite_export*", "bench*"]),
    package_data={"recipes": ["configs/*.json"]},
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "tf_keras>=2.16,<2.22",
        "tensorflow-model-optimization>=0.8,<0.9",
        "tensorflow-datasets>=4.9,<5",
        "importlib_resources>=5",
        "absl-py>=1.0,<3",
        "tensorboard>=2.16",
        "numpy>=1.26",
        "ai-edge-litert>=2.0",
        "flatbuffers>=24.3.25",
    ],
    extras_require={
        # TFLite Micro ships only nightly builds; the LUT format behaviour was checked on this one.
        "tflm": ["tflite-micro==0.dev20261023182759", "pyyaml>=6"],
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "hypothesis>=6.0",
            "ruff>=0.5",
            "matplotlib>=3.7",
            "tflite-micro==0.dev20261023182759",
            "pyyaml>=6",
            "pdoc>=14",
        ],
        "docs": ["pdoc>=14"],
        "bench": ["matplotlib>=3.7"],
    },
)
