"""The sections of ``docs/RESULTS.md`` (:mod:`bench.results`), each a list of Markdown lines:
the published numbers beside ours, the recipes against their targets, one section per benchmark
output, the ablation, the shortfalls and the run-to-run noise.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench import (
    ablation_table,
    comparisons,
    plots,
    results_analysis,
    results_recipe,
    structured_table,
    tables,
    targets,
)
from bench import results_format as fmt

__all__ = [
    "PUBLISHED",
    "ablation",
    "combined",
    "frontier",
    "noise",
    "overhead",
    "published",
    "recipe_targets",
    "shortfall",
    "structured",
]

# The published figures this report sets ours beside. "key" names what we compare with.
PUBLISHED = (
    {
        "source": "Zhang et al. 2018, ADMM weight pruning (ECCV)",
        "claim": "LeNet-5 on MNIST, pruning without accuracy loss",
        "value": "71.2x",
        "key": "pruning",
    },
    {
        "source": "Ye et al. 2018, unified ADMM pruning + clustering/quantization",
        "claim": "LeNet-5 on MNIST, pruning at ~99.0% accuracy",
        "value": "167x",
        "key": "pruning_167",
    },
    {
        "source": "Ye et al. 2018",
        "claim": "LeNet-5, pruning + quantization, weight data only",
        "value": "1,910x",
        "key": "weight_data_ratio",
    },
    {
        "source": "Ye et al. 2018",
        "claim": "LeNet-5, pruning + quantization, including indices",
        "value": "623x",
        "key": "ratio_with_indices",
    },
    {
        "source": "Han et al. 2016, Deep Compression (ICLR)",
        "claim": "LeNet-5, pruning (12x) + quantization + Huffman coding",
        "value": "~39x",
        "key": "ratio_with_indices",
    },
    {
        "source": "tfmot guides (pruning, collaborative optimization)",
        "claim": "pruning + quantization, gzipped .tflite against the dense gzipped file",
        "value": "~10x",
        "key": "gzip",
    },
)

# Settings whose change between two runs leaves only run-to-run noise.
_NOISE_SETTINGS = {"seed"}
_LIBRARY_LABELS = {"tf_admm": "tf-admm", "tfmot": "tfmot"}


def published(
    frontiers: Sequence[Mapping[str, Any]],
    combined: Sequence[Mapping[str, Any]],
    recipe: Mapping[str, Any] | None = None,
    claims: Mapping[str, str] | None = None,
) -> list[str]:
    """The published figures beside ours. ``claims``: more texts for the "ours" column by
    ``PUBLISHED`` key (recipe runs over seeds, :func:`bench.targets.claims`); with them the
    167x row shows them instead of repeating the frontier's verdict."""
    claims = dict(claims or {})
    mnist = next((d for d in frontiers if fmt.dataset(d) == "mnist"), None)
    quant = next((d for d in combined if fmt.dataset(d) == "mnist"), None)
    ours: dict[str, str] = {}
    if mnist is not None:
        tolerance = mnist["tolerance_points"]
        seeds = len({r["seed"] for r in mnist["records"]})
        dense = statistics.fmean({r["seed"]: r["dense"]["test"] for r in mnist["records"]}.values())
        parts = []
        for comparison in comparisons.comparisons(mnist["records"], tolerance):
            highest = comparison.highest
            parts.append(
                f"{comparison.name.replace('_', ' ')}: "
                + ", ".join(
                    f"{_LIBRARY_LABELS[library]} "
                    + ("none within it" if ratio is None else f"{ratio:g}x")
                    for library, ratio in highest.items()
                )
            )
        ours["pruning"] = (
            "; ".join(parts)
            + f" (highest ratio whose mean test accuracy over {seeds} seed"
            + ("s" if seeds > 1 else "")
            + f" is within {tolerance:g} point of dense, {fmt.percent(dense)}% on average)"
        )
        near = {
            (arm, ratio): cell
            for (arm, ratio), cell in comparisons.cells(mnist["records"]).items()
            if abs(ratio - 167) < 1
        }
        if near:
            ours["pruning_167"] = "; ".join(
                f"{arm} {ratio:g}x at {comparisons.format_cell(cell.test_mean, cell.test_sd)} "
                "points from dense"
                for (arm, ratio), cell in near.items()
            )
        elif "pruning_167" not in claims:
            ours["pruning_167"] = ours["pruning"]
    if quant is not None:
        config = [r for r in quant["runs"] if r["point"] == "config"]
        for key in ("weight_data_ratio", "ratio_with_indices"):
            ours[key] = "; ".join(
                f"{plots.VARIANT_LABELS.get(r['variant'], r['variant'])} "
                f"{fmt.ratio(fmt.nested(r, f'storage.totals.{key}'), 0)} "
                f"({fmt.percent(r['accuracy'])}%)"
                for r in config
            )
        dense_gzip = quant["dense"].get("float_gzip_bytes")
        if dense_gzip:
            parts = []
            for r in config:
                smallest = fmt.smallest_file(r)
                if smallest:
                    parts.append(
                        f"{plots.VARIANT_LABELS.get(r['variant'], r['variant'])} "
                        f"{fmt.ratio(dense_gzip / smallest[1])} ({smallest[0]})"
                    )
            ours["gzip"] = "; ".join(parts)
    for key, text in [*claims.items(), *(results_recipe.claims(recipe) if recipe else {}).items()]:
        ours[key] = f"{ours[key]}; {text}" if key in ours else text
    rows = [
        (p["source"], p["claim"], p["value"], ours.get(p["key"], "no data yet")) for p in PUBLISHED
    ]
    return [
        "## Published numbers beside ours",
        "",
        "The papers' figures are for their own training runs and storage formats; ours are "
        "from the runs below (LeNet-5 on MNIST; accuracy in parentheses). The storage ratios "
        "are counted by `tf_admm.storage` (32-bit dense weights over stored values, relative "
        "indices with fillers, codebooks), without Huffman coding; the gzip ratio is the dense "
        "float `.tflite` file gzipped over the smallest compressed file gzipped.",
        "",
        fmt.table(("source", "what", "published", "ours"), rows),
        "",
    ]


