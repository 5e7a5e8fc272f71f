"""A recipe run in :mod:`bench.results`: its ``results.json``, its TensorBoard logs (ADMM
residuals, rho, sparsity and phase per epoch) and the report's section on them.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Mapping
from typing import Any

from bench import plots
from bench import results_format as fmt

__all__ = ["claims", "prunes", "read_tensorboard", "results_of", "section"]


def read_tensorboard(log_dir: str) -> list[dict[str, float]]:
    """Per-epoch scalars of Keras' TensorBoard logs (``epoch_<name>`` tags), one dict per epoch.

    Later event files win for a step written twice (a resumed run). Keys lose the ``epoch_``
    prefix; ``epoch`` is the step. Needs TensorFlow (imported here only).
    """
    from tf_admm.compat import tf

    by_step: dict[int, dict[str, float]] = {}
    for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if not value.tag.startswith("epoch_"):
                    continue
                if value.HasField("tensor"):
                    number = float(tf.make_ndarray(value.tensor))
                else:
                    number = float(value.simple_value)
                by_step.setdefault(int(event.step), {})[value.tag[len("epoch_") :]] = number
    return [{"epoch": step, **by_step[step]} for step in sorted(by_step)]


def prunes(spec: Mapping[str, Any]) -> bool:
    """Whether a saved spec (``Spec.to_dict``) prunes: a rule with a sparsity, ratio or keep,
    a ``target_ratio``, or no rules at all (the default pruning)."""
    rules = spec.get("rules", [])
    pruning_rule = any(key in r for r in rules for key in ("sparsity", "ratio", "keep"))
    return pruning_rule or bool(spec.get("target_ratio")) or not rules


def _with_phase_during(epochs: list[dict[str, float]], first_phase: int) -> list[dict[str, float]]:
    """Adds ``phase`` (during the epoch) from ``admm_phase`` (logged after the epoch's update)."""
    result = []
    previous = first_phase
    for entry in epochs:
        result.append({**entry, "phase": previous})
        if entry.get("admm_phase") is not None:
            previous = int(entry["admm_phase"])
    return result


def section(
    directory: str,
    results: Mapping[str, Any] | None,
    out: str,
    plot_directory: str,
    outputs: list[str],
) -> list[str]:
    """The section of the recipe run in ``directory``, from its ``results`` (None: no
    results.json was found); its plots go to ``plot_directory``, their paths onto ``outputs``."""
    path = os.path.join(directory, "results.json")
    lines = ["## Recipe run", ""]
    if results is None:
        return lines + [f"No `{path}`: run the recipe with `--model_dir={directory}` first.", ""]
    totals = (results.get("storage") or {}).get("totals") or {}
    lite = results.get("tflite") or {}
    lines += [
        f"From `{path}` (the recipe records no command or machine; its spec is in the file).",
        "",
        fmt.table(
            ("dense %", "compressed %", "drop (points)", "pruning", "weight data", "with indices")
            + (("LiteRT file B (gzip)", "LiteRT accuracy %") if lite else ()),
            [
                (
                    fmt.percent(results.get("dense_accuracy")),
                    fmt.percent(results.get("pruned_accuracy")),
                    f"{results.get('accuracy_drop_points', float('nan')):+.2f}",
                    fmt.ratio(results.get("pruning_ratio")),
                    fmt.ratio(totals.get("weight_data_ratio"), 0),
                    fmt.ratio(totals.get("ratio_with_indices"), 0),
                )
                + (
                    (
                        f"{lite['file_bytes']:,} ({lite['gzip_bytes']:,})",
                        fmt.percent(lite.get("accuracy")),
                    )
                    if lite
                    else ()
                )
            ],
        ),
        "",
    ]
    storage_layers = {
        layer["name"]: layer for layer in (results.get("storage") or {}).get("layers", [])
    }
    entries = [
        {
            "label": "recipe",
            "layers": [
                {
                    "name": name,
                    "kept_fraction": row["nonzeros"] / row["weights"],
                    "bits": storage_layers.get(name, {}).get("bits_per_value"),
                }
                for row in results.get("layers", [])
                # Named as tf_admm.report names storage rows.
                for name in [
                    row["layer"]
                    if row.get("weight", "kernel") in ("kernel", "embeddings")
                    else f"{row['layer']}.{row['weight']}"
                ]
            ],
        }
    ]
    if entries[0]["layers"]:
        png = plots.layer_bars(
            entries,
            os.path.join(plot_directory, "recipe_layers.png"),
            "Recipe run: per-layer kept weights and bits",
        )
        outputs.append(png)
        lines += [fmt.image(out, png, "recipe per-layer kept weights and bits"), ""]
    log_dir = os.path.join(directory, "logs", "train")
    if glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        epochs = read_tensorboard(log_dir)
        epochs = _with_phase_during(epochs, 0 if prunes(results.get("spec") or {}) else 2)
        # The recipe's held-out accuracy after each epoch (1-based there, 0-based here).
        curve = (results.get("validation") or {}).get("curve", [])
        held_out = {point["epoch"] - 1: point["accuracy"] for point in curve}
        epochs = [{**e, "val_accuracy": held_out.get(int(e["epoch"]))} for e in epochs]
        if epochs:
            png = plots.admm_history(
                epochs,
                os.path.join(plot_directory, "recipe_admm.png"),
                "Recipe run: ADMM residuals, rho and sparsity per epoch",
            )
            outputs.append(png)
            lines += [fmt.image(out, png, "recipe ADMM history"), ""]
    else:
        lines += [f"No TensorBoard logs under `{log_dir}`.", ""]
    return lines


def results_of(directory: str) -> dict[str, Any] | None:
    """The ``results.json`` of a recipe run, or None when there is none."""
    try:
        with open(os.path.join(directory, "results.json"), encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def claims(recipe: Mapping[str, Any]) -> dict[str, str]:
    """{published key: what a recipe run measured} (pruning alone, or the storage ratios)."""
    rules = (recipe.get("spec") or {}).get("rules") or []
    accuracy = (
        f"{fmt.percent(recipe['pruned_accuracy'])}%, its dense model "
        f"{fmt.percent(recipe['dense_accuracy'])}%"
    )
    if not any(rule.get("bits") or rule.get("clusters") for rule in rules):
        return {"pruning": f"tf-admm recipe {fmt.ratio(recipe['pruning_ratio'])} ({accuracy})"}
    totals = (recipe.get("storage") or {}).get("totals") or {}
    return {
        key: f"tf-admm recipe {fmt.ratio(totals[key], 0)} ({accuracy})"
        for key in ("weight_data_ratio", "ratio_with_indices")
        if key in totals
    }
