"""Pruning + quantization of LeNet-5: tf-admm against tfmot's prune -> cluster -> PCQAT pipeline.

Usage:
  python -m bench.combined                                 # the recipe's combined config
  python -m bench.combined --ratios=50,100                 # plus the config scaled to 50x, 100x
  python -m bench.combined --smoke                         # about a minute, numbers meaningless

Both libraries start from one dense LeNet-5, pretrained once and cached in ``--dense_dir``
(default: ``--work_dir``; the recorded runs used ``runs/bench/frontier``, where the frontier
benchmark of the time kept the same checkpoint), and get the same per-layer
targets, the same number of epochs and the same learning-rate schedule:

* tf-admm trains the config (``recipes/configs/lenet5_admm_quant_105x.json``: pruning ADMM and
  masked retraining in progressive stages, quantization ADMM, iterative locking onto the
  levels) and then
  ``--final_epochs`` epochs with every weight on its levels: ``E = scheduled rounds +
  final_epochs`` epochs in all.
* tfmot gets the same ``E`` epochs: ``prune_low_magnitude`` with a ``PolynomialDecay`` ramp over
  the config's pruning stages (their ADMM rounds and the retraining rounds between them),
  fine-tuning over the retraining rounds after the last stage (so pruning ends where tf-admm's
  does), then ``strip_pruning`` and
  ``cluster_weights(preserve_sparsity=True)`` with each layer's number of levels for the rest
  of the epochs but the last ``--pcqat_epochs``, then ``strip_clustering``, then
  prune- and cluster-preserving QAT (``quantize_apply`` with
  ``Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True)``) for the last ones.
  Two tfmot rows come out: after clustering (``tfmot_cluster``, ``E - pcqat_epochs`` epochs)
  and after PCQAT (``tfmot_pcqat``, ``E`` epochs).
* Clusters: tf-admm's ``bits`` gives ``2**bits`` nonzero levels (pruned weights are the
  zeros). tfmot's ``preserve_sparsity`` spends one of ``number_of_clusters`` on the zero
  centroid, so by default it gets ``2**bits + 1`` clusters: the same ``2**bits`` nonzero
  values (``--nozero_cluster_extra``: exactly ``2**bits``). Centroids start with
  ``--centroid_init`` (tfmot's default k-means++); a layer where it fails falls back to
  linear, then density-based, and the row records which one each layer used.

Recorded per run: test accuracy; nonzeros and pruning ratio; the paper-style storage of
``tf_admm.report.storage_report`` (weight data only, and with indices, fillers and codebooks;
for PCQAT from the int8 codes of the converted file, per-channel scales counted as codebook);
two ``.tflite`` files with their bytes, gzip bytes and test accuracy in LiteRT: the plain
converter with ``Optimize.DEFAULT`` (what a tfmot user does) and ``tflite_export.export``
(error recorded when it does not accept the model); wall time; for tf-admm the per-epoch ADMM
logs. A table on stdout, JSON (``--out``) and a PNG (``--plot``).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import app, flags, logging

import tf_admm
import tflite_export
from bench import common, plots
from bench.common import tfmot
from recipes import data, models, schedules
from tf_admm.compat import keras, tf
from tf_admm.projections import keep_count
from tflite_export import flatbuffer, verify
from tflite_export.exporter import converter_for
from tflite_export.keras_weights import SUPPORTED_LAYERS
from tflite_export.report import gzip_size

__all__ = [
    "CENTROID_INITS",
    "CONFIG",
    "DATASETS",
    "LIBRARIES",
    "VARIANTS",
    "Budget",
    "LayerPlan",
    "Settings",
    "allocate",
    "budget",
    "layer_plans",
    "point_spec",
    "run",
    "storage_from_tflite",
]

# The combined recipe's default before 2026-11-29's reallocation, which the recorded runs used.
CONFIGS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "configs"
)
CONFIG = os.path.join(CONFIGS, "lenet5_admm_quant_105x.json")
DATASETS = {"mnist": data.load_mnist, "fashion_mnist": data.load_fashion_mnist}
LIBRARIES = ("tf_admm", "tfmot")
VARIANTS = ("tf_admm", "tfmot_cluster", "tfmot_pcqat")
CENTROID_INITS = ("kmeans_plus_plus", "linear", "density_based")
_FALLBACK_INITS = ("linear", "density_based")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything ``run`` needs, so tests can call it without flags.

    Attributes:
      work_dir: JSON, PNG and ``.tflite`` files go here.
      dense_dir: cache of the dense checkpoint (None: ``work_dir``). Its file name records the
        dataset, pretraining epochs, batch size, learning rate, seed and smoke cut.
      dataset: ``"mnist"`` or ``"fashion_mnist"``.
      data_dir: TFDS data directory (None: the default one).
      config: the tf-admm spec (pruning and quantization per layer, rounds, rho schedule).
      ratios: extra points: the config's kept fractions scaled (:func:`allocate`) to
        these pruning ratios, bits unchanged. The config itself is always the first point.
      libraries: among :data:`LIBRARIES`.
      final_epochs: epochs after the config's scheduled rounds (tf-admm's shared-value
        training); the budget of both libraries is scheduled rounds + final_epochs.
      pcqat_epochs: tfmot's last epochs, in PCQAT (0: no PCQAT row).
      pretrain_epochs: dense pretraining epochs (skipped when the checkpoint is cached).
      batch_size: training batch size.
      learning_rate: Adam learning rate for pretraining and during the scheduled rounds.
      retrain_learning_rate: Adam learning rate at the start of the final epochs (then x0.3
        at half, x0.1 for the last quarter).
      seed: weights, data order.
      train_batches: use only this many training batches per epoch (smoke runs).
      test_batches: evaluate on only this many test batches (smoke runs).
      admm_rounds, retrain_rounds, prune_stages, quant_admm_rounds, quant_fractions: override
        the config's (smoke runs shorten them).
      centroid_init: tfmot's centroid initialisation to try first, among
        :data:`CENTROID_INITS`.
      zero_cluster_extra: give tfmot ``2**bits + 1`` clusters (zero plus ``2**bits`` values)
        instead of ``2**bits``.
      export: write and measure the ``.tflite`` files.
      out: JSON path (None: ``<work_dir>/combined_<dataset>.json``; "" for none).
      plot: PNG path (None: ``<work_dir>/combined_<dataset>.png``; "" for none).
      verbose: Keras fit verbosity.
      command: the command line to report.
    """

    work_dir: str = "runs/bench/combined"
    dense_dir: str | None = None
    dataset: str = "mnist"
    data_dir: str | None = None
    config: str = CONFIG
    ratios: tuple[float, ...] = ()
    libraries: tuple[str, ...] = LIBRARIES
    final_epochs: int = 12
    pcqat_epochs: int = 4
    pretrain_epochs: int = 12
    batch_size: int = 128
    learning_rate: float = 1e-3
    retrain_learning_rate: float = 1e-3
    seed: int = 0
    train_batches: int | None = None
    test_batches: int | None = None
    admm_rounds: int | None = None
    retrain_rounds: int | None = None
    prune_stages: tuple[float, ...] | None = None
    quant_admm_rounds: int | None = None
    quant_fractions: tuple[float, ...] | None = None
    centroid_init: str = "kmeans_plus_plus"
    zero_cluster_extra: bool = True
    export: bool = True
    out: str | None = None
    plot: str | None = None
    verbose: int = 0
    command: str = "bench.combined.run()"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(
                f"Expected dataset in {sorted(DATASETS)}; received: dataset={self.dataset!r}"
            )
        if any(not r >= 1 for r in self.ratios):
            raise ValueError(f"Expected ratios >= 1; received: ratios={list(self.ratios)}")
        if not self.libraries or set(self.libraries) - set(LIBRARIES):
            raise ValueError(
                f"Expected libraries among {list(LIBRARIES)}; "
                f"received: libraries={list(self.libraries)}"
            )
        if self.centroid_init not in CENTROID_INITS:
            raise ValueError(
                f"Expected centroid_init in {list(CENTROID_INITS)}; "
                f"received: centroid_init={self.centroid_init!r}"
            )
        for field in ("final_epochs", "pcqat_epochs", "pretrain_epochs"):
            if getattr(self, field) < 0:
                raise ValueError(f"Expected {field} >= 0; received: {field}={getattr(self, field)}")

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """One epoch per phase on four batches: about a minute, numbers meaningless."""
        values: dict[str, Any] = dict(
            final_epochs=1,
            pcqat_epochs=1,
            pretrain_epochs=1,
            train_batches=4,
            test_batches=4,
            admm_rounds=1,
            retrain_rounds=0,
            prune_stages=(1.0,),
            quant_admm_rounds=1,
            quant_fractions=(1.0,),
        )
        values.update(overrides)
        return cls(**values)

    def spec(self) -> tf_admm.Spec:
        """The config with this run's overrides, checked to prune and quantize per epoch."""
        spec = tf_admm.Spec.from_file(self.config)
        overrides = {
            field: getattr(self, field)
            for field in (
                "admm_rounds",
                "retrain_rounds",
                "prune_stages",
                "quant_admm_rounds",
                "quant_fractions",
            )
            if getattr(self, field) is not None
        }
        spec = dataclasses.replace(spec, **overrides)
        if not (spec.prunes and spec.quantizes) or spec.update_unit is not tf_admm.Unit.EPOCH:
            raise ValueError(
                "Expected a config that prunes and quantizes, in rounds of epochs; received: "
                f"config={self.config!r} (prunes={spec.prunes}, quantizes={spec.quantizes}, "
                f"update_unit={spec.update_unit.value!r})"
            )
        return spec

    @property
    def dense_directory(self) -> str:
        return self.dense_dir or self.work_dir

    def output_path(self, value: str | None, suffix: str) -> str | None:
        if value is None:
            return os.path.join(self.work_dir, f"combined_{self.dataset}.{suffix}")
        return value or None