def recipe_targets(measured: Sequence[targets.Result], out: str) -> list[str]:
    """What the shipped recipes must show and their verdicts (:mod:`bench.targets`); nothing
    when no target was measured."""
    if not measured:
        return []
    return ["## The recipes against their targets", "", targets.format_markdown(measured, out), ""]


def frontier_variant(doc: Mapping[str, Any]) -> tuple[str, str]:
    """What tells a frontier protocol apart from another of its dataset, as a heading suffix
    and a file-name suffix: ``(", 60 epochs, distillation", "_60ep_distilled")``."""
    protocol = doc["protocol"]
    words, slug = f", {protocol['epochs']} epochs", f"_{protocol['epochs']}ep"
    if (protocol.get("distill_weight") or 0) > 0:
        words, slug = words + ", distillation", slug + "_distilled"
    return words, slug


def frontier(
    doc: Mapping[str, Any],
    out: str,
    plot_directory: str,
    outputs: list[str],
    variant: bool = False,
) -> list[str]:
    """The section of one ``bench.frontier`` document; its plot's path goes onto ``outputs``.

    ``variant``: another protocol of a dataset that already has a section; its heading and
    plot name then say what sets it apart (:func:`frontier_variant`).
    """
    dataset = fmt.dataset(doc)
    protocol = doc["protocol"]
    tolerance = doc["tolerance_points"]
    records = doc["records"]
    words, slug = frontier_variant(doc) if variant else ("", "")
    png = plots.frontier(doc, os.path.join(plot_directory, f"frontier_{dataset}{slug}.png"))
    outputs.append(png)
    dense = {r["seed"]: r["dense"] for r in records}
    lines = [
        f"## Accuracy against pruning ratio: LeNet-5 on {dataset}{words}",
        "",
        fmt.provenance(doc),
        "",
        f"Protocol (`bench.sweep`): one dense LeNet-5 per seed ({protocol['pretrain_epochs']} "
        f"epochs), every arm and ratio of a seed starts from it. {protocol['epochs']} epochs "
        f"per point: {protocol['prune_epochs']} of pruning (tf-admm: ADMM with Z/U every "
        f"{protocol['update_every']} steps, rho from {protocol['rho']:g} x"
        f"{protocol['rho_multiplier']:g} per update, then the hard projection; tfmot: "
        "PolynomialDecay from 0 to the final sparsity, a mask update at most every "
        f"{protocol['update_every']} steps), then "
        f"{protocol['epochs'] - protocol['prune_epochs']} of masked retraining with a cosine "
        f"learning rate from {protocol['learning_rate']:g} to "
        f"{protocol['final_learning_rate']:g}; Adam, batch {protocol['batch_size']}. The last "
        f"{protocol['validation_examples']:,} training images are the validation split: "
        "choices are made on it, the test set only reports. Arms: `tf_admm:lamp` (tf-admm, "
        "LAMP allocation), `tfmot:lamp` (tfmot with the very same kept counts), "
        "`tfmot:uniform` (one sparsity for every layer).",
        "",
        "Dense models (test / validation accuracy): "
        + ", ".join(
            f"seed {seed} {fmt.percent(d['test'])}% / {fmt.percent(d['validation'])}%"
            for seed, d in sorted(dense.items())
        )
        + ".",
        "",
        "Per arm and target ratio, mean ± sample sd over the seeds of the gap to each seed's "
        "dense model, in accuracy points:",
        "",
        fmt.table(comparisons.ARM_HEADER, comparisons.arm_rows(comparisons.cells(records))),
        "",
    ]
    for comparison in comparisons.comparisons(records, tolerance):
        lines += [
            f"### {comparison.title}",
            "",
            fmt.table(comparisons.COMPARISON_HEADER, comparisons.comparison_rows(comparison)),
            "",
            f"**{comparison.verdict()}**",
            "",
        ]
    missing = [p for p in doc.get("points") or [] if p.get("source") == "missing"]
    if missing:
        lines += [
            f"{len(missing)} requested points were not cached and not run: "
            + ", ".join(f"seed {p['seed']} {p['arm']} {p['ratio']:g}x" for p in missing)
            + ".",
            "",
        ]
    lines += [fmt.image(out, png, f"accuracy against ratio, {dataset}{words}"), ""]
    return lines


