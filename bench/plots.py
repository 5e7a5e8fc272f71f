"""PNG plots of benchmark results (matplotlib, Agg backend); no TensorFlow needed.

Every function takes plain data as the benchmarks write it to JSON (or as
:mod:`bench.results` reads it from a recipe's ``results.json`` and TensorBoard logs), writes one
PNG and returns its path. Used by the benchmarks themselves and by ``python -m bench.results``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from bench import comparisons

__all__ = [
    "ARM_LABELS",
    "LIBRARY_LABELS",
    "PHASE_NAMES",
    "VARIANT_LABELS",
    "admm_history",
    "combined",
    "frontier",
    "layer_bars",
]

LIBRARY_LABELS = {"tf_admm": "tf-admm (ADMM)", "tfmot": "tfmot prune_low_magnitude"}
ARM_LABELS = {
    "tf_admm:lamp": "tf-admm, LAMP allocation",
    "tfmot:lamp": "tfmot, the same LAMP allocation",
    "tfmot:uniform": "tfmot, uniform sparsity",
}
VARIANT_LABELS = {
    "tf_admm": "tf-admm prune + quantize",
    "tfmot_cluster": "tfmot prune + cluster",
    "tfmot_pcqat": "tfmot prune + cluster + PCQAT",
}
# The values of tf_admm.Phase, spelled out so that plotting needs no TensorFlow import
# (bench/results_test.py checks that they agree).
PHASE_NAMES = {
    0: "pruning ADMM",
    1: "masked retraining",
    2: "quantization ADMM",
    3: "locking levels",
    4: "training shared values",
}
_PHASE_COLORS = {0: "#dbe9f6", 1: "#e8f4e0", 2: "#fbe5d6", 3: "#f3e0f3", 4: "#f2f2f2"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _save(figure, path: str) -> str:
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    _pyplot().close(figure)
    return path


def _ratio_axis(axes, ratios: Sequence[float]) -> None:
    from matplotlib import ticker

    axes.set_xscale("log")
    finite = sorted({round(r) for r in ratios if r and math.isfinite(r)})
    if 0 < len(finite) <= 12:
        axes.set_xticks(finite)
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())


def frontier(results: Mapping[str, Any], path: str) -> str:
    """Test accuracy against achieved pruning ratio, one line per arm, mean and sd over seeds as
    error bars, the dense models' mean test accuracy as a line (``bench.frontier`` document)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    table = comparisons.cells(results["records"])
    for arm in dict.fromkeys(arm for arm, _ in table):
        cells = sorted((c for (a, _), c in table.items() if a == arm), key=lambda c: c.ratio)
        axes.errorbar(
            [c.achieved_mean for c in cells],
            [100 * c.accuracy_mean for c in cells],
            yerr=[100 * (c.accuracy_sd or 0.0) for c in cells],
            marker="o",
            capsize=3,
            label=ARM_LABELS.get(arm, arm),
        )
    dense = {r["seed"]: r["dense"]["test"] for r in results["records"]}
    mean = 100 * sum(dense.values()) / len(dense)
    axes.axhline(
        mean,
        color="gray",
        linestyle="--",
        label=f"dense ({mean:.2f}%, mean of {len(dense)} seed{'s' if len(dense) > 1 else ''})",
    )
    _ratio_axis(axes, [c.achieved_mean for c in table.values()])
    axes.set_xlabel("compression ratio (weights / nonzero weights)")
    axes.set_ylabel("test accuracy (%), mean ± sd over seeds")
    protocol = results["protocol"]
    axes.set_title(
        f"LeNet-5 on {protocol['dataset']}: {protocol['epochs']} epochs "
        f"({protocol['prune_epochs']} pruning) per point"
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    return _save(figure, path)


def _smallest_file(run: Mapping[str, Any]) -> tuple[str, int] | None:
    files = [
        (name, entry["gzip_bytes"])
        for name, entry in (run.get("files") or {}).items()
        if entry and entry.get("gzip_bytes")
    ]
    return min(files, key=lambda item: item[1]) if files else None


def combined(results: Mapping[str, Any], path: str) -> str:
    """Accuracy against paper-style storage ratio and gzipped file size (``bench.combined``).

    Left: the ratio with indices (32-bit dense weights over values, indices and codebooks).
    Right: the smallest gzipped ``.tflite`` file of each run, dense float file for reference.
    """
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    variants = list(dict.fromkeys(r["variant"] for r in results["runs"]))
    ratios, sizes = [], []
    for variant in variants:
        runs = [r for r in results["runs"] if r["variant"] == variant and "storage" in r]
        runs.sort(key=lambda r: r["storage"]["totals"]["ratio_with_indices"] or math.inf)
        label = VARIANT_LABELS.get(variant, variant)
        x = [r["storage"]["totals"]["ratio_with_indices"] for r in runs]
        ratios += x
        left.plot(x, [100 * r["accuracy"] for r in runs], marker="o", label=label)
        files = [(r, _smallest_file(r)) for r in runs]
        files = [(r, f) for r, f in files if f]
        sizes += [f[1] for _, f in files]
        right.plot(
            [f[1] / 1024 for _, f in files],
            [100 * r["accuracy"] for r, _ in files],
            marker="o",
            label=label,
        )
    dense = results["dense"]
    for axes in (left, right):
        axes.axhline(
            100 * dense["accuracy"],
            color="gray",
            linestyle="--",
            label=f"dense ({100 * dense['accuracy']:.2f}%)",
        )
        axes.set_ylabel("test accuracy (%)")
        axes.grid(True, which="both", alpha=0.3)
    _ratio_axis(left, ratios)
    left.set_xlabel("storage ratio incl. indices and codebooks (paper-style)")
    right.set_xscale("log")
    right.set_xlabel("smallest .tflite file of the run, gzipped (KiB)")
    if dense.get("float_gzip_bytes"):
        right.axvline(
            dense["float_gzip_bytes"] / 1024,
            color="gray",
            linestyle=":",
            label=f"dense float file, gzipped ({dense['float_gzip_bytes'] / 1024:,.0f} KiB)",
        )
    left.legend(fontsize="small")
    right.legend(fontsize="small")
    settings = results["settings"]
    figure.suptitle(
        f"LeNet-5 on {settings['dataset']}: pruning + quantization, "
        f"{results['budget']['epochs']} epochs per run"
    )
    return _save(figure, path)


def layer_bars(entries: Sequence[Mapping[str, Any]], path: str, title: str = "") -> str:
    """Per-layer kept fraction (log scale) and bits per stored value, grouped by run.

    Args:
      entries: ``{"label": str, "layers": [{"name", "kept_fraction", "bits"}]}`` per run;
        ``bits`` may be None (32-bit floats).
      path: PNG path.
      title: figure title.
    """
    plt = _pyplot()
    names = list(dict.fromkeys(layer["name"] for e in entries for layer in e["layers"]))
    figure, (kept_axes, bits_axes) = plt.subplots(1, 2, figsize=(11, 4.0))
    width = 0.8 / max(1, len(entries))
    for index, entry in enumerate(entries):
        by_name = {layer["name"]: layer for layer in entry["layers"]}
        positions = [i + (index - (len(entries) - 1) / 2) * width for i in range(len(names))]
        kept = [by_name.get(n, {}).get("kept_fraction") or 0.0 for n in names]
        bits = [by_name.get(n, {}).get("bits") or 32 for n in names]
        kept_bars = kept_axes.bar(positions, [100 * k for k in kept], width, label=entry["label"])
        bits_axes.bar(positions, bits, width, label=entry["label"])
        for bar, value in zip(kept_bars, kept):
            kept_axes.annotate(
                f"{100 * value:.2g}%",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize="x-small",
            )
    for axes in (kept_axes, bits_axes):
        axes.set_xticks(range(len(names)))
        axes.set_xticklabels(names)
        axes.grid(True, axis="y", alpha=0.3)
    kept_axes.set_yscale("log")
    kept_axes.set_ylabel("weights kept (%)")
    bits_axes.set_ylabel("bits per stored value")
    kept_axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _phase_spans(phases: Sequence[int | None]) -> list[tuple[int, int, int]]:
    """(first epoch, last epoch, phase) for each run of equal phases."""
    spans: list[tuple[int, int, int]] = []
    for epoch, phase in enumerate(phases):
        if phase is None:
            continue
        if spans and spans[-1][2] == phase and spans[-1][1] == epoch - 1:
            spans[-1] = (spans[-1][0], epoch, phase)
        else:
            spans.append((epoch, epoch, phase))
    return spans


def _layer_series(epochs: Sequence[Mapping[str, Any]], suffix: str) -> list[str]:
    """Layer names with a ``<layer><suffix>`` key, in the order the logs list them."""
    keys = dict.fromkeys(k for e in epochs for k in e if k.endswith(suffix))
    return [k[: -len(suffix)] for k in keys]


def admm_history(epochs: Sequence[Mapping[str, Any]], path: str, title: str = "") -> str:
    """ADMM residuals, rho, per-layer sparsity (and distance to levels, and held-out accuracy)
    per epoch, phases shaded.

    Args:
      epochs: one dict per epoch with ``primal_residual``, ``dual_residual``, ``rho``,
        ``<layer>_sparsity``, ``<layer>_quant_error``, ``val_accuracy`` (a fraction) and
        ``phase`` (the phase during the epoch), as ``bench.combined`` and the recipes record
        them; missing keys are skipped.
      path: PNG path.
      title: figure title.
    """
    from matplotlib import ticker

    plt = _pyplot()
    quantized = _layer_series(epochs, "_quant_error")
    accuracy = [e.get("val_accuracy") for e in epochs]
    held_out = any(v is not None for v in accuracy)
    rows = 2 + bool(quantized) + held_out
    figure, panels = plt.subplots(rows, 1, figsize=(8, 2.6 * rows + 0.6), sharex=True)
    residual_axes, sparsity_axes = panels[0], panels[1]
    x = [int(e.get("epoch", i)) + 1 for i, e in enumerate(epochs)]

    def series(key):
        return [e.get(key) for e in epochs]

    for key, label in (("primal_residual", "primal ||W - Z|| / ||W||"), ("dual_residual", "dual")):
        values = series(key)
        if any(v for v in values):
            residual_axes.plot(x, values, marker=".", label=label)
    residual_axes.set_yscale("log")
    residual_axes.set_ylabel("residual")
    handles, labels = residual_axes.get_legend_handles_labels()
    rho = series("rho")
    if any(v for v in rho):
        rho_axes = residual_axes.twinx()
        (line,) = rho_axes.plot(x, rho, color="black", linestyle="--", label="rho")
        rho_axes.set_yscale("log")
        rho_axes.set_ylabel("rho")
        handles.append(line)
        labels.append("rho")
    if handles:
        residual_axes.legend(handles, labels, fontsize="small", loc="best")
    layers = _layer_series(epochs, "_sparsity")
    for name in layers:
        values = [None if v is None else 100 * v for v in series(f"{name}_sparsity")]
        sparsity_axes.plot(x, values, marker=".", label=name)
    sparsity_axes.set_ylabel("sparsity (%)")
    if layers:
        sparsity_axes.legend(fontsize="small", loc="lower right")
    if quantized:
        error_axes = panels[2]
        for name in quantized:
            error_axes.plot(x, series(f"{name}_quant_error"), marker=".", label=name)
        error_axes.set_ylabel("distance to levels\n(relative)")
        error_axes.legend(fontsize="small", loc="best")
    if held_out:
        values = [None if v is None else 100 * v for v in accuracy]
        panels[-1].plot(x, values, marker=".", color="black")
        panels[-1].set_ylabel("validation\naccuracy (%)")
    panels[-1].set_xlabel("epoch")
    panels[-1].xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    shown: set[int] = set()
    for first, last, phase in _phase_spans(series("phase")):
        for axes in panels:
            axes.axvspan(
                x[first] - 0.5, x[last] + 0.5, color=_PHASE_COLORS.get(phase, "#ffffff"), zorder=0
            )
        if phase not in shown:
            shown.add(phase)
            residual_axes.text(
                x[first] - 0.45,
                0.03,
                PHASE_NAMES.get(phase, str(phase)),
                transform=residual_axes.get_xaxis_transform(),
                fontsize="x-small",
                rotation=90,
                va="bottom",
            )
    for axes in panels:
        axes.grid(True, alpha=0.3)
    if title:
        residual_axes.set_title(title)
    return _save(figure, path)
