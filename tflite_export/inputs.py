"""What ``export`` is given: the model, the path, and the inputs it verifies files with.

:func:`check_model` accepts a plain ``tf_keras`` model (no ``tf_admm.AdmmWrapper``) with known
inputs; a built subclassed model is called on ``keras.Input`` tensors of its input signature,
which gives the converter a functional model. It also accepts a plain Keras 3 model (``import
keras``: functional or Sequential with known inputs, e.g. from :func:`tf_admm.strip`) on the
TensorFlow backend, whose calls the converter traces like a tf_keras model's. The rest of the
exporter reads a model of either kind through :func:`input_specs`, :func:`input_names`,
:func:`output_names` and :func:`keras_outputs` (weights through
:func:`tflite_export.keras_weights.kernel_weights`). :func:`prepare_inputs` turns the
``representative_data`` argument (arrays, a dict, an iterable, a callable; see
:func:`tflite_export.export`) into one array per model input, or draws random samples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import tf_admm
from tf_admm import subclassed
from tf_admm.compat import keras, keras3, tf
from tflite_export.errors import ExportError

__all__ = [
    "MAX_REPRESENTATIVE_SAMPLES",
    "batch_size_of",
    "check_model",
    "check_path",
    "input_names",
    "input_specs",
    "is_keras3",
    "keras_outputs",
    "output_names",
    "prepare_inputs",
]


def is_keras3(model: Any) -> bool:
    """Whether ``model`` is a Keras 3 model (``import keras``), not a tf_keras one."""
    return isinstance(model, keras3.Model)


def check_model(model: Any) -> keras.Model:
    """``model`` checked: a plain tf_keras model with known inputs, or a plain Keras 3 one on
    the TensorFlow backend (:func:`_check_keras3`). A subclassed tf_keras model comes back as a
    functional model calling it on inputs of its known signature."""
    if is_keras3(model):
        return _check_keras3(model)
    if not isinstance(model, keras.Model):
        raise ExportError(
            f"Expected a tf_keras Model (tf_admm.compat.keras) or a Keras 3 Model (import "
            f"keras); received: model={type(model).__module__}.{type(model).__name__}"
        )
    wrapped = [m.name for m in model.submodules if isinstance(m, tf_admm.AdmmWrapper)]
    if isinstance(model, tf_admm.AdmmWrapper):
        wrapped.insert(0, model.name)
    if wrapped:
        raise ExportError(
            "Expected a stripped model without tf_admm wrappers: call tf_admm.strip(model) "
            f"before exporting; received: AdmmWrapper layers={wrapped}"
        )
    if model.built and model.inputs:
        return model
    return _functional(model)


def _check_keras3(model: Any) -> Any:
    """A Keras 3 ``model`` checked: the TensorFlow backend (the converter traces TensorFlow
    functions), no tf_admm Keras 3 wrappers, and known inputs (functional or Sequential)."""
    backend = keras3.backend.backend()
    if backend != "tensorflow":
        raise ExportError(
            f"Model {model.name!r}: Expected a Keras 3 model on the TensorFlow backend (the "
            f"TFLite converter traces TensorFlow functions); received: Keras 3 backend "
            f"{backend!r} (save it with model.save('model.keras'), then load it with "
            f"keras.models.load_model in a process started with KERAS_BACKEND=tensorflow and "
            f"export it there)"
        )
    from tf_admm import keras3 as adapter  # the Keras 3 adapter's classes

    layers = list(model._flatten_layers(include_self=True))
    # Worded as for tf_keras: the wrappers by name, else the AdmmModel itself.
    wrapped = [layer.name for layer in layers if isinstance(layer, adapter.AdmmWrapper)]
    admm_models = [layer.name for layer in layers if isinstance(layer, adapter.AdmmModel)]
    if wrapped or admm_models:
        received = f"AdmmWrapper layers={wrapped}" if wrapped else f"AdmmModel={admm_models}"
        raise ExportError(
            "Expected a stripped model without tf_admm wrappers: call tf_admm.strip(model) "
            f"before exporting; received: {received}"
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a Sequential without inputs raises
        inputs = None
    if not inputs:
        raise ExportError(
            f"Model {model.name!r} ({type(model).__name__}): Expected a Keras 3 functional or "
            "Sequential model with known inputs; received: a model without inputs (start a "
            "Sequential with keras.Input(shape); a subclassed Keras 3 model is exported by "
            "wrapping it: keras.Model(inputs, model(inputs)) with inputs = keras.Input(shape))"
        )
    return model


def _keras3_name(tensor: Any) -> str:
    """The name of the layer that made a Keras 3 symbolic tensor (an ``Input``'s name)."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(getattr(history, "operation", None), "name", None) or tensor.name


def input_names(model: Any) -> list[str]:
    """The model's input names, in input order (the file's input names)."""
    if is_keras3(model):
        return [_keras3_name(tensor) for tensor in model.inputs]
    return list(model.input_names)


def output_names(model: Any) -> list[str]:
    """The model's output names, in output order (the file's output names)."""
    if is_keras3(model):
        names = getattr(model, "output_names", None)  # Functional has them, Sequential not
        return list(names) if names else [_keras3_name(tensor) for tensor in model.outputs]
    return list(model.output_names)


def input_specs(model: Any) -> list[tf.TensorSpec]:
    """One ``tf.TensorSpec`` per model input (batch axis included), named by
    :func:`input_names`: the shape and dtype of each input whatever the Keras."""
    specs = []
    for tensor, name in zip(model.inputs, input_names(model)):
        shape = list(tensor.shape) if is_keras3(model) else tensor.shape.as_list()
        specs.append(tf.TensorSpec(shape, tf.as_dtype(tensor.dtype), name=name))
    return specs


def _functional(model: keras.Model) -> keras.Model:
    """A functional model calling ``model`` (subclassed, or a Sequential without inputs) on
    ``keras.Input`` tensors of the signature it was called or built with.

    Inputs are named ``input`` (one tensor), ``input_<i>`` (a list) or by their key (a dict),
    so that the file's signature does not depend on Keras' name counters.
    """
    if isinstance(model, keras.Sequential):
        raise ExportError(
            f"Model {model.name!r} (Sequential): Expected a built model with known inputs; "
            "received: a Sequential model without an input shape (start it with "
            "keras.Input(shape), or call it on a batch first)"
        )
    try:
        signature = subclassed.input_signature(model)
    except ValueError as error:
        # Names the model and what is missing (a first call or model.build(input_shape)).
        raise ExportError(str(error)) from None

    def symbolic(spec, name=None):
        return keras.Input(shape=tuple(spec.shape[1:]), dtype=spec.dtype, name=name)

    if isinstance(signature, tf.TensorSpec):
        inputs = symbolic(signature, "input")
    elif isinstance(signature, Mapping) and all(
        isinstance(spec, tf.TensorSpec) for spec in signature.values()
    ):
        inputs = {key: symbolic(spec, str(key)) for key, spec in signature.items()}
    elif isinstance(signature, (list, tuple)) and all(
        isinstance(spec, tf.TensorSpec) for spec in signature
    ):
        inputs = [symbolic(spec, f"input_{i}") for i, spec in enumerate(signature)]
    else:  # nested structures: Keras names them
        inputs = tf.nest.map_structure(symbolic, signature)
    try:
        outputs = model(inputs)
    except Exception as error:  # noqa: BLE001 - call() may raise anything
        raise ExportError(
            f"Model {model.name!r} ({type(model).__name__}): Expected a call() that runs on "
            f"keras.Input tensors of its input signature {signature}; received: "
            f"{type(error).__name__}: {error}"
        ) from None
    return keras.Model(inputs, outputs, name=model.name)


def check_path(path: Any) -> str:
    """``path`` as a str, after checking that a file can be written there.

    Raises:
      ExportError: for a directory, a missing parent directory or a read-only place.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ExportError(f"Expected path to be a str or os.PathLike; received: path={path!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ExportError(f"Expected a file path; received: path={path!r} is a directory")
    if not os.path.isdir(directory):
        raise ExportError(
            f"Expected a path in an existing directory; received: path={path!r} "
            f"(no directory {directory!r})"
        )
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ExportError(f"Expected a writable path; received: path={path!r} (permission denied)")
    return path


# Samples read at most from an iterable representative_data (a dataset may repeat forever).
MAX_REPRESENTATIVE_SAMPLES = 1000


def prepare_inputs(
    model: keras.Model, representative_data: Any, batch_size: int, seed: int
) -> list[np.ndarray]:
    """One array per model input (batch first): the representative data, or random samples.

    See :func:`export` for the accepted forms of ``representative_data``.
    """
    if representative_data is None:
        return _random_inputs(model, batch_size, seed)
    data = representative_data
    if callable(data) and not _is_arrays(data):
        data = data()
    count = len(model.inputs)
    names = input_names(model)
    if isinstance(data, Mapping):
        missing = [name for name in names if name not in data]
        if missing:
            raise ExportError(
                f"Expected representative_data with a key per model input "
                f"{names}; received: keys={sorted(map(str, data))}"
            )
        return _input_arrays(model, [data[name] for name in names])
    if _is_arrays(data) or (isinstance(data, (list, tuple)) and len(data) == count):
        arrays = [data] if not isinstance(data, (list, tuple)) else list(data)
        if len(arrays) != count:
            raise ExportError(
                f"Expected representative_data with one array per model input "
                f"({count}); received: {len(arrays)} arrays"
            )
        return _input_arrays(model, arrays)
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise ExportError(
            f"Expected representative_data as arrays, a dict, an iterable or a callable "
            f"returning one; received: {type(data).__name__}"
        )
    return _input_arrays(model, _read_iterable(model, data))


def _is_arrays(value: Any) -> bool:
    return isinstance(value, np.ndarray) or tf.is_tensor(value)


def _random_inputs(model: keras.Model, batch_size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in input_specs(model):
        shape = [batch_size if d is None else d for d in tensor.shape.as_list()]
        if None in shape[1:]:
            raise ExportError(
                f"Expected representative_data for input {tensor.name!r} of unknown shape "
                f"{tensor.shape.as_list()}; received: representative_data=None"
            )
        dtype = tensor.dtype.as_numpy_dtype
        if np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            arrays.append(rng.standard_normal(shape).astype(dtype))
    return arrays


def _input_arrays(model: keras.Model, data: Sequence[Any]) -> list[np.ndarray]:
    """``data`` (one array-like per input) as arrays of the inputs' dtypes, shapes checked."""
    arrays = []
    for tensor, array in zip(input_specs(model), data):
        array = np.asarray(array, dtype=tensor.dtype.as_numpy_dtype)
        wanted = tensor.shape.as_list()
        if array.ndim != len(wanted) or any(
            w is not None and w != d for w, d in zip(wanted[1:], array.shape[1:])
        ):
            raise ExportError(
                f"Expected representative_data for input {tensor.name!r} with shape "
                f"{tensor.shape.as_list()}; received: shape={list(array.shape)}"
            )
        if array.shape[0] == 0:
            raise ExportError(
                f"Expected at least one sample in representative_data; received: "
                f"shape={list(array.shape)} for input {tensor.name!r}"
            )
        arrays.append(array)
    return arrays


def _fits_input(value: Any, tensor) -> bool:
    """Whether ``value`` is an array-like shaped like one sample or a batch of ``tensor``."""
    if not (_is_arrays(value) or isinstance(value, (int, float, np.generic))):
        return False
    shape = tuple(np.shape(value))
    wanted = tensor.shape.as_list()[1:]
    if len(shape) == len(wanted) + 1:
        shape = shape[1:]
    return len(shape) == len(wanted) and all(w is None or w == d for w, d in zip(wanted, shape))


def _element_inputs(model: keras.Model, element: Any, depth: int = 0) -> list[np.ndarray]:
    """One element of an iterable as one batch per input (a lone sample gets a batch axis)."""
    specs = input_specs(model)
    if isinstance(element, Mapping):
        names = input_names(model)
        if not all(name in element for name in names):
            raise ExportError(
                f"Expected representative_data elements with a key per model input "
                f"{names}; received: keys={sorted(map(str, element))}"
            )
        parts = [element[name] for name in names]
    elif isinstance(element, (list, tuple)):
        if len(element) == len(specs) and all(
            _fits_input(part, tensor) for part, tensor in zip(element, specs)
        ):
            parts = list(element)
        elif 1 <= len(element) <= 3 and depth == 0:
            # Keras' (inputs, labels[, sample weights]).
            return _element_inputs(model, element[0], depth + 1)
        else:
            raise ExportError(
                f"Expected representative_data elements shaped like the model inputs "
                f"{[t.shape.as_list() for t in specs]}; received: a {type(element).__name__}"
                f" of {len(element)} items"
            )
    elif len(model.inputs) == 1:
        parts = [element]
    else:
        raise ExportError(
            f"Expected representative_data elements with one array per model input "
            f"({len(model.inputs)}); received: {type(element).__name__}"
        )
    batches = []
    for part, tensor in zip(parts, specs):
        array = np.asarray(part)
        if array.ndim == len(tensor.shape) - 1:
            array = array[None]
        batches.append(array)
    return batches


def _read_iterable(model: keras.Model, data: Any) -> list[np.ndarray]:
    collected: list[list[np.ndarray]] = [[] for _ in model.inputs]
    count = 0
    for element in data:
        batches = _element_inputs(model, element)
        for parts, batch in zip(collected, batches):
            parts.append(batch)
        count += int(batches[0].shape[0]) if batches[0].ndim else 1
        if count >= MAX_REPRESENTATIVE_SAMPLES:
            break
    if not count:
        raise ExportError(
            "Expected representative_data to yield at least one sample; received: an empty "
            f"{type(data).__name__}"
        )
    try:
        arrays = [np.concatenate(parts, axis=0) for parts in collected]
    except ValueError as error:
        raise ExportError(
            f"Expected representative_data elements of one shape per input; received: {error}"
        ) from None
    return [array[:MAX_REPRESENTATIVE_SAMPLES] for array in arrays]


def keras_outputs(model: keras.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The Keras model's outputs on ``inputs``, one array per output (in ``output_names``
    order for a dict)."""
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    if not isinstance(outputs, (list, tuple)):
        if isinstance(outputs, Mapping):
            outputs = [outputs[name] for name in output_names(model)]
        else:
            outputs = [outputs]
    return [np.asarray(o) for o in outputs]


def batch_size_of(inputs: Sequence[np.ndarray]) -> int:
    """Examples in the verification batch; 0 for a model with no (or scalar) inputs."""
    return int(inputs[0].shape[0]) if inputs and inputs[0].ndim else 0
