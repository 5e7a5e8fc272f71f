"""Settings of :mod:`bench.latency` and the models it builds files from (random weights)."""

from __future__ import annotations

import dataclasses
from typing import Any

from recipes import models
from tf_admm.compat import keras

__all__ = ["MODELS", "STRUCTURES", "Settings", "small_cnn"]


def small_cnn(num_classes: int = 10) -> keras.Model:
    """A small CIFAR-style convnet with BatchNorm: 32x32x3, conv 32-64-128 (3x3), FC 10."""
    inputs = keras.Input((32, 32, 3), name="image")
    h = inputs
    for index, channels in enumerate((32, 64, 128), start=1):
        h = keras.layers.Conv2D(channels, 3, use_bias=False, name=f"conv{index}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{index}")(h)
        h = keras.layers.ReLU(name=f"relu{index}")(h)
        h = keras.layers.MaxPool2D(2, name=f"pool{index}")(h) if index < 3 else h
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(num_classes, name="fc")(h)
    return keras.Model(inputs, outputs, name="small_cnn")


MODELS = {"lenet5": models.lenet5, "small_cnn": small_cnn}
STRUCTURES = ("filter", "channel", "column")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure; ``run`` takes it so tests need no flags.

    Attributes:
      files: ``.tflite`` paths, the first the reference; or empty to build from ``model``.
      model: a key of :data:`MODELS` (with random weights).
      structure: structure of the convolutions' groups, or ``""`` for none.
      sparsity: fraction of the convolutions' groups removed.
      fc_structure: structure of the Dense layers' groups (not the output layer's filters),
        or ``""`` for none.
      fc_sparsity: fraction of the Dense layers' groups removed (default ``sparsity``).
      tfmot_2of4: add tfmot's 2:4 variant.
      threads: thread counts.
      xnnpack: XNNPACK settings measured (True: on, the default delegate; False: off).
      warmup: invokes per interpreter before timing.
      rounds: interleaved rounds.
      invokes_per_round: timed invokes per interpreter and round.
      memory: measure peak RSS growth in subprocesses.
      work_dir: where built files go.
      seed: weights and input.
      out: JSON path, or None.
      command: the command line to report.
    """

    files: tuple[str, ...] = ()
    model: str = "lenet5"
    structure: str = "filter"
    sparsity: float = 0.5
    fc_structure: str = ""
    fc_sparsity: float | None = None
    tfmot_2of4: bool = True
    threads: tuple[int, ...] = (1, 2)
    xnnpack: tuple[bool, ...] = (True, False)
    warmup: int = 20
    rounds: int = 10
    invokes_per_round: int = 30
    memory: bool = True
    work_dir: str = "runs/bench/latency"
    seed: int = 0
    out: str | None = None
    command: str = "bench.latency.run()"

    def __post_init__(self):
        if not self.files and self.model not in MODELS:
            raise ValueError(
                f"Expected model among {sorted(MODELS)}; received: model={self.model!r}"
            )
        for field in ("structure", "fc_structure"):
            value = getattr(self, field)
            if value and value not in STRUCTURES:
                raise ValueError(
                    f"Expected {field} among {list(STRUCTURES)} or ''; received: {field}={value!r}"
                )
        for field in ("sparsity", "fc_sparsity"):
            value = getattr(self, field)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"Expected 0 <= {field} < 1; received: {field}={value}")
        if not self.threads or min(self.threads) < 1:
            raise ValueError(f"Expected threads >= 1; received: threads={list(self.threads)}")
        if not self.xnnpack:
            raise ValueError("Expected at least one XNNPACK setting; received: xnnpack=[]")
        for field in ("rounds", "invokes_per_round"):
            if getattr(self, field) < 1:
                raise ValueError(f"Expected {field} >= 1; received: {field}={getattr(self, field)}")
        if self.warmup < 0:
            raise ValueError(f"Expected warmup >= 0; received: warmup={self.warmup}")

    @property
    def invokes(self) -> int:
        return self.rounds * self.invokes_per_round

    @classmethod
    def smoke(cls, **overrides) -> Settings:
        """Seconds: 3 warm-up and 2 x 10 timed invokes per interpreter."""
        values: dict[str, Any] = dict(warmup=3, rounds=2, invokes_per_round=10)
        values.update(overrides)
        return cls(**values)