# ----------------------------------------------------------------------------------------------
# Data and the dense model
# ----------------------------------------------------------------------------------------------


def _datasets(settings: Settings):
    # Loaded afresh for every run, so that every run sees the same sequence of shuffles.
    train_ds, test_ds = DATASETS[settings.dataset](
        settings.data_dir, batch_size=settings.batch_size, shuffle_seed=settings.seed
    )
    if settings.train_batches:
        train_ds = train_ds.take(settings.train_batches)
    if settings.test_batches:
        test_ds = test_ds.take(settings.test_batches)
    return train_ds, test_ds


def _compile(model: keras.Model, learning_rate: float = 1e-3) -> keras.Model:
    model.compile(keras.optimizers.Adam(learning_rate), common.classification_loss(), ["accuracy"])
    return model


def _evaluate(model: keras.Model, test_ds) -> float:
    _compile(model)
    return float(model.evaluate(test_ds, verbose=0)[1])


def _checkpoint_path(settings: Settings) -> str:
    # The name the frontier benchmark of 2026-11 gave the same checkpoint: a --dense_dir of
    # that time's runs is reused as it is.
    name = (
        f"dense_lenet5_{settings.dataset}_e{settings.pretrain_epochs}_bs{settings.batch_size}"
        f"_lr{settings.learning_rate:g}_s{settings.seed}"
    )
    if settings.train_batches:
        name += f"_b{settings.train_batches}"
    return os.path.join(settings.dense_directory, f"{name}.weights.h5")


