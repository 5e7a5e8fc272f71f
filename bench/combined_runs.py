"""The runs of :mod:`bench.combined`: tf-admm (the config, then the final epochs on the levels)
and tfmot (prune, cluster, PCQAT in one sequence of epochs), each measured into result rows."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import tf_admm
from bench import combined_measure as measure
from bench import combined_setup as setup
from bench import common
from bench.combined_plan import Budget
from bench.combined_setup import Settings
from bench.common import tfmot
from recipes import schedules
from tf_admm.compat import keras

__all__ = ["run_tf_admm", "run_tfmot"]

_FALLBACK_INITS = ("linear", "density_based")


def _ramp_frequency(steps: int, at_most: int = 100) -> int:
    """Largest divisor of ``steps`` up to ``at_most``, so that the last mask update is on time."""
    return max(d for d in range(1, min(steps, at_most) + 1) if steps % d == 0)


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
        "accuracy": setup.evaluate(model, test_ds),
        **extra,
    }
    qat = variant == "tfmot_pcqat"
    if settings.export:
        result["files"] = measure.files(
            settings.work_dir, f"{point['name']}_{variant}", model, test_ds
        )
    if qat:
        # The QAT model holds wrappers and fake-quant ops; what ships is the converter's int8
        # file, so its codes are what is counted.
        files = result.get("files")
        data = files["converter_default"]["data"] if files else measure.converter_default(model)
        storage, distinct = measure.storage_from_tflite(data, point["reference"], names)
        result["storage_source"] = "int8 codes of the converter's file"
        result["nonzeros"] = {layer.name: layer.num_nonzeros for layer in storage.layers}
        result["distinct_values"] = distinct
    else:
        storage = tf_admm.report.storage_report(model, bits=bits)
        result["storage_source"] = "stripped Keras model"
        result.update(measure.model_facts(model, plans))
    total = sum(p.size for p in plans)
    result["weights"] = total
    result["total_nonzeros"] = sum(result["nonzeros"].values())
    result["pruning_ratio"] = total / max(1, result["total_nonzeros"])
    result["storage"] = storage.to_dict()
    for entry in (result.get("files") or {}).values():
        entry.pop("data", None)
    return result


def _learning_rate_callback(settings: Settings, plan: Budget) -> keras.callbacks.Callback:
    return keras.callbacks.LearningRateScheduler(
        schedules.constant_then_decay(
            settings.learning_rate, settings.retrain_learning_rate, plan.scheduled, plan.final
        )
    )


def run_tf_admm(settings, point, plans, plan: Budget, train_ds, test_ds) -> dict[str, Any]:
    """The config's ADMM run, then the final epochs on the levels: one row."""
    keras.utils.set_random_seed(settings.seed)
    start = time.perf_counter()
    model = setup.compile_model(
        tf_admm.admm_wrap(setup.dense_model(settings), point["spec"]), settings.learning_rate
    )
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


def run_tfmot(settings, point, plans, plan: Budget, train_ds, test_ds) -> list[dict[str, Any]]:
    """Prune, cluster (one row), PCQAT (a second row), in one sequence of epochs."""
    keras.utils.set_random_seed(settings.seed)
    steps = setup.steps_per_epoch(train_ds)
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
    pruned = common.tfmot_prune(setup.dense_model(settings), sparsities, schedule)
    setup.compile_model(pruned, settings.learning_rate)
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
    setup.compile_model(clustered, settings.learning_rate)
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
        setup.compile_model(qat, settings.learning_rate)
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
