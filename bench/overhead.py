"""Training-step overhead of tf-admm and tfmot against plain Keras, and the memory they add.

Usage:
  python -m bench.overhead                       # LeNet-5 and a VGG-style net, batch 128
  python -m bench.overhead --smoke               # seconds: tiny batches, few steps
  python -m bench.overhead --models=lenet5 --repeats=5 --steps=60 --out=/tmp/overhead.json
  python -m bench.overhead --stacks=keras3_tensorflow,keras3_jax   # Keras 3 only

Every stack of ``--stacks`` (default all three: ``tf_keras``, ``keras3_tensorflow``,
``keras3_jax``) times the same models and variants with its own Keras; a Keras 3 backend this
process does not run (JAX, as Keras 3 here is on TensorFlow) is timed by this benchmark in a
subprocess with ``KERAS_BACKEND`` set (:mod:`bench.overhead_stacks`). One table then gives, per
model and stack, the ADMM and retraining steps against that stack's plain ``fit`` (target
1.10x, issue 16) and the seconds of one epoch of ``--warmup + --steps`` steps.

For each model the variants are trained on one synthetic batch repeated (the input pipeline
costs nothing and is the same for all), each for ``--warmup + --steps`` steps per repeat, the
variants interleaved within every repeat so that a change of machine load hits them alike.
A callback records the wall time between consecutive batch ends; the first ``--warmup`` steps
of every fit are dropped (every variant is also traced once before timing starts).

Variants:
  plain            the dense model, ``fit`` with no callback but the timer.
  admm             tf-admm during ADMM (penalty rho/2 ||W - Z + U||^2 in the loss).
  retrain          tf-admm after the hard projection (masked retraining).
  tfmot            ``prune_low_magnitude`` with ``ConstantSparsity`` (mask update every 100
                   steps), ``UpdatePruningStep`` (tf_keras only: n/a on Keras 3).
  admm_no_penalty  diagnostic: ``admm`` with the penalty replaced by 0, which splits the
                   overhead into penalty and the rest (wrapper, masking, custom train step).

The table gives median and mean milliseconds per step and the ratio of medians to ``plain``
(with the range of the per-repeat ratios); the Z/U update that tf-admm runs once per round
(between steps) is timed separately. ``extra state`` is the bytes of variables the library
adds (tf-admm: Z, U, mask, rho per weight and four step/phase counters; tfmot: mask,
threshold, step), optimizer slots excluded.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
from absl import app, flags, logging

import tf_admm
from bench import common, overhead_stacks, tables, timing
from bench.common import tfmot
from recipes import models
from recipes.stacks import Stack
from tf_admm.compat import keras, keras3, tf

__all__ = ["MODELS", "VARIANTS", "Settings", "run", "vgg_style"]

VARIANTS = ("plain", "admm", "retrain", "tfmot", "admm_no_penalty")
TARGET_RATIO = 1.15  # Goal for the ADMM step against a plain step.


def vgg_style(width: int = 32, num_classes: int = 10, *, api=keras) -> keras.Model:
    """VGG-style convnet for 32x32x3 inputs: three blocks of two 3x3 convs and a pool, FC 256.

    Channels ``width``, ``2 * width``, ``4 * width``; with ``width=32``, 813,408 kernel weights
    (fc1 holds 524,288 of them). ``api``: tf_keras (default) or Keras 3.
    """
    inputs = api.Input((32, 32, 3), name="image")
    h = inputs
    for block, channels in enumerate((width, 2 * width, 4 * width), start=1):
        for index in (1, 2):
            h = api.layers.Conv2D(
                channels, 3, padding="same", activation="relu", name=f"conv{block}_{index}"
            )(h)
        h = api.layers.MaxPool2D(2, name=f"pool{block}")(h)
    h = api.layers.Flatten(name="flatten")(h)
    h = api.layers.Dense(256, activation="relu", name="fc1")(h)
    outputs = api.layers.Dense(num_classes, name="fc2")(h)
    return api.Model(inputs, outputs, name="vgg_style")


MODELS = {
    "lenet5": (models.lenet5, (28, 28, 1)),
    "vgg": (vgg_style, (32, 32, 3)),
}


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to time; ``run`` takes it so tests need no flags.

    Attributes:
      models: keys of :data:`MODELS`.
      variants: among :data:`VARIANTS`; must include ``plain``.
      batch_size: examples per step.
      steps: timed steps per variant and repeat.
      warmup: steps dropped at the start of every fit.
      repeats: rounds over all variants.
      sparsity: pruning target of every kernel, for both libraries.
      learning_rate: Adam learning rate.
      seed: weights and synthetic data.
      out: JSON path, or None.
      command: the command line to report.
      stacks: among :data:`bench.overhead_stacks.STACKS` (tf_keras, Keras 3 on TensorFlow,
        Keras 3 on JAX).
    """

    models: tuple[str, ...] = ("lenet5", "vgg")
    variants: tuple[str, ...] = VARIANTS
    batch_size: int = 128
    steps: int = 40
    warmup: int = 5
    repeats: int = 3
    sparsity: float = 0.9
    learning_rate: float = 1e-3
    seed: int = 0
    out: str | None = None
    command: str = "bench.overhead.run()"
    stacks: tuple[str, ...] = overhead_stacks.STACKS

    def __post_init__(self):
        if not self.stacks or set(self.stacks) - set(overhead_stacks.STACKS):
            raise ValueError(
                f"Expected stacks among {list(overhead_stacks.STACKS)}; "
                f"received: stacks={list(self.stacks)}"
            )
        unknown = sorted(set(self.models) - set(MODELS))
        if unknown or not self.models:
            raise ValueError(
                f"Expected models among {sorted(MODELS)}; received: models={list(self.models)}"
            )
        if "plain" not in self.variants or set(self.variants) - set(VARIANTS):
            raise ValueError(
                f"Expected variants among {list(VARIANTS)}, including 'plain'; "
                f"received: variants={list(self.variants)}"
            )
        for field in ("batch_size", "steps", "warmup", "repeats"):
            if getattr(self, field) < 1:
                raise ValueError(f"Expected {field} >= 1; received: {field}={getattr(self, field)}")

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """A few seconds per model: batch 16, 3 timed steps, 2 repeats."""
        values: dict[str, Any] = dict(batch_size=16, steps=3, warmup=1, repeats=2)
        values.update(overrides)
        return cls(**values)


