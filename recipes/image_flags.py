"""The command line of the image recipes: their flags, the settings they give, ``main``.

A recipe defines its flags with its own defaults (:func:`define_image_flags`, under
``__main__``), turns them into :class:`recipes.image_task.ImageSettings`
(:func:`image_settings_from_flags`; :func:`default_image_settings` gives the same without
parsing, for tests) and runs :func:`main_for`'s ``main`` with ``app.run``.

:class:`ImageRecipe` bundles the four for a recipe module (``recipes/vgg16_cifar10.py``):

    RECIPE = image_flags.ImageRecipe(TASK, DEFAULTS, __name__)
    settings, run, define_flags = RECIPE.settings, RECIPE.run, RECIPE.define_flags

    if __name__ == "__main__":
        app.run(RECIPE.main())
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from absl import app, flags

import tf_admm
from recipes import image_data, image_recipe, quiet_logs
from recipes.image_task import ImageSettings, ImageTask

__all__ = [
    "ImageFlags",
    "ImageRecipe",
    "default_image_settings",
    "define_image_flags",
    "image_settings_from_flags",
    "main_for",
]


@dataclasses.dataclass(frozen=True)
class ImageFlags:
    """The flag holders of an image recipe, as :func:`define_image_flags` returns them."""

    holders: dict[str, flags.FlagHolder]

    def value(self, name: str) -> Any:
        """The parsed value of flag ``name``."""
        return self.holders[name].value


def define_image_flags(
    *,
    config: str,
    model_dir: str,
    image_size: int,
    pretrain_epochs: int,
    batch_size: int,
    learning_rate: float,
    batch_norm: bool,
    flag_values: flags.FlagValues = flags.FLAGS,
) -> ImageFlags:
    """Defines an image recipe's flags with its defaults in ``flag_values``.

    The recipes call it under ``__main__`` (several recipes imported in one process, as in a
    test run, would otherwise define the same flags twice); tests pass their own
    ``flags.FlagValues()``.
    """
    fv = {"flag_values": flag_values}
    holders = {
        "config": flags.DEFINE_string(
            "config",
            config,
            "JSON file with the tf_admm.Spec (per-layer sparsity and bits, rho, rounds).",
            **fv,
        ),
        "model_dir": flags.DEFINE_string(
            "model_dir", model_dir, "Where checkpoints, models, logs and results go.", **fv
        ),
        "data_dir": flags.DEFINE_string(
            "data_dir",
            None,
            "TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).",
            **fv,
        ),
        "download": flags.DEFINE_bool(
            "download",
            True,
            "Let TFDS prepare a dataset that is not prepared yet (download, or build from the "
            "manual archives).",
            **fv,
        ),
        "synthetic_data": flags.DEFINE_bool(
            "synthetic_data",
            False,
            "Train and test on seeded random images generated in the process, to try the "
            "pipeline without the dataset.",
            **fv,
        ),
        "synthetic_examples": flags.DEFINE_integer(
            "synthetic_examples",
            256,
            "Synthetic training examples (the test set gets a quarter).",
            lower_bound=1,
            **fv,
        ),
        "image_size": flags.DEFINE_integer(
            "image_size", image_size, "Square input size of the model.", lower_bound=1, **fv
        ),
        "width_multiplier": flags.DEFINE_float(
            "width_multiplier",
            1.0,
            "Scales the filters and units of every layer (e.g. 0.125 for a tiny model).",
            lower_bound=0.0,
            **fv,
        ),
        "batch_norm": flags.DEFINE_bool(
            "batch_norm", batch_norm, "Batch normalization after every convolution.", **fv
        ),
        "dense_weights": flags.DEFINE_string(
            "dense_weights",
            None,
            "Weights (.weights.h5) of a trained dense model to compress instead of pretraining.",
            **fv,
        ),
        "pretrain_epochs": flags.DEFINE_integer(
            "pretrain_epochs",
            pretrain_epochs,
            "Epochs of dense pretraining (skipped if cached).",
            lower_bound=0,
            **fv,
        ),
        "retrain_epochs": flags.DEFINE_integer(
            "retrain_epochs",
            12,
            "Epochs of training in the last phase (masked retraining, or shared-value training).",
            lower_bound=0,
            **fv,
        ),
        "batch_size": flags.DEFINE_integer(
            "batch_size", batch_size, "Batch size.", lower_bound=1, **fv
        ),
        "learning_rate": flags.DEFINE_float(
            "learning_rate",
            learning_rate,
            "Adam learning rate for pretraining and ADMM.",
            lower_bound=0.0,
            **fv,
        ),
        "admm_learning_rate": flags.DEFINE_float(
            "admm_learning_rate",
            None,
            "Adam learning rate during ADMM (default: --learning_rate).",
            lower_bound=0.0,
            **fv,
        ),
        "retrain_learning_rate": flags.DEFINE_float(
            "retrain_learning_rate",
            learning_rate,
            "Adam learning rate at the start of the last phase.",
            lower_bound=0.0,
            **fv,
        ),
        "steps_per_epoch": flags.DEFINE_integer(
            "steps_per_epoch",
            None,
            "Steps of an epoch (and so of an ADMM round of one epoch) on repeated data; default "
            "one pass over the training set.",
            lower_bound=1,
            **fv,
        ),
        "train_examples": flags.DEFINE_integer(
            "train_examples",
            None,
            "Train on the first this many examples of the training split.",
            lower_bound=1,
            **fv,
        ),
        "eval_examples": flags.DEFINE_integer(
            "eval_examples",
            None,
            "Evaluate on the first this many examples of the test split.",
            lower_bound=1,
            **fv,
        ),
        "export": flags.DEFINE_bool(
            "export",
            True,
            "Export the compressed model to a verified .tflite file and test it there.",
            **fv,
        ),
        "seed": flags.DEFINE_integer("seed", 0, "Random seed.", **fv),
        "verbose": flags.DEFINE_enum("verbose", "1", ["0", "1", "2"], "Keras fit verbosity.", **fv),
        "deterministic": flags.DEFINE_bool(
            "deterministic", False, "Enable TensorFlow op determinism.", **fv
        ),
    }
    return ImageFlags(holders)


def image_settings_from_flags(values: ImageFlags) -> ImageSettings:
    """Builds :class:`ImageSettings` from parsed flags; a bad config is a usage error."""
    try:
        spec = tf_admm.Spec.from_file(values.value("config"))
    except (OSError, tf_admm.SpecError) as error:
        raise app.UsageError(f"--config: {error}") from None
    names = [f.name for f in dataclasses.fields(ImageSettings) if f.name != "spec"]
    settings = {name: values.value(name) for name in names}
    settings["verbose"] = int(settings["verbose"])
    return ImageSettings(spec=spec, **settings)


def default_image_settings(defaults: dict[str, Any], **overrides: Any) -> ImageSettings:
    """A recipe's settings as its flags' defaults give them, with ``overrides``.

    Args:
      defaults: the keyword arguments the recipe passes to :func:`define_image_flags`.
      **overrides: :class:`ImageSettings` fields; ``spec`` replaces the config's spec.
    """
    values = {k: v for k, v in defaults.items() if k != "config"}
    values["retrain_learning_rate"] = defaults["learning_rate"]
    values.update(overrides)
    if "spec" not in values:
        values["spec"] = tf_admm.Spec.from_file(defaults["config"])
    return ImageSettings(**values)


def main_for(task: ImageTask, values: ImageFlags) -> Callable[[Sequence[str]], None]:
    """An ``app.run`` main that runs ``task`` with the parsed flags."""

    def main(argv: Sequence[str]) -> None:
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        quiet_logs.install()
        settings = image_settings_from_flags(values)
        try:
            image_recipe.run_image_recipe(task, settings)
        except image_data.DatasetUnavailableError as error:
            # The message says what to do; a traceback would bury it.
            raise app.UsageError(str(error)) from None

    return main


@dataclasses.dataclass(frozen=True)
class ImageRecipe:
    """A recipe module's entry points: its ``task`` with its flags' ``defaults`` (the keyword
    arguments of :func:`define_image_flags`); ``module`` (the recipe's ``__name__``) gets the
    flags as its own, which ``--helpshort`` lists."""

    task: ImageTask
    defaults: dict[str, Any]
    module: str

    def settings(self, **overrides: Any) -> ImageSettings:
        """The recipe's settings with its flags' defaults, and ``overrides``."""
        return default_image_settings(self.defaults, **overrides)

    def run(self, settings: ImageSettings) -> dict[str, Any]:
        """Runs the whole recipe and returns its results (also written to results.json)."""
        return image_recipe.run_image_recipe(self.task, settings)

    def define_flags(self, flag_values: flags.FlagValues = flags.FLAGS) -> ImageFlags:
        """Defines the recipe's flags in ``flag_values`` (done under ``__main__``)."""
        values = define_image_flags(**self.defaults, flag_values=flag_values)
        # absl knows the main module by its path (sys.argv[0]) and --helpshort asks for that.
        module = sys.argv[0] if self.module == "__main__" else self.module
        for holder in values.holders.values():
            flag_values.register_key_flag_for_module(module, flag_values[holder.name])
        return values

    @staticmethod
    def settings_from_flags(values: ImageFlags) -> ImageSettings:
        """Settings from parsed flags; a bad ``--config`` is a usage error."""
        return image_settings_from_flags(values)

    def main(self) -> Callable[[Sequence[str]], None]:
        """The ``app.run`` main of the recipe, with its flags defined in ``flags.FLAGS``."""
        return main_for(self.task, self.define_flags())