def combined(
    doc: Mapping[str, Any], out: str, plot_directory: str, outputs: list[str]
) -> list[str]:
    """The section of one ``bench.combined`` document; its plots' paths go onto ``outputs``."""
    dataset = fmt.dataset(doc)
    directory = plot_directory

    def file_cell(entry):
        if not entry:
            return "-"
        if "error" in entry:
            return "not accepted"
        return (
            f"{entry['file_bytes']:,} ({entry['gzip_bytes']:,}) {fmt.percent(entry['accuracy'])}%"
        )

    rows = []
    for r in doc["runs"]:
        totals = r["storage"]["totals"]
        files = r.get("files") or {}
        rows.append(
            (
                r["point"],
                plots.VARIANT_LABELS.get(r["variant"], r["variant"]),
                r["epochs"],
                fmt.percent(r["accuracy"]),
                fmt.ratio(r["pruning_ratio"]),
                fmt.ratio(totals["weight_data_ratio"], 0),
                fmt.ratio(totals["ratio_with_indices"], 0),
                file_cell(files.get("tflite_export")),
                file_cell(files.get("converter_default")),
                f"{r['seconds']:.0f}",
            )
        )
    header = (
        "point",
        "run",
        "epochs",
        "accuracy %",
        "pruning",
        "weight data",
        "with indices",
        "tflite_export: B (gzip) accuracy",
        "converter DEFAULT: B (gzip) accuracy",
        "seconds",
    )
    layer_rows = []
    config = [r for r in doc["runs"] if r["point"] == doc["points"][0]["name"]]
    sizes = doc["sizes"]
    for r in config:
        by_layer = {layer["name"]: layer for layer in r["storage"]["layers"]}
        for name in doc["layers"]:
            layer = by_layer.get(name, {})
            layer_rows.append(
                (
                    name,
                    plots.VARIANT_LABELS.get(r["variant"], r["variant"]),
                    f"{r['nonzeros'][name]:,} / {sizes[name]:,}",
                    layer.get("bits_per_value", "-"),
                    (r.get("distinct_values") or {}).get(name, "-"),
                    (r.get("clusters") or {}).get(name, "-"),
                    ((r.get("centroid_init") or {}).get(name) or {}).get("used", "-"),
                )
            )
    dense = doc["dense"]
    budget = doc["budget"]
    png = plots.combined(doc, os.path.join(directory, f"combined_{dataset}.png"))
    outputs.append(png)
    entries = [
        {
            "label": plots.VARIANT_LABELS.get(r["variant"], r["variant"]),
            "layers": [
                {
                    "name": layer["name"],
                    "kept_fraction": layer["num_nonzeros"] / layer["num_weights"],
                    "bits": layer["bits_per_value"],
                }
                for layer in r["storage"]["layers"]
            ],
        }
        for r in config
    ]
    layers_png = plots.layer_bars(
        entries,
        os.path.join(directory, f"combined_{dataset}_layers.png"),
        f"Per-layer kept weights and bits per value ({doc['points'][0]['name']})",
    )
    outputs.append(layers_png)
    lines = [
        f"## Pruning + quantization: LeNet-5 on {dataset}",
        "",
        fmt.provenance(doc),
        "",
        f"Config `{doc['config']['path']}`; budget {budget['epochs']} epochs for each library: "
        f"tf-admm {budget['scheduled']} scheduled rounds + {budget['final']} epochs on the "
        f"levels; tfmot {budget['prune_ramp']} ramp + {budget['prune_finetune']} fine-tuning, "
        f"{budget['cluster']} clustering, {budget['pcqat']} PCQAT. Dense LeNet-5: "
        f"{fmt.percent(dense['accuracy'])}%, float `.tflite` {dense['float_file_bytes']:,} B "
        f"(gzip {dense['float_gzip_bytes']:,} B).",
        "",
        fmt.table(header, rows),
        "",
        "Storage ratios as `tf_admm.report.storage_report` counts them (PCQAT: from the int8 "
        "codes of the converter's file, per-channel scales counted as codebook). Files: "
        "`tflite_export.export` (LiteRT) and the plain TFLite converter with "
        "`Optimize.DEFAULT`, bytes, gzip bytes and test accuracy in LiteRT.",
        "",
        fmt.table(
            ("layer", "run", "kept", "bits", "distinct values", "tfmot clusters", "centroid init"),
            layer_rows,
        ),
        "",
        fmt.image(out, png, f"pruning + quantization, {dataset}"),
        "",
        fmt.image(out, layers_png, f"per-layer kept weights and bits, {dataset}"),
        "",
    ]
    admm = next((r for r in config if r["variant"] == "tf_admm" and r.get("history")), None)
    if admm is not None:
        history_png = plots.admm_history(
            admm["history"],
            os.path.join(directory, f"combined_{dataset}_admm.png"),
            f"tf-admm on {dataset}: ADMM residuals, rho and sparsity per epoch",
        )
        outputs.append(history_png)
        lines += [fmt.image(out, history_png, f"ADMM history, {dataset}"), ""]
    return lines