@dataclasses.dataclass
class _Variant:
    name: str
    model: keras.Model
    callbacks: list
    intervals: list[list[float]] = dataclasses.field(default_factory=list)
    fit_seconds: list[float] = dataclasses.field(default_factory=list)


def _admm_spec(sparsity: float) -> tf_admm.Spec:
    # Rounds far beyond any timing run, so that the model stays in the ADMM phase.
    return tf_admm.Spec(
        default=tf_admm.Rule(sparsity=sparsity),
        rho=tf_admm.RhoSchedule(1e-3),
        update_every=1,
        update_unit="epoch",
        admm_rounds=1_000_000,
    )


def _build(name: str, settings: Settings, model_fn, stack: Stack) -> _Variant:
    api = stack.api
    api.utils.set_random_seed(settings.seed)
    dense = model_fn(api=api)
    callbacks: list = []
    if name == "plain":
        model = dense
    elif name == "tfmot":
        schedule = tfmot.sparsity.keras.ConstantSparsity(
            settings.sparsity, begin_step=0, frequency=100
        )
        model = tfmot.sparsity.keras.prune_low_magnitude(dense, pruning_schedule=schedule)
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()]
    else:
        model = tf_admm.admm_wrap(dense, _admm_spec(settings.sparsity))
        callbacks = tf_admm.callbacks()
        if name == "retrain":
            for wrapper in model.admm_wrappers:
                wrapper.hard_project()
            model.admm_phase.assign(int(tf_admm.Phase.RETRAIN))
        elif name == "admm_no_penalty":
            # Instance attribute shadows the method that train_step (compute_loss) calls.
            zero = (lambda: keras3.ops.zeros(())) if stack.keras3 else (lambda: tf.constant(0.0))
            model.admm_penalty = zero
    model.compile(
        optimizer=api.optimizers.Adam(settings.learning_rate),
        loss=api.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return _Variant(name, model, callbacks)


def _synthetic(settings: Settings, input_shape) -> tf.data.Dataset:
    rng = np.random.default_rng(settings.seed)
    images = rng.uniform(0.0, 1.0, (settings.batch_size, *input_shape)).astype(np.float32)
    labels = rng.integers(0, 10, settings.batch_size).astype(np.int64)
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def _fit(variant: _Variant, dataset, steps: int, timer=None) -> None:
    extra = [timer] if timer is not None else []
    variant.model.fit(
        dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=variant.callbacks + extra
    )


def _bytes(variable) -> int:
    dtype = getattr(variable.dtype, "as_numpy_dtype", variable.dtype)  # tf.DType or a name
    return int(np.prod(tuple(variable.shape))) * np.dtype(dtype).itemsize


def _extra_state_bytes(variant: _Variant, stack: Stack) -> int:
    if variant.name == "plain":
        return 0
    if stack.keras3:
        return overhead_stacks.keras3_state_bytes(variant.model)
    return common.wrapper_state_bytes(variant.model)


def _admm_update_ms(model: tf_admm.AdmmModel, repeats: int = 5) -> float:
    """Median time of one Z/U update over all wrappers (run once per ADMM round)."""

    def update():
        for wrapper in model.admm_wrappers:
            wrapper.admm_update()

    timing.warm_up(update, 1)
    return 1e3 * timing.median(timing.time_calls(update, repeats))


def _time_model(settings: Settings, model_name: str, stack: Stack) -> dict[str, Any]:
    model_fn, input_shape = MODELS[model_name]
    dataset = _synthetic(settings, input_shape)
    # tfmot prunes tf_keras models only.
    names = [n for n in settings.variants if not (stack.keras3 and n == "tfmot")]
    variants = [_build(name, settings, model_fn, stack) for name in names]
    timer_class = overhead_stacks.Keras3BatchTimer if stack.keras3 else common.BatchTimer
    for variant in variants:  # Traces the train function outside the timed fits.
        timing.warm_up(functools.partial(_fit, variant, dataset, 2), 1)

    def timed_fit(variant: _Variant) -> list[float]:
        """One repeat: a fit of warmup + steps steps; the steps after the warm-up."""
        timer = timer_class()
        start = timing.time_calls(
            functools.partial(_fit, variant, dataset, settings.warmup + settings.steps, timer), 1
        )
        variant.fit_seconds.extend(start)
        return timer.intervals[settings.warmup :]

    # Every variant once per repeat, always in the same order.
    repeats = timing.interleaved(
        [functools.partial(timed_fit, v) for v in variants], settings.repeats, rotate=False
    )
    for variant, intervals in zip(variants, repeats):
        variant.intervals.extend(intervals)
    plain = next(v for v in variants if v.name == "plain")
    plain_medians = [timing.median(r) for r in plain.intervals]
    plain_median = timing.median([t for r in plain.intervals for t in r])
    parameters = sum(int(np.prod(tuple(v.shape))) for v in plain.model.trainable_weights)
    result: dict[str, Any] = {
        "input_shape": list(input_shape),
        "weights": parameters,
        "weight_bytes": sum(_bytes(v) for v in plain.model.trainable_weights),
        "variants": {},
    }
    for variant in variants:
        flat = [t for r in variant.intervals for t in r]
        paired = [timing.median(r) / p for r, p in zip(variant.intervals, plain_medians)]
        entry = {
            "median_ms": 1e3 * timing.median(flat),
            "mean_ms": 1e3 * float(np.mean(flat)),
            "ratio": timing.median(flat) / plain_median,
            "ratio_per_repeat": paired,
            "extra_state_bytes": _extra_state_bytes(variant, stack),
            "step_ms": [[1e3 * t for t in r] for r in variant.intervals],
            # A fit of one epoch of warmup + steps steps, set-up and epoch end included.
            "epoch_s": timing.median(variant.fit_seconds),
            "epoch_s_per_repeat": list(variant.fit_seconds),
        }
        if variant.name == "admm":
            entry["zu_update_ms"] = _admm_update_ms(variant.model)
        result["variants"][variant.name] = entry
    return result


def _diagnosis(variants: dict[str, Any]) -> str | None:
    """Where the ADMM step's extra time goes, from the diagnostic variant."""
    if "admm" not in variants:
        return None
    ratio = variants["admm"]["ratio"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    line = f"ADMM step {ratio:.2f}x plain: {verdict} the {TARGET_RATIO:.2f}x target"
    if "admm_no_penalty" in variants:
        plain = variants["plain"]["median_ms"]
        extra = variants["admm"]["median_ms"] - plain
        rest = variants["admm_no_penalty"]["median_ms"] - plain
        line += (
            f"; of its {extra:+.2f} ms/step, the penalty term costs {extra - rest:+.2f} ms and "
            f"the wrapper (effective weights, custom train step) {rest:+.2f} ms"
        )
    return line


def format_results(results: dict[str, Any]) -> str:
    """Per stack the table of every variant and its notes; then the stacks side by side."""
    stacks = results.get("stacks") or {"tf_keras": {"models": results["models"]}}
    lines = []
    for stack, entry in stacks.items():
        lines += [
            f"{stack}:",
            common.format_table(tables.OVERHEAD_HEADER, tables.overhead_rows(entry)),
        ]
        for model_name, model in entry["models"].items():
            admm = model["variants"].get("admm", {})
            if "zu_update_ms" in admm:
                lines.append(
                    f"{model_name} on {stack}: {model['weights']:,} parameters "
                    f"({model['weight_bytes'] / 1024:,.1f} KiB); one Z/U update "
                    f"(once per ADMM round) takes {admm['zu_update_ms']:.1f} ms"
                )
            diagnosis = _diagnosis(model["variants"])
            if diagnosis:
                lines.append(f"{model_name} on {stack}: {diagnosis}")
        lines.append("")
    settings = results.get("settings") or {}
    epoch_steps = settings.get("warmup", 0) + settings.get("steps", 0)
    lines.append(overhead_stacks.format_stacks(stacks, epoch_steps))
    if any(Stack(stack).keras3 for stack in stacks) and "tfmot" in settings.get("variants", ()):
        lines.append("tfmot prunes tf_keras models only: n/a on Keras 3.")
    return "\n".join(lines)


def _argv(settings: Settings) -> list[str]:
    """The flags that make another ``bench.overhead`` process time the same work."""
    return [
        f"--models={','.join(settings.models)}",
        f"--variants={','.join(settings.variants)}",
        f"--batch_size={settings.batch_size}",
        f"--steps={settings.steps}",
        f"--warmup={settings.warmup}",
        f"--repeats={settings.repeats}",
        f"--sparsity={settings.sparsity}",
        f"--seed={settings.seed}",
    ]


def _time_stack(settings: Settings, name: str) -> dict[str, Any]:
    """Every model on stack ``name``: here if this process runs it, else in a subprocess."""
    stack = Stack(name)
    if not stack.available():
        return overhead_stacks.time_elsewhere(name, _argv(settings))
    found: dict[str, Any] = {"models": {}, "process": "this", "backend": stack.backend}
    for model_name in settings.models:
        found["models"][model_name] = _time_model(settings, model_name, stack)
        stack.api.backend.clear_session()
    return found


def run(settings: Settings) -> dict[str, Any]:
    """Times every variant on every model; prints the table and returns (and writes) results."""
    machine = common.machine_info()
    start = common.snapshot()
    print(common.format_header("tf-admm training-step overhead", settings.command, machine, start))
    print(
        f"batch {settings.batch_size}, {settings.repeats} repeats x {settings.steps} timed steps "
        f"(+{settings.warmup} dropped) per variant, interleaved; sparsity {settings.sparsity}"
    )
    results: dict[str, Any] = {
        "benchmark": "overhead",
        "command": settings.command,
        "settings": dataclasses.asdict(settings),
        "machine": machine,
        "start": start,
        "stacks": {},
    }
    for name in settings.stacks:
        results["stacks"][name] = _time_stack(settings, name)
    # tf_keras' results where they always were (bench.results reads them there).
    results["models"] = results["stacks"].get("tf_keras", {}).get("models", {})
    results["end"] = common.snapshot()
    results["target_ratio"] = TARGET_RATIO
    return common.finish(results, format_results(results), out=settings.out)


# Flags are defined only when this module is the program, so that tests can import several
# benchmarks and recipes (which share flag names) in one process.
def _define_flags() -> dict[str, flags.FlagHolder]:
    return {
        "smoke": flags.DEFINE_bool("smoke", False, "Tiny run (seconds) to check that it works."),
        "models": flags.DEFINE_list("models", list(MODELS), f"Models among {list(MODELS)}."),
        "variants": flags.DEFINE_list("variants", list(VARIANTS), "Variants to time."),
        "batch_size": flags.DEFINE_integer("batch_size", None, "Batch size (default 128)."),
        "steps": flags.DEFINE_integer("steps", None, "Timed steps per fit (default 40)."),
        "warmup": flags.DEFINE_integer("warmup", None, "Dropped steps per fit (default 5)."),
        "repeats": flags.DEFINE_integer("repeats", None, "Interleaved repeats (default 3)."),
        "sparsity": flags.DEFINE_float("sparsity", 0.9, "Pruning target of every kernel."),
        "stacks": flags.DEFINE_list(
            "stacks",
            list(overhead_stacks.STACKS),
            f"Stacks among {list(overhead_stacks.STACKS)}; a Keras 3 backend other than this "
            "process's is timed in a subprocess.",
        ),
        "seed": flags.DEFINE_integer("seed", 0, "Seed of weights and synthetic data."),
        "out": flags.DEFINE_string(
            "out", "runs/bench/overhead.json", "JSON results path ('' for none)."
        ),
    }


_FLAGS: dict[str, flags.FlagHolder] = {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.ERROR)  # Per-round ADMM logs and retracing notes.
    given = {
        name: _FLAGS[name].value
        for name in ("batch_size", "steps", "warmup", "repeats")
        if _FLAGS[name].value is not None
    }
    values = dict(
        models=tuple(_FLAGS["models"].value),
        variants=tuple(_FLAGS["variants"].value),
        sparsity=_FLAGS["sparsity"].value,
        seed=_FLAGS["seed"].value,
        stacks=tuple(_FLAGS["stacks"].value),
        out=_FLAGS["out"].value or None,
        command=common.command_line("bench.overhead"),
        **given,
    )
    try:
        settings = Settings.smoke(**values) if _FLAGS["smoke"].value else Settings(**values)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    run(settings)


if __name__ == "__main__":
    _FLAGS.update(_define_flags())
    app.run(main)