def _dense(settings: Settings) -> keras.Model:
    """A fresh copy of the dense model (from the checkpoint)."""
    keras.utils.set_random_seed(settings.seed)
    model = models.lenet5()
    model.load_weights(_checkpoint_path(settings))
    return model


def _pretrain(settings: Settings) -> dict[str, Any]:
    """Trains the dense model unless its checkpoint exists; returns its facts."""
    path = _checkpoint_path(settings)
    seconds = None
    if not os.path.exists(path):
        train_ds, _ = _datasets(settings)
        keras.utils.set_random_seed(settings.seed)
        model = _compile(models.lenet5(), settings.learning_rate)
        start = time.perf_counter()
        model.fit(
            train_ds,
            epochs=settings.pretrain_epochs,
            verbose=settings.verbose,
            callbacks=[
                keras.callbacks.LearningRateScheduler(
                    schedules.step_decay(settings.learning_rate, settings.pretrain_epochs, start=0)
                )
            ],
        )
        seconds = time.perf_counter() - start
        os.makedirs(settings.dense_directory, exist_ok=True)
        model.save_weights(path)
    _, test_ds = _datasets(settings)
    return {
        "checkpoint": path,
        "cached": seconds is None,
        "pretrain_seconds": seconds,
        "accuracy": _evaluate(_dense(settings), test_ds),
    }


def _steps_per_epoch(train_ds) -> int:
    count = int(train_ds.cardinality())
    if count < 0:  # Unknown or infinite: count once.
        count = sum(1 for _ in train_ds)
    return count


def _ramp_frequency(steps: int, at_most: int = 100) -> int:
    """Largest divisor of ``steps`` up to ``at_most``, so that the last mask update is on time."""
    return max(d for d in range(1, min(steps, at_most) + 1) if steps % d == 0)


def allocate(
    ratio: float, sizes: Mapping[str, int], profile: Mapping[str, float]
) -> dict[str, int]:
    """Kept weights per layer for an overall ``ratio``, shaped like ``profile``.

    Every layer keeps ``min(size, scale * (1 - profile sparsity) * size)`` weights (rounded,
    at least 1), with the one ``scale`` that makes the total ``sum(sizes) / ratio``: layers
    that would keep more than all their weights keep all, and the others share the rest in the
    profile's proportions.

    Args:
      ratio: overall compression ratio, >= 1.
      sizes: {layer: number of weights}.
      profile: {layer: sparsity} with the same keys, each in [0, 1).

    Returns:
      {layer: kept weights}.

    Raises:
      ValueError: if the keys differ or ``ratio`` < 1.
    """
    if set(sizes) != set(profile):
        raise ValueError(
            f"Expected a profile for every layer {sorted(sizes)}; received: {sorted(profile)}"
        )
    if not ratio >= 1:
        raise ValueError(f"Expected ratio >= 1; received: ratio={ratio}")
    kept_fraction = {name: 1.0 - float(profile[name]) for name in sizes}
    wanted = sum(sizes.values()) / ratio
    full: set[str] = set()
    while True:
        free = [n for n in sizes if n not in full]
        budget = wanted - sum(sizes[n] for n in full)
        scale = budget / sum(kept_fraction[n] * sizes[n] for n in free)
        capped = {n for n in free if kept_fraction[n] * scale >= 1.0}
        if not capped:
            break
        full |= capped
    return {
        name: sizes[name]
        if name in full
        else min(sizes[name], max(1, round(kept_fraction[name] * scale * sizes[name])))
        for name in sizes
    }