def overhead(doc: Mapping[str, Any]) -> list[str]:
    s = doc["settings"]
    return [
        "## Training-step overhead",
        "",
        fmt.provenance(doc),
        "",
        f"Batch {s['batch_size']}, {s['repeats']} interleaved repeats of {s['steps']} timed "
        f"steps per variant, sparsity {s['sparsity']}.",
        "",
        fmt.table(tables.OVERHEAD_HEADER, tables.overhead_rows(doc)),
        "",
    ]


def structured(doc: Mapping[str, Any]) -> list[str]:
    """The :mod:`bench.structured_lenet5` table: trained LeNet-5, filter + column pruning,
    shrunk, in LiteRT beside dense, unstructured and tfmot 2:4."""
    run = doc.get("run") or {}
    s = doc["settings"]
    lines = [
        f"## Structured pruning in LiteRT: LeNet-5 on {s.get('dataset', '?')}",
        "",
        fmt.provenance(doc),
        f"- commit: {run.get('commit', '?')}",
        "",
        f"Dense {s['pretrain_epochs']} epochs; ADMM {s['admm_epochs']} epochs then "
        f"{s['retrain_epochs']} of masked retraining (tfmot 2:4: "
        f"{s['admm_epochs'] + s['retrain_epochs']} epochs); validation: the last "
        f"{s['validation_examples']:,} training images.",
        "",
        fmt.table(structured_table.header(doc), structured_table.rows(doc)),
        "",
    ]
    return lines + [f"- {note}" for note in structured_table.notes(doc)] + [""]


