"""Which weights of a layer ADMM may compress, and where they live.

A weight is named by its **attribute path** from the layer: ``"kernel"`` for a Dense layer,
``"cell.recurrent_kernel"`` for an LSTM, ``"forward_layer.cell.kernel"`` for a Bidirectional
LSTM, ``"_query_dense.kernel"`` for a MultiHeadAttention, ``"cells.1.kernel"`` inside stacked
cells (a number indexes a list). The wrapper hands the compressed tensor to the layer through
that attribute while the layer runs, so any layer that reads its weights through attributes in
``call`` can be compressed.

Built-in layers are listed in a table from class to paths; a subclass of a listed class
inherits its entry (a ``class ScaledDense(Dense)`` compresses ``kernel``) unless it defines
``get_admm_weights``. Layers that contain layers (RNN, Bidirectional, TimeDistributed,
MultiHeadAttention) name the weights of what they contain. A custom layer opts in by
implementing :class:`CompressibleLayer`, i.e. a ``get_admm_weights()`` method that returns the
attribute names (or the variables themselves) of its compressible weights::

    class Gated(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=(input_shape[-1], 8))
        def call(self, x):
            return tf.sigmoid(x @ self.w)
        def get_admm_weights(self):
            return ["w"]

Any other variable of any layer can be chosen by a rule's ``weights``, by attribute path or by
variable name (:func:`find`).
"""

from __future__ import annotations

from collections.abc import Callable

from tf_admm import layouts
from tf_admm.compat import keras, tf

__all__ = [
    "CompressibleLayer",
    "compressible_weights",
    "filter_bias",
    "find",
    "reachable",
    "resolve",
    "structure_layout",
    "supports",
    "variable",
    "variable_paths",
]

_layers = keras.layers

Paths = tuple[str, ...]


def _inside(prefix: str, layer) -> Paths:
    """The compressible paths of a contained layer, under ``prefix``."""
    if not isinstance(layer, keras.layers.Layer) or not supports(layer):
        return ()
    return tuple(f"{prefix}.{path}" for path in compressible_weights(layer))


def _cell_paths(cell) -> Paths:
    """An RNN cell's weights: registered ones, else its kernel and recurrent kernel."""
    if supports(cell):
        return compressible_weights(cell)
    names = ("kernel", "recurrent_kernel")
    if all(isinstance(getattr(cell, n, None), tf.Variable) for n in names):
        return names  # LSTM/GRU/SimpleRNN/ConvLSTM cells and most custom cells.
    return ()


def _rnn(layer) -> Paths:
    return tuple(f"cell.{path}" for path in _cell_paths(layer.cell))


def _stacked(layer) -> Paths:
    paths: list[str] = []
    for index, cell in enumerate(layer.cells):
        paths.extend(f"cells.{index}.{path}" for path in _cell_paths(cell))
    return tuple(paths)


def _bidirectional(layer) -> Paths:
    return _inside("forward_layer", layer.forward_layer) + _inside(
        "backward_layer", layer.backward_layer
    )


def _time_distributed(layer) -> Paths:
    return _inside("layer", layer.layer)


_ATTENTION_PROJECTIONS = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


def _attention(layer) -> Paths:
    # The projections exist once the layer knows its input shapes (called, or rebuilt from a
    # config that remembers them).
    return tuple(
        f"{name}.kernel"
        for name in _ATTENTION_PROJECTIONS
        if isinstance(getattr(getattr(layer, name, None), "kernel", None), tf.Variable)
    )


# Looked up along the class's MRO, most derived first: DepthwiseConv2D subclasses Conv2D in
# Keras but keeps another weight, so it has its own entry.
_REGISTRY: dict[type, Paths | Callable[[keras.layers.Layer], Paths]] = {
    _layers.Dense: ("kernel",),
    _layers.EinsumDense: ("kernel",),
    _layers.Conv1D: ("kernel",),
    _layers.Conv2D: ("kernel",),
    _layers.Conv3D: ("kernel",),
    _layers.Conv1DTranspose: ("kernel",),
    _layers.Conv2DTranspose: ("kernel",),
    _layers.Conv3DTranspose: ("kernel",),
    _layers.DepthwiseConv1D: ("depthwise_kernel",),
    _layers.DepthwiseConv2D: ("depthwise_kernel",),
    _layers.SeparableConv1D: ("depthwise_kernel", "pointwise_kernel"),
    _layers.SeparableConv2D: ("depthwise_kernel", "pointwise_kernel"),
    _layers.Embedding: ("embeddings",),
    _layers.LocallyConnected1D: ("kernel",),
    _layers.LocallyConnected2D: ("kernel",),
    _layers.LSTMCell: ("kernel", "recurrent_kernel"),
    _layers.GRUCell: ("kernel", "recurrent_kernel"),
    _layers.SimpleRNNCell: ("kernel", "recurrent_kernel"),
    # LSTM, GRU, SimpleRNN, ConvLSTM1D/2D/3D and RNN(cell) are all RNN subclasses.
    _layers.RNN: _rnn,
    _layers.StackedRNNCells: _stacked,
    _layers.Bidirectional: _bidirectional,
    _layers.TimeDistributed: _time_distributed,
    _layers.MultiHeadAttention: _attention,
}