# ----------------------------------------------------------------------------------------------
# Plan: budget, per-layer targets, points
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Budget:
    """Epochs of every stage; both libraries train ``epochs`` in all.

    Attributes:
      epochs: the budget.
      scheduled: tf-admm's scheduled rounds (pruning ADMM to the last locking round), in epochs.
      final: tf-admm's epochs after them (all weights on their levels).
      prune_ramp: tfmot's sparsity ramp (the config's pruning stages: their ADMM rounds and
        the retraining rounds between them).
      prune_finetune: tfmot's fine-tuning at full sparsity (the config's retraining rounds after
        the last stage).
      cluster: tfmot's clustering epochs.
      pcqat: tfmot's PCQAT epochs.
    """

    epochs: int
    scheduled: int
    final: int
    prune_ramp: int
    prune_finetune: int
    cluster: int
    pcqat: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def budget(spec: tf_admm.Spec, final_epochs: int, pcqat_epochs: int) -> Budget:
    """Splits the epoch budget of ``spec`` (scheduled rounds + ``final_epochs``) into stages.

    Raises:
      ValueError: if tfmot would have no clustering epoch left.
    """
    every = spec.update_every
    scheduled = spec.scheduled_rounds() * every
    epochs = scheduled + final_epochs
    # tfmot's ramp spans all of tf-admm's pruning stages (ADMM and the retraining between).
    ramp = (spec.stage_starts()[-1] + spec.admm_rounds) * every
    finetune = spec.retrain_rounds * every
    cluster = epochs - ramp - finetune - pcqat_epochs
    if cluster < 1:
        raise ValueError(
            "Expected at least one clustering epoch for tfmot (scheduled rounds + final_epochs - "
            "pruning rounds - retraining rounds - pcqat_epochs >= 1); received: "
            f"{scheduled} + {final_epochs} - {ramp} - {finetune} - {pcqat_epochs} = {cluster}"
        )
    return Budget(epochs, scheduled, final_epochs, ramp, finetune, cluster, pcqat_epochs)


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What one layer's rule asks for.

    Attributes:
      name: layer name.
      size: kernel weights.
      rule: the config's rule for the layer.
    """

    name: str
    size: int
    rule: tf_admm.Rule

    @property
    def levels(self) -> int | None:
        """Nonzero values a kept weight may take (``2**bits`` or clusters), None if float."""
        return self.rule.num_levels

    @property
    def bits(self) -> int | None:
        """Configured bits per kept weight (clusters: the bits of their count)."""
        if self.rule.bits is not None:
            return self.rule.bits
        return None if self.levels is None else tf_admm.storage.bits_for_levels(self.levels)


def layer_plans(model: keras.Model, spec: tf_admm.Spec) -> list[LayerPlan]:
    """The rule of every compressible kernel of ``model`` that ``spec`` compresses."""
    plans = []
    for row in tf_admm.report.compression_table(model):
        if row.weight != "kernel":
            continue
        layer = model.get_layer(row.layer)
        _, rule = spec.rule_for(layer.name, type(layer).__name__)
        if rule is not None:
            plans.append(LayerPlan(layer.name, row.weights, rule))
    return plans


def point_spec(spec: tf_admm.Spec, plans, kept: Mapping[str, int]) -> tf_admm.Spec:
    """``spec`` with one rule per layer that keeps ``kept[layer]`` weights, quantization as is."""
    rules = []
    for plan in plans:
        config = plan.rule.get_config()
        for field in ("name", "pattern", "layer_type", "ratio", "sparsity"):
            config.pop(field, None)
        if plan.rule.prunes:
            config["sparsity"] = 1.0 - kept[plan.name] / plan.size
        rules.append(tf_admm.Rule.from_config({"name": plan.name, **config}))
    return dataclasses.replace(spec, rules=tuple(rules), default=None)


def _points(settings: Settings, spec: tf_admm.Spec, plans) -> list[dict[str, Any]]:
    sizes = {p.name: p.size for p in plans}
    total = sum(sizes.values())
    kept = {p.name: keep_count(p.size, p.rule.target_sparsity) for p in plans}
    points = [
        {"name": "config", "target_ratio": total / sum(kept.values()), "kept": kept, "spec": spec}
    ]
    profile = {p.name: p.rule.target_sparsity for p in plans}
    for ratio in settings.ratios:
        scaled = allocate(ratio, sizes, profile)
        points.append(
            {
                "name": f"{ratio:g}x",
                "target_ratio": float(ratio),
                "kept": scaled,
                "spec": point_spec(spec, plans, scaled),
            }
        )
    return points


# ----------------------------------------------------------------------------------------------
# Measurements shared by every run
# ----------------------------------------------------------------------------------------------


def _distinct_nonzero(values: np.ndarray) -> int:
    return int(np.unique(values[values != 0]).size)


def _model_facts(model: keras.Model, plans) -> dict[str, Any]:
    """Nonzeros and distinct nonzero values per layer of a plain model."""
    names = {p.name for p in plans}
    nonzeros, distinct = {}, {}
    for layer in model.layers:
        if layer.name in names:
            kernel = layer.kernel.numpy()
            nonzeros[layer.name] = int(np.count_nonzero(kernel))
            distinct[layer.name] = _distinct_nonzero(kernel)
    return {"nonzeros": nonzeros, "distinct_values": distinct}


def _file_accuracy(data: bytes, test_ds) -> float:
    correct = total = 0
    for images, labels in test_ds:
        (logits,) = verify.run(data, [images.numpy()])
        correct += int(np.sum(np.argmax(logits, axis=-1) == labels.numpy()))
        total += int(labels.shape[0])
    return correct / total


def _converter_default(model: keras.Model) -> bytes:
    """The plain TFLite converter with ``Optimize.DEFAULT``, as tfmot's guides use it."""
    converter = converter_for(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _files(settings: Settings, stem: str, model: keras.Model, test_ds) -> dict[str, Any]:
    """The converter's and tflite_export's files of ``model``: bytes, gzip bytes, accuracy."""
    directory = os.path.join(settings.work_dir, "tflite")
    os.makedirs(directory, exist_ok=True)
    files: dict[str, Any] = {}
    data = _converter_default(model)
    path = os.path.join(directory, f"{stem}_converter_default.tflite")
    _write(path, data)
    files["converter_default"] = {
        "path": path,
        "file_bytes": len(data),
        "gzip_bytes": gzip_size(data),
        "accuracy": _file_accuracy(data, test_ds),
        "data": data,  # Removed before JSON; PCQAT's storage is read from it.
    }
    path = os.path.join(directory, f"{stem}_tflite_export.tflite")
    try:
        report = tflite_export.export(model, path)
    except Exception as error:  # A third-party model it may not accept: record why.
        files["tflite_export"] = {"error": f"{type(error).__name__}: {error}"[:2000]}
        print(f"  tflite_export.export of {stem} failed: {files['tflite_export']['error'][:200]}")
        return files
    with open(path, "rb") as f:
        exported = f.read()
    files["tflite_export"] = {
        "path": path,
        "file_bytes": report.file_bytes,
        "gzip_bytes": report.gzip_bytes,
        "float_file_bytes": report.float_file_bytes,
        "float_gzip_bytes": report.float_gzip_bytes,
        "accuracy": _file_accuracy(exported, test_ds),
        "encodings": {w.label: w.encoding.value for w in report.weights},
    }
    if not report.weights:
        # A QAT model's kernels reach the converter through fake-quant ops, not as constants.
        files["tflite_export"]["note"] = "no weight tensors found: nothing was encoded"
    return files


_CODE_OPERATORS = {
    flatbuffer.schema.BuiltinOperator.FULLY_CONNECTED,
    flatbuffer.schema.BuiltinOperator.CONV_2D,
    flatbuffer.schema.BuiltinOperator.DEPTHWISE_CONV_2D,
}


def _keras_layout(layer: keras.layers.Layer, values: np.ndarray) -> np.ndarray | None:
    """A weight tensor in TFLite's layout put back in ``layer``'s kernel layout (None: no fit)."""
    entry = SUPPORTED_LAYERS.get(type(layer))
    if entry is None:
        return None
    attribute, to_tflite = entry
    shape = tuple(getattr(layer, attribute).shape)
    order = to_tflite(np.arange(int(np.prod(shape))).reshape(shape))
    if tuple(order.shape) != tuple(values.shape):
        return None
    kernel = np.empty(int(np.prod(shape)), values.dtype)
    kernel[order.reshape(-1)] = values.reshape(-1)
    return kernel.reshape(shape)


def storage_from_tflite(
    data: bytes, reference: keras.Model, names
) -> tuple[tf_admm.storage.StorageReport, dict[str, int]]:
    """Paper-style storage of the quantized weight tensors of a converted (int8) file.

    Each FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D weight is matched to the layer of
    ``reference`` (same architecture) whose kernel has its shape, and counted from its stored
    integer codes in Keras order: ``b = bits_for_levels(distinct nonzero codes)`` per value, a
    codebook of the distinct codes (8 bits each, unless ``b`` is 8) plus one 32-bit scale per
    tensor or channel; sparse or dense, whichever is smaller.

    Args:
      data: the ``.tflite`` bytes.
      reference: a plain Keras model of the same architecture.
      names: the layers to account for.

    Returns:
      The report and the distinct nonzero codes per layer.

    Raises:
      ValueError: if a layer has no tensor of its shape or several.
    """
    model = flatbuffer.read_model(data)
    candidates: dict[tuple[int, ...], list[tuple[Any, np.ndarray]]] = {}
    for index, subgraph in enumerate(model.subgraphs):
        for operator in subgraph.operators:
            if flatbuffer.builtin_code(model, operator) not in _CODE_OPERATORS:
                continue
            tensor_index = operator.inputs[1]
            tensor = subgraph.tensors[tensor_index]
            codes = flatbuffer.decode_tensor(model, index, tensor_index)
            candidates.setdefault(tuple(codes.shape), []).append((tensor, codes))
    layers, distinct = [], {}
    for name in names:
        layer = reference.get_layer(name)
        matches = []
        for tensors in candidates.values():
            for tensor, codes in tensors:
                kernel = _keras_layout(layer, codes)
                if kernel is not None:
                    matches.append((tensor, kernel))
        if len(matches) != 1:
            raise ValueError(
                f"Expected one weight tensor of layer {name!r}'s shape in the file; "
                f"received: {len(matches)}"
            )
        tensor, kernel = matches[0]
        quantization = tensor.quantization
        scales = len(quantization.scale) if quantization and quantization.scale is not None else 0
        count = _distinct_nonzero(kernel)
        distinct[name] = count
        bits = tf_admm.storage.bits_for_levels(max(count, 1))
        if not np.issubdtype(kernel.dtype, np.integer):
            bits = tf_admm.storage.BASELINE_BITS  # A float tensor: stored as it is.
        table = count * 8 if bits < 8 else 0
        options = [
            tf_admm.storage.layer_storage(
                name,
                weights=kernel,
                bits_per_value=bits,
                codebook_bits=table + tf_admm.storage.BASELINE_BITS * scales,
                sparse=sparse,
            )
            for sparse in (True, False)
        ]
        layers.append(min(options, key=lambda option: option.total_bits))
    return tf_admm.storage.storage_report(layers), distinct


def _result(
    settings: Settings,
    point: Mapping[str, Any],
    variant: str,
    plans,
    model: keras.Model,
    test_ds,
    seconds: float,
    epochs: int,
    **extra,
) -> dict[str, Any]:
    """Accuracy, storage and files of one compressed model."""
    names = [p.name for p in plans]
    bits = {p.name: p.bits for p in plans if p.bits is not None}
    result: dict[str, Any] = {
        "point": point["name"],
        "target_ratio": point["target_ratio"],
        "variant": variant,
        "library": "tf_admm" if variant == "tf_admm" else "tfmot",
        "epochs": epochs,
        "seconds": seconds,
        "requested_nonzeros": dict(point["kept"]),
        "bits": bits,
        "accuracy": _evaluate(model, test_ds),
        **extra,
    }
    qat = variant == "tfmot_pcqat"
    if settings.export:
        result["files"] = _files(settings, f"{point['name']}_{variant}", model, test_ds)
    if qat:
        # The QAT model holds wrappers and fake-quant ops; what ships is the converter's int8
        # file, so its codes are what is counted.
        files = result.get("files")
        data = files["converter_default"]["data"] if files else _converter_default(model)
        storage, distinct = storage_from_tflite(data, point["reference"], names)
        result["storage_source"] = "int8 codes of the converter's file"
        result["nonzeros"] = {layer.name: layer.num_nonzeros for layer in storage.layers}
        result["distinct_values"] = distinct
    else:
        storage = tf_admm.report.storage_report(model, bits=bits)
        result["storage_source"] = "stripped Keras model"
        result.update(_model_facts(model, plans))
    total = sum(p.size for p in plans)
    result["weights"] = total
    result["total_nonzeros"] = sum(result["nonzeros"].values())
    result["pruning_ratio"] = total / max(1, result["total_nonzeros"])
    result["storage"] = storage.to_dict()
    for entry in (result.get("files") or {}).values():
        entry.pop("data", None)
    return result


# ----------------------------------------------------------------------------------------------
# The libraries
# ----------------------------------------------------------------------------------------------


def _learning_rate_callback(settings: Settings, plan: Budget) -> keras.callbacks.Callback:
    return keras.callbacks.LearningRateScheduler(
        schedules.constant_then_decay(
            settings.learning_rate, settings.retrain_learning_rate, plan.scheduled, plan.final
        )
    )


def _run_tf_admm(settings, point, plans, plan: Budget, train_ds, test_ds) -> dict[str, Any]:
    keras.utils.set_random_seed(settings.seed)
    start = time.perf_counter()
    model = _compile(tf_admm.admm_wrap(_dense(settings), point["spec"]), settings.learning_rate)
    history = common.EpochLog()
    # As the recipes: the retraining between progressive pruning stages decays too.
    schedule = schedules.learning_rate_schedule(
        point["spec"], settings.learning_rate, settings.retrain_learning_rate, plan.final
    )
    model.fit(
        train_ds,
        epochs=plan.epochs,
        verbose=settings.verbose,
        callbacks=tf_admm.callbacks() + [keras.callbacks.LearningRateScheduler(schedule), history],
    )
    if model.phase is not model.final_phase:
        raise RuntimeError(
            f"Expected tf-admm to reach {model.final_phase.name}; received: phase={model.phase}"
        )
    plain = tf_admm.strip(model)
    seconds = time.perf_counter() - start
    return _result(
        settings,
        point,
        "tf_admm",
        plans,
        plain,
        test_ds,
        seconds,
        plan.epochs,
        history=history.epochs,
    )


_INITS = {
    "kmeans_plus_plus": "KMEANS_PLUS_PLUS",
    "linear": "LINEAR",
    "density_based": "DENSITY_BASED",
}


def _centroid_init(name: str):
    return getattr(tfmot.clustering.keras.CentroidInitialization, _INITS[name])


def _working_init(layer: keras.layers.Layer, clusters: int, preferred: str) -> tuple[str, str]:
    """The first centroid initialisation that builds on ``layer``'s weights, and what failed.

    Tried on a copy, since tfmot's wrapper writes into the layer it wraps.
    """
    failures = []
    for name in (preferred, *[i for i in _FALLBACK_INITS if i != preferred]):
        probe = type(layer).from_config(layer.get_config())
        probe.build(layer.input_shape)
        probe.set_weights(layer.get_weights())
        try:
            wrapper = tfmot.clustering.keras.cluster_weights(
                probe,
                number_of_clusters=clusters,
                cluster_centroids_init=_centroid_init(name),
                preserve_sparsity=True,
            )
            wrapper.build(layer.input_shape)
        except Exception as error:  # tfmot raises assorted errors here (e.g. k-means++).
            failures.append(f"{name}: {type(error).__name__}: {str(error)[:200]}")
            continue
        return name, "; ".join(failures)
    raise RuntimeError(
        f"Expected a centroid initialisation that works on layer {layer.name!r}; "
        f"received failures: {'; '.join(failures)}"
    )


def _cluster(model: keras.Model, clusters: Mapping[str, int], preferred: str):
    """``cluster_weights(preserve_sparsity=True)`` per layer; returns the model and the inits."""
    inits: dict[str, dict[str, str]] = {}
    for name, count in clusters.items():
        used, failed = _working_init(model.get_layer(name), count, preferred)
        inits[name] = {"used": used, **({"failed": failed} if failed else {})}

    def clone(layer):
        if layer.name in clusters:
            return tfmot.clustering.keras.cluster_weights(
                layer,
                number_of_clusters=clusters[layer.name],
                cluster_centroids_init=_centroid_init(inits[layer.name]["used"]),
                preserve_sparsity=True,
            )
        return layer.__class__.from_config(layer.get_config())

    clustered = keras.models.clone_model(model, clone_function=clone)
    return clustered, inits


def _run_tfmot(settings, point, plans, plan: Budget, train_ds, test_ds) -> list[dict[str, Any]]:
    """Prune, cluster (one row), PCQAT (a second row), in one sequence of epochs."""
    keras.utils.set_random_seed(settings.seed)
    steps = _steps_per_epoch(train_ds)
    ramp_steps = plan.prune_ramp * steps
    frequency = _ramp_frequency(ramp_steps)
    sparsities = {
        p.name: 1.0 - point["kept"][p.name] / p.size
        for p in plans
        if p.rule.prunes and point["kept"][p.name] < p.size
    }

    def schedule(final_sparsity: float):
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=final_sparsity,
            begin_step=0,
            end_step=ramp_steps,
            frequency=frequency,
        )

    learning_rate = _learning_rate_callback(settings, plan)
    start = time.perf_counter()
    pruned = common.tfmot_prune(_dense(settings), sparsities, schedule)
    _compile(pruned, settings.learning_rate)
    pruned_epochs = plan.prune_ramp + plan.prune_finetune
    pruned.fit(
        train_ds,
        epochs=pruned_epochs,
        verbose=settings.verbose,
        callbacks=[tfmot.sparsity.keras.UpdatePruningStep(), learning_rate],
    )
    stripped = common.tfmot_strip(pruned)

    extra = 1 if settings.zero_cluster_extra else 0
    clusters = {p.name: p.levels + extra for p in plans if p.levels is not None}
    clustered, inits = _cluster(stripped, clusters, settings.centroid_init)
    _compile(clustered, settings.learning_rate)
    cluster_end = pruned_epochs + plan.cluster
    clustered.fit(
        train_ds,
        initial_epoch=pruned_epochs,
        epochs=cluster_end,
        verbose=settings.verbose,
        callbacks=[learning_rate],
    )
    plain = tfmot.clustering.keras.strip_clustering(clustered)
    seconds = time.perf_counter() - start
    facts = dict(clusters=clusters, centroid_init=inits)
    rows = [
        _result(
            settings, point, "tfmot_cluster", plans, plain, test_ds, seconds, cluster_end, **facts
        )
    ]
    if plan.pcqat:
        start = time.perf_counter()
        annotated = tfmot.quantization.keras.quantize_annotate_model(plain)
        scheme = tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity=True
        )
        qat = tfmot.quantization.keras.quantize_apply(annotated, scheme)
        _compile(qat, settings.learning_rate)
        qat.fit(
            train_ds,
            initial_epoch=cluster_end,
            epochs=plan.epochs,
            verbose=settings.verbose,
            callbacks=[learning_rate],
        )
        seconds += time.perf_counter() - start
        point = {**point, "reference": plain}
        row = _result(
            settings, point, "tfmot_pcqat", plans, qat, test_ds, seconds, plan.epochs, **facts
        )
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _bytes(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "-"
    if "error" in entry:
        return "error"
    return f"{entry['file_bytes']:,} ({entry['gzip_bytes']:,})"


def format_results(results: Mapping[str, Any]) -> str:
    """The table printed at the end of a run."""
    rows = []
    for r in results["runs"]:
        totals = r["storage"]["totals"]
        files = r.get("files") or {}
        rows.append(
            (
                r["point"],
                r["variant"],
                f"{100 * r['accuracy']:.2f}",
                f"{r['pruning_ratio']:.1f}x",
                f"{totals['weight_data_ratio'] or 0:,.0f}x",
                f"{totals['ratio_with_indices'] or 0:,.0f}x",
                _bytes(files.get("tflite_export")),
                _bytes(files.get("converter_default")),
                f"{r['seconds']:.1f}",
            )
        )
    header = (
        "point",
        "variant",
        "accuracy %",
        "pruning",
        "weight data",
        "with indices",
        "tflite_export B (gzip)",
        "converter B (gzip)",
        "seconds",
    )
    dense = results["dense"]
    lines = [
        common.format_table(header, rows),
        f"dense LeNet-5: {100 * dense['accuracy']:.2f}% ({dense['checkpoint']}); float .tflite "
        f"{dense['float_file_bytes']:,} B (gzip {dense['float_gzip_bytes']:,} B)",
        "budget: " + ", ".join(f"{k} {v}" for k, v in results["budget"].items()) + " epochs",
    ]
    for r in results["runs"]:
        if r.get("centroid_init"):
            fallbacks = {n: i for n, i in r["centroid_init"].items() if "failed" in i}
            if fallbacks:
                lines.append(
                    f"{r['point']} {r['variant']}: centroid init fell back on "
                    + ", ".join(f"{n} ({i['used']})" for n, i in fallbacks.items())
                )
    return "\n".join(lines)


def _dense_facts(settings: Settings, facts: dict[str, Any]) -> dict[str, Any]:
    float_file = tflite_export.convert_float(_dense(settings))
    return {
        **facts,
        "float_file_bytes": len(float_file),
        "float_gzip_bytes": gzip_size(float_file),
    }


def run(settings: Settings) -> dict[str, Any]:
    """Compresses the shared dense LeNet-5 with both libraries at every point; reports."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("pruning + quantization", settings.command, machine, start))
    spec = settings.spec()
    plan = budget(spec, settings.final_epochs, settings.pcqat_epochs)
    os.makedirs(settings.work_dir, exist_ok=True)
    dense = _dense_facts(settings, _pretrain(settings))
    plans = layer_plans(_dense(settings), spec)
    points = _points(settings, spec, plans)
    runs = []
    for point in points:
        for library in settings.libraries:
            # Fresh data for each library: both see the same sequence of shuffles.
            train_ds, test_ds = _datasets(settings)
            if library == "tf_admm":
                rows = [_run_tf_admm(settings, point, plans, plan, train_ds, test_ds)]
            else:
                rows = _run_tfmot(settings, point, plans, plan, train_ds, test_ds)
            for row in rows:
                totals = row["storage"]["totals"]
                print(
                    f"{point['name']} {row['variant']}: accuracy {100 * row['accuracy']:.2f}%, "
                    f"pruning {row['pruning_ratio']:.1f}x, storage "
                    f"{totals['weight_data_ratio'] or 0:,.0f}x / "
                    f"{totals['ratio_with_indices'] or 0:,.0f}x, {row['seconds']:.0f} s",
                    flush=True,
                )
            runs += rows
            keras.backend.clear_session()
    results: dict[str, Any] = {
        "benchmark": "combined",
        "command": settings.command,
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "start": start,
        "config": {"path": settings.config, "spec": spec.to_dict()},
        "budget": plan.to_dict(),
        "layers": [p.name for p in plans],
        "sizes": {p.name: p.size for p in plans},
        "points": [
            {k: v for k, v in point.items() if k in ("name", "target_ratio", "kept")}
            for point in points
        ],
        "dense": dense,
        "runs": runs,
    }
    results["end"] = common.snapshot()
    has_storage = any("storage" in r for r in runs)
    return common.finish(
        results,
        format_results(results),
        out=settings.output_path(settings.out, "json"),
        plot_path=settings.output_path(settings.plot, "png") if has_storage else None,
        draw=plots.combined,
    )


# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------


# Flags are defined only when this module is the program, so that tests can import several
# benchmarks and recipes (which share flag names) in one process.
def _define_flags() -> dict[str, flags.FlagHolder]:
    defaults = Settings()
    return {
        **common.define_run_flags(defaults, LIBRARIES),
        "smoke": flags.DEFINE_bool("smoke", False, "Tiny run (about a minute) to check it works."),
        "dataset": flags.DEFINE_enum("dataset", defaults.dataset, sorted(DATASETS), "Dataset."),
        "work_dir": flags.DEFINE_string(
            "work_dir", defaults.work_dir, "JSON, PNG and .tflite files."
        ),
        "dense_dir": flags.DEFINE_string(
            "dense_dir", defaults.dense_dir, "Dense checkpoint cache (default: --work_dir)."
        ),
        "config": flags.DEFINE_string("config", defaults.config, "tf-admm spec (JSON)."),
        "ratios": flags.DEFINE_list(
            "ratios", [], "Extra points: the config scaled to these pruning ratios."
        ),
        "final_epochs": flags.DEFINE_integer(
            "final_epochs",
            defaults.final_epochs,
            "Epochs after the config's scheduled rounds.",
            lower_bound=0,
        ),
        "pcqat_epochs": flags.DEFINE_integer(
            "pcqat_epochs", defaults.pcqat_epochs, "tfmot's PCQAT epochs.", lower_bound=0
        ),
        "learning_rate": flags.DEFINE_float(
            "learning_rate", defaults.learning_rate, "Adam learning rate (scheduled rounds)."
        ),
        "retrain_learning_rate": flags.DEFINE_float(
            "retrain_learning_rate",
            defaults.retrain_learning_rate,
            "Adam learning rate at the start of the final epochs.",
        ),
        "centroid_init": flags.DEFINE_enum(
            "centroid_init",
            defaults.centroid_init,
            list(CENTROID_INITS),
            "tfmot centroid initialisation tried first (then linear, density_based).",
        ),
        "zero_cluster_extra": flags.DEFINE_bool(
            "zero_cluster_extra",
            defaults.zero_cluster_extra,
            "Give tfmot 2**bits + 1 clusters (one is its zero centroid).",
        ),
        "export": flags.DEFINE_bool("export", True, "Write and measure the .tflite files."),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def settings_from_flags() -> Settings:
    convert = {
        "ratios": lambda values: tuple(float(v) for v in values),
        "libraries": tuple,
        "verbose": int,
    }
    try:
        settings = common.settings_from_flags(_FLAGS, Settings, "bench.combined", convert)
        budget(settings.spec(), settings.final_epochs, settings.pcqat_epochs)
        return settings
    except (ValueError, OSError) as error:
        raise app.UsageError(str(error)) from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)  # TFDS and per-round ADMM logs.
    tf.get_logger().setLevel("ERROR")  # tfmot clustering's "Gradients do not exist" warnings.
    run(settings_from_flags())


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    flags.adopt_module_key_flags(common)  # --helpshort lists the shared flags too.
    app.run(main)
