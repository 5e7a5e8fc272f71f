"""The files :mod:`bench.latency` measures when it builds them: a model with random weights,
its unstructured, structured (masked, shrunk) variants and tfmot's 2:4, each with its MACs and
parameter counts."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import logging

import tf_admm
import tflite_export
from bench import common
from bench.common import tfmot
from bench.latency_setup import MODELS, Settings
from tf_admm.compat import keras, tf
from tflite_export import Encoding

__all__ = ["build_files", "macs", "sample_input"]


def macs(model: keras.Model) -> int:
    """Multiply-adds of one sample through the Conv, DepthwiseConv and Dense layers."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.depthwise_kernel.shape))
        elif isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += positions * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += max(positions, 1) * int(np.prod(layer.kernel.shape))
    return total


def _plain_conv(layer) -> bool:
    return isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
    )


def _targets(model: keras.Model, settings: Settings) -> dict[str, tuple[str, float]]:
    """{layer: (structure, sparsity)} of the layers the structured variant prunes."""
    fc_sparsity = settings.sparsity if settings.fc_sparsity is None else settings.fc_sparsity
    output_layers = set(model.output_names)
    targets = {}
    for layer in model.layers:
        if _plain_conv(layer) and settings.structure:
            targets[layer.name] = (settings.structure, settings.sparsity)
        elif isinstance(layer, keras.layers.Dense) and settings.fc_structure:
            if settings.fc_structure == "filter" and layer.name in output_layers:
                continue  # Its filters are the classes.
            targets[layer.name] = (settings.fc_structure, fc_sparsity)
    return targets


def _mask_structured(model, targets) -> tuple[keras.Model, dict[str, int]]:
    """A copy of ``model`` with the structured masks applied; {layer: kept weights}."""
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    kept = {}
    for name, (structure, sparsity) in targets.items():
        layer = masked.get_layer(name)
        kernel = layer.kernel
        groups = int(tf_admm.projections.group_count(kernel.shape, structure))
        keep = max(1, groups - int(round(sparsity * groups)))
        mask = tf_admm.projections.structured_mask(kernel, structure, keep)
        kernel.assign(kernel * mask)
        if structure == "filter" and layer.bias is not None:
            # Filter pruning masks the bias with its filters (as Rule(structure="filter") does).
            layer.bias.assign(layer.bias * tf.reduce_max(tf.reshape(mask, (-1, mask.shape[-1])), 0))
        kept[name] = int(np.count_nonzero(mask.numpy()))
    return masked, kept


def _mask_unstructured(model, kept) -> keras.Model:
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for name, count in kept.items():
        kernel = masked.get_layer(name).kernel
        kernel.assign(tf_admm.projections.project_top_k(kernel, count))
    return masked


def _tfmot_2of4(model, seed: int) -> tuple[keras.Model, list[str]]:
    """tfmot's 2:4 pruning on the layers it accepts, masks computed once, stripped."""
    sparsity = tfmot.sparsity.keras
    pruned_layers = []

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Dense) or _plain_conv(layer):
            try:
                wrapped = sparsity.prune_low_magnitude(
                    copy,
                    pruning_schedule=sparsity.ConstantSparsity(0.5, begin_step=0, frequency=1),
                    sparsity_m_by_n=(2, 4),
                )
            except ValueError as error:  # e.g. fewer than 4 input channels.
                logging.info("tfmot 2:4 skips %s: %s", layer.name, error)
                return copy
            pruned_layers.append(layer.name)
            return wrapped
        return copy

    pruned = keras.models.clone_model(model, clone_function=clone)
    for layer in pruned.layers:
        inner = getattr(layer, "layer", layer)  # The layer a PruneLowMagnitude wraps.
        inner.set_weights(model.get_layer(inner.name).get_weights())
    # One step at learning rate 0: UpdatePruningStep computes the masks, the weights stay.
    pruned.compile(keras.optimizers.SGD(0.0), common.classification_loss())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *model.input_shape[1:])).astype(np.float32)
    y = np.zeros((2,), np.int64)
    pruned.fit(x, y, epochs=1, verbose=0, callbacks=[sparsity.UpdatePruningStep()])
    stripped = sparsity.strip_pruning(pruned)
    return stripped, pruned_layers


def _convert_sparse(model, path: str) -> int:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    data = converter.convert()
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _describe(model) -> dict[str, Any]:
    nonzeros = sum(int(np.count_nonzero(w)) for w in model.get_weights())
    return {"macs": macs(model), "params": int(model.count_params()), "nonzero_params": nonzeros}


def build_files(settings: Settings) -> list[dict[str, Any]]:
    """Builds and exports the variants of ``settings.model``; one entry per file, dense first."""
    keras.utils.set_random_seed(settings.seed)
    dense = MODELS[settings.model]()
    targets = _targets(dense, settings)
    os.makedirs(settings.work_dir, exist_ok=True)
    entries = []

    def export(name, model, note):
        path = os.path.join(settings.work_dir, f"{settings.model}_{name}.tflite")
        report = tflite_export.export(model, path)
        encodings = {w.label: Encoding(w.encoding).value for w in report.weights}
        entries.append(
            {"name": name, "path": path, "note": note, "exporter": "tflite_export"}
            | _describe(model)
            | {"encodings": encodings}
        )

    export("dense", dense, "random weights")
    if targets:
        label = "+".join(
            dict.fromkeys(f"{s}" for s in (settings.structure, settings.fc_structure) if s)
        )
        masked, kept = _mask_structured(dense, targets)
        unstructured = _mask_unstructured(dense, kept)
        export("unstructured", unstructured, f"magnitude, same kept counts as {label}")
        pruned = ", ".join(f"{name} {s} {p:.0%}" for name, (s, p) in targets.items())
        export(f"{label}_masked", masked, f"groups removed: {pruned}")
        try:
            smaller = tf_admm.shrink(masked)
        except tf_admm.ShrinkError as error:
            logging.warning("shrink refused the model: %s", error)
        else:
            np.testing.assert_allclose(
                smaller(sample_input(dense, settings.seed)),
                masked(sample_input(dense, settings.seed)),
                atol=1e-4,
            )
            export(f"{label}_shrunk", smaller, "tf_admm.shrink of the masked model")
    if settings.tfmot_2of4:
        stripped, pruned_layers = _tfmot_2of4(dense, settings.seed)
        path = os.path.join(settings.work_dir, f"{settings.model}_tfmot_2of4.tflite")
        _convert_sparse(stripped, path)
        entries.append(
            {
                "name": "tfmot_2of4",
                "path": path,
                "note": f"2:4 on {', '.join(pruned_layers)}; converter EXPERIMENTAL_SPARSITY",
                "exporter": "TFLiteConverter",
                **_describe(stripped),
            }
        )
    return entries


def sample_input(model, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, *model.input_shape[1:])).astype(np.float32)