# Structured pruning's layouts live in tf_admm.layouts, one table for both Keras generations.
STRUCTURED_LAYERS = layouts.STRUCTURED_LAYERS


def structure_layout(layer: keras.layers.Layer, path: str) -> str | None:
    """The GEMM-view layout (``"dense"`` or ``"depthwise"``) of weight ``path`` of ``layer``,
    or None if the weight has no filter/channel structure that structured pruning knows
    (:func:`tf_admm.layouts.structure_layout`)."""
    return layouts.structure_layout(layer, path)


def filter_bias(layer: keras.layers.Layer, path: str) -> str | None:
    """The attribute of the bias that goes with the filters of weight ``path`` (``"bias"`` for
    a Dense/Conv kernel or a depthwise kernel), or None (no bias, or a separable convolution,
    whose bias belongs to its pointwise filters)."""
    if not layouts.filter_bias_follows(layer, path):
        return None
    return "bias" if isinstance(vars(layer).get("bias"), tf.Variable) else None


class CompressibleLayer:
    """Interface for custom layers: name the weights that ADMM may compress."""

    def get_admm_weights(self) -> list[str | tf.Variable]:
        """Attribute names (or variables) of the compressible weights of this layer."""
        raise NotImplementedError


def _own_getter(layer):
    """The layer's get_admm_weights, unless a registered class above it is found first."""
    getter = getattr(layer, "get_admm_weights", None)
    return getter if callable(getter) else None


def _entry(layer):
    """(registered class, its entry) along the layer's MRO, or (None, None)."""
    for cls in type(layer).__mro__:
        if "get_admm_weights" in vars(cls):
            return None, None  # The class (or a base below a registered one) names its own.
        if cls in _REGISTRY:
            return cls, _REGISTRY[cls]
    return None, None


def _registered(layer) -> Paths | None:
    cls, entry = _entry(layer)
    if cls is None:
        return None
    return entry(layer) if callable(entry) else entry