def noise(groups: Mapping[tuple, list[Mapping[str, Any]]]) -> list[str]:
    lines = ["## Run-to-run noise", ""]
    pairs = [(key, docs[0], other) for key, docs in groups.items() for other in docs[1:]]
    if not pairs:
        return lines + [
            "Only one output of each benchmark was given. Pass a second run of the same "
            "benchmark (e.g. another seed) with `--compare` to measure the noise.",
            "",
        ]
    for key, first, second in pairs:
        result = results_analysis.noise(first, second)
        lines += [
            f"### {fmt.title(key)}: `{second['_path']}` minus `{first['_path']}`",
            "",
        ]
        if result["settings"]:
            lines += [
                "Settings that differ: "
                + ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in result["settings"].items()),
                "",
            ]
        rows = []
        for point, measures in result["points"]:
            cells = [" / ".join(str(p) for p in point)]
            for measure in ("accuracy", "ratio"):
                if measure in measures:
                    a, b, d = measures[measure]
                    if measure == "accuracy":
                        cells.append(f"{100 * a:.2f} -> {100 * b:.2f} ({100 * d:+.2f})")
                    else:
                        cells.append(f"{a:,.2f} -> {b:,.2f} ({d:+.2f})")
                else:
                    cells.append("-")
            rows.append(cells)
        lines += [fmt.table(("point", "accuracy % (points)", "ratio"), rows), ""]
        if result["max_accuracy_points"] is not None:
            largest = f"Largest accuracy difference: {result['max_accuracy_points']:.2f} points."
            if set(result["settings"]) <= _NOISE_SETTINGS:
                largest += " Differences between libraries smaller than this are within the noise."
            else:
                largest += (
                    " The runs differ in more than the seed, so this is not only noise: compare "
                    "runs that differ in the seed alone."
                )
            lines += [largest, ""]
    return lines


def ablation(path: str) -> list[str]:
    ratio, ingredients = ablation_table.load_ingredients(path)
    rows = ablation_table.measure(ingredients)
    lines = [f"## Ablation: what each ingredient adds at {ratio:g}x", ""]
    lines += [
        f"Ingredients and their runs from `{path}` (`python -m bench.ablation` and recipe runs; "
        "each row's runs differ in the ingredient alone).",
        "",
        ablation_table.format_markdown(ratio, rows),
        "",
    ]
    empty = [row.ingredient.name for row in rows if not row.with_ or not row.without]
    if empty:
        lines += [f"Not measured yet (no runs on one side): {'; '.join(empty)}.", ""]
    return lines


def shortfall(docs: Sequence[Mapping[str, Any]]) -> list[str]:
    found = results_analysis.shortfalls(docs)
    lines = [
        "## Where tf-admm does not win",
        "",
        "Computed from the runs above: every comparison in which tfmot's result is at least as "
        "good as tf-admm's (the frontier's mean test gap at the same target in both "
        "comparisons, the highest ratio within the dataset's tolerance of dense, and where "
        "tf-admm's is not twice tfmot's; storage ratios, file sizes, wall time, step time and "
        "training state).",
        "",
    ]
    if not docs:
        return lines + ["No benchmark output to compare.", ""]
    if not found:
        return lines + ["None in these runs.", ""]
    return lines + [f"- {item}" for item in found] + [""]
