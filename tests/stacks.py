"""The same small model, data and ADMM state on every Keras stack, for ``tests/stacks_test.py``.

A stack is a Keras generation and a backend: ``tf_keras`` (Keras 2 on TensorFlow), and Keras 3
on the backend this process runs (``keras3_tensorflow`` in pytest's process, ``keras3_jax`` in
the subprocess that ``stacks_test.py`` starts with ``KERAS_BACKEND=jax``). tf_admm's public
functions take either kind of model; this module hides the few places where tests have to
touch Keras itself: building the model, compiling, seeding, reading variables on the host,
loading a file, and defining a callback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

import tf_admm
from tf_admm.compat import keras as tf_keras
from tf_admm.compat import keras3, tf
from tf_admm.testing import small_convnet

TF_KERAS = "tf_keras"
KERAS3 = f"keras3_{keras3.backend.backend()}"

# What the convnet's layers hold, as the golden counts of stacks_test.py are derived from them.
LAYER_SIZES = {"conv": 3 * 3 * 1 * 6, "depthwise": 3 * 3 * 6, "fc1": 96 * 24, "fc2": 24 * 3}
FIELDS = ("variable", "auxiliary", "dual", "mask", "rho")
COUNTERS = ("admm_step", "admm_epoch", "admm_round", "admm_phase")


class Stack:
    """One Keras stack: ``keras`` is its module (``tf_keras`` or Keras 3's ``keras``)."""

    def __init__(self, name: str):
        if name not in (TF_KERAS, KERAS3):
            raise ValueError(f"Expected a stack in {[TF_KERAS, KERAS3]}; received: {name!r}")
        self.name = name
        self.is_keras3 = name != TF_KERAS
        self.keras = keras3 if self.is_keras3 else tf_keras

    def __repr__(self) -> str:
        return self.name

    @property
    def admm_model_class(self) -> type:
        return tf_admm.keras3.AdmmModel if self.is_keras3 else tf_admm.AdmmModel

    @property
    def wrapper_class(self) -> type:
        return tf_admm.keras3.AdmmWrapper if self.is_keras3 else tf_admm.AdmmWrapper

    def reset(self, seed: int = 7) -> None:
        """A fresh Keras session and the same initial weights for the same seed."""
        if self.is_keras3:
            keras3.utils.clear_session()
        else:
            tf_keras.backend.clear_session()
        self.keras.utils.set_random_seed(seed)

    def host(self, value) -> np.ndarray:
        """A variable or tensor of this stack as a NumPy array."""
        if self.is_keras3:
            return np.asarray(keras3.ops.convert_to_numpy(value))
        return np.asarray(value.numpy() if hasattr(value, "numpy") else value)

    def convnet(self, name: str = "small", sequential: bool = False):
        """``tf_admm.testing.small_convnet`` built with this stack's Keras."""
        return small_convnet(name, sequential=sequential, keras_module=self.keras)

    def dense(self, name: str = "fc"):
        """A Sequential model with one Dense layer of 4 inputs and 2 outputs."""
        return self.keras.Sequential(
            [self.keras.Input((4,)), self.keras.layers.Dense(2, name=name)], name="one_dense"
        )

    def compile(self, model, learning_rate: float = 1e-2):
        """Compiles ``model`` in place with Adam and sparse categorical cross-entropy on logits."""
        model.compile(
            optimizer=self.keras.optimizers.Adam(learning_rate),
            loss=self.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    def load_model(self, path: str):
        """This stack's ``load_model``, without custom objects."""
        return self.keras.models.load_model(path)

    def callback(self, **hooks):
        """A callback of this stack's Keras whose methods are ``hooks`` (name: function)."""
        return type("Hooks", (self.keras.callbacks.Callback,), hooks)()

    def leaf_layers(self, model) -> list:
        """The model's layers, nested models flattened."""
        if self.is_keras3:
            return list(tf_admm.keras3.registry.leaf_layers(model))
        return list(tf_admm.cloning.leaf_layers(model))

    def wrapped(self, model) -> list[str]:
        """Names of the model's ADMM wrappers."""
        return [la.name for la in self.leaf_layers(model) if isinstance(la, self.wrapper_class)]

    def kernels(self, model) -> dict[str, np.ndarray]:
        """{layer name: first weight} of a plain (stripped) model's compressible layers."""
        return {name: self.host(model.get_layer(name).weights[0]) for name in LAYER_SIZES}

    def slot(self, admm, layer_name: str):
        """The ADMM state of ``layer_name``'s one compressed weight."""
        (wrapper,) = [w for w in admm.admm_wrappers if w.layer.name == layer_name]
        (slot,) = wrapper.slots
        return slot

    def state(self, admm) -> dict[str, Any]:
        """Every compressed weight's W, Z, U, mask and rho, and the ADMM counters."""
        state = {}
        for wrapper in admm.admm_wrappers:
            for slot in wrapper.slots:
                for field in FIELDS:
                    value = self.host(getattr(slot, field))
                    state[f"{wrapper.layer.name}.{field}"] = value
        for counter in COUNTERS:
            state[counter] = int(self.host(getattr(admm, counter)))
        return state

    def replicas(self, variable) -> int:
        """On how many devices ``variable`` lives (a mirrored or replicated variable: 2)."""
        inner = variable.value if self.is_keras3 else variable
        sharding = getattr(inner, "sharding", None)  # JAX
        if sharding is not None:
            return len(sharding.device_set)
        return len(getattr(inner, "values", None) or [inner])

    @contextlib.contextmanager
    def distributed(self, replicas: int = 2) -> Iterator[str]:
        """Data parallelism over ``replicas`` CPU devices, as the backend offers it: a
        ``tf.distribute.MirroredStrategy`` over virtual CPUs (root conftest.py makes two) on
        TensorFlow, ``keras.distribution.DataParallel`` on JAX (started with
        ``XLA_FLAGS=--xla_force_host_platform_device_count=2``). Yields what it used."""
        if self.is_keras3 and keras3.backend.backend() == "jax":
            devices = keras3.distribution.list_devices("cpu")[:replicas]
            if len(devices) < replicas:
                raise RuntimeError(f"Expected {replicas} JAX CPU devices; received {devices}")
            with keras3.distribution.DataParallel(devices=devices).scope():
                yield f"DataParallel({devices})"
            return
        devices = [d.name for d in tf.config.list_logical_devices("CPU")][:replicas]
        if len(devices) < replicas:
            raise RuntimeError(f"Expected {replicas} virtual CPUs; received {devices}")
        strategy = tf.distribute.MirroredStrategy(devices)
        with strategy.scope():
            yield f"MirroredStrategy({devices})"