def supports(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` offers compressible weights (registered or through the interface)."""
    if _own_getter(layer) is not None and _entry(layer)[0] is None:
        return True
    return bool(_registered(layer))


def compressible_weights(layer: keras.layers.Layer) -> Paths:
    """Attribute paths of the weights ADMM compresses by default in a built layer.

    Raises:
      ValueError: naming the layer, if it offers no compressible weights.
    """
    cls, _ = _entry(layer)
    getter = _own_getter(layer)
    if cls is None and getter is not None:
        names = [item if isinstance(item, str) else find(layer, item) for item in getter()]
        if not names:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}): Expected get_admm_weights() to "
                "name at least one weight; received: []"
            )
        for name in names:
            variable(layer, name)
        return tuple(names)
    paths = _registered(layer)
    if not paths:
        if cls is not None:
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}) has no compressible weights: "
                f"its {cls.__name__} entry names none in this layer (an RNN over a cell without "
                "kernels, or an attention layer not built yet); name them with a rule's weights"
            )
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) has no compressible weights: "
            f"Expected one of {sorted(t.__name__ for t in _REGISTRY)}, a subclass of one, or a "
            "layer implementing get_admm_weights() (see tf_admm.CompressibleLayer); or name "
            "its variables with a rule's weights"
        )
    for path in paths:
        if not isinstance(_walk(layer, path), tf.Variable):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}): Expected the weights of its "
                f"base class {cls.__name__}, {list(paths)}, among its variables "
                f"{sorted(variable_paths(layer))}; define get_admm_weights() to name them"
            )
    return paths


# Attribute paths.

_MISSING = object()


def _step(owner, part: str):
    if part.isdigit() and isinstance(owner, (list, tuple)):
        index = int(part)
        return owner[index] if index < len(owner) else _MISSING
    return getattr(owner, part, _MISSING)


def _walk(layer, path: str):
    value = layer
    for part in path.split("."):
        value = _step(value, part)
        if value is _MISSING:
            return _MISSING
    return value


def resolve(layer: keras.layers.Layer, path: str) -> tuple[object, str]:
    """``(owner, attribute)`` such that ``getattr(owner, attribute)`` is the variable at
    ``path`` (an attribute path as in :func:`variable_paths`).

    Raises:
      ValueError: naming the layer and listing its variables, if ``path`` is none of them.
    """
    *parents, attribute = path.split(".")
    owner = _walk(layer, ".".join(parents)) if parents else layer
    # The variable must sit in the owner's own attributes (an RNN's ``kernel`` property reads
    # its cell's: the wrapper could not hand the layer another tensor there).
    if owner is _MISSING or not isinstance(vars(owner).get(attribute), tf.Variable):
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}): Expected a weight among its "
            f"variables {sorted(variable_paths(layer))}; received: weight={path!r}"
        )
    return owner, attribute


def reachable(layer: keras.layers.Layer, path: str) -> bool:
    """Whether attribute ``path`` of ``layer`` holds a variable (yet)."""
    return isinstance(_walk(layer, path), tf.Variable)


def variable(layer: keras.layers.Layer, path: str) -> tf.Variable:
    """The variable at attribute ``path`` of ``layer`` (see :func:`resolve`)."""
    owner, attribute = resolve(layer, path)
    return getattr(owner, attribute)


# Keras' own bookkeeping attributes hold layers and variables a second time.
_SKIPPED = ("_self_tracked_trackables", "_inbound_nodes", "_outbound_nodes", "_layers")


def variable_paths(layer: keras.layers.Layer) -> dict[str, tf.Variable]:
    """Every variable reachable from ``layer`` through attributes, by attribute path.

    Walks variable attributes, attributes holding layers (private ones too, such as
    MultiHeadAttention's projections) and public lists of layers; each variable appears once,
    under the first path found.
    """
    found: dict[str, tf.Variable] = {}
    seen_variables: set[int] = set()
    seen_layers: set[int] = set()

    def visit(obj, prefix: str) -> None:
        if id(obj) in seen_layers:
            return
        seen_layers.add(id(obj))
        for name, value in list(vars(obj).items()):
            if name in _SKIPPED:
                continue
            path = f"{prefix}{name}"
            if isinstance(value, tf.Variable):
                if id(value) not in seen_variables:
                    seen_variables.add(id(value))
                    found[path] = value
            elif isinstance(value, keras.layers.Layer):
                visit(value, f"{path}.")
            elif isinstance(value, (list, tuple)) and not name.startswith("_"):
                for index, item in enumerate(value):
                    if isinstance(item, keras.layers.Layer):
                        visit(item, f"{path}.{index}.")

    visit(layer, "")
    return found


def _short(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def find(layer: keras.layers.Layer, weight: str | tf.Variable) -> str:
    """The attribute path of ``weight``: an attribute path (or another way to reach the same
    variable, such as an LSTM's ``kernel`` property for ``cell.kernel``), a variable's name
    (with or without ``:0``, whole or its end after a ``/``, e.g.
    ``"lstm_cell/recurrent_kernel"``) or the variable itself.

    Raises:
      ValueError: naming the layer and its variables, if nothing or more than one matches.
    """
    paths = variable_paths(layer)
    if isinstance(weight, tf.Variable):
        matches = [p for p, v in paths.items() if v is weight]
        what = f"variable {weight.name!r}"
    else:
        if weight in paths:
            return weight
        reached = _walk(layer, weight)
        wanted = _short(weight)
        matches = [
            p
            for p, v in paths.items()
            if v is reached or _short(v.name) == wanted or _short(v.name).endswith(f"/{wanted}")
        ]
        what = f"weight={weight!r}"
    if len(matches) != 1:
        names = {p: _short(v.name) for p, v in paths.items()}
        problem = "more than one variable matches" if matches else "no variable matches"
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}): Expected a weight among its "
            f"variables (attribute path: variable name) {names}; received: {what} "
            f"({problem})"
        )
    return matches[0]
