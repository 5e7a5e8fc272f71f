"""The Keras 3 ADMM callback: Z/U updates and phase changes where the backend's state is current.

On the JAX backend ``fit`` keeps every variable's value outside the model during an epoch
(``JAXTrainer.fit`` purges them and carries a state tuple from step to step) and writes them
back only at the epoch's end or when something calls ``model.jax_state_sync()``; Keras 3's
``Callback.model`` property calls it for us. So :class:`AdmmUpdate` counts steps on the host
and touches ``self.model`` only when an update is due: the state is synced there, the update
assigns the variables, and the trainer reads them back before the next step because the sync
marked its state stale. Between updates it reads nothing from the model (``self._model``), so
``fit`` keeps its asynchronous dispatch. On TensorFlow the variables are always current and the
sync does nothing.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from tf_admm import phases, training
from tf_admm.finite import NonFiniteError
from tf_admm.keras3.model import AdmmModel
from tf_admm.spec import Unit

__all__ = ["AdmmUpdate", "callbacks", "for_keras3"]

CHECKPOINTING = (keras.callbacks.BackupAndRestore, keras.callbacks.ModelCheckpoint)


class AdmmUpdate(keras.callbacks.Callback):
    """Runs the Z/U updates and phase changes of a Keras 3 :class:`AdmmModel` during ``fit``.

    Also stops training with :class:`~tf_admm.NonFiniteError` when the loss or a variable is
    NaN or infinite: the loss after every step when rounds count steps, the loss and every
    variable at each epoch end (before the Z/U update).

    Args:
      check_finite: whether to check for NaN and Inf at all.
    """

    def __init__(self, check_finite: bool = True):
        super().__init__()
        self.check_finite = bool(check_finite)
        self._epoch = 0
        self._steps = 0
        self._round = 0
        self._finished = False
        self._batch_begin = 0

    def _refresh(self, model: AdmmModel) -> None:
        """Host copies of the counters, read from synced variables."""
        self._steps = phases.read(model.admm_step)
        self._round = phases.read(model.admm_round)

    def on_train_begin(self, logs=None):
        model = self.model
        if not isinstance(model, AdmmModel):
            raise ValueError(
                "AdmmUpdate: Expected to train a Keras 3 model made by tf_admm.admm_wrap; "
                f"received: model of type {type(model).__name__}"
            )
        phases.schedule(model, self.params)
        self._refresh(model)
        self._finished = False

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        # BackupAndRestore (after this callback) may have restored older counters in its
        # on_train_begin; between epochs the state is synced, so reading it costs no sync.
        self._refresh(self.model)
        self._finished = False

    def on_train_batch_begin(self, batch, logs=None):
        self._batch_begin = batch

    def on_train_batch_end(self, batch, logs=None):
        spec = self._model.spec
        if spec.update_unit is not Unit.STEP:
            return
        # With steps_per_execution > 1 one call covers several steps.
        self._steps += batch - self._batch_begin + 1
        self._check(logs, variables=False)
        if self._finished or self._steps < (self._round + 1) * spec.update_every:
            return
        model = self.model  # Syncs the JAX state into the variables.
        if not self._advance(model, Unit.STEP):
            self._finished = True

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        # Checked before the Z/U update, which must not project NaNs.
        self._check(logs, variables=True)
        model.admm_epoch.assign(phases.read(model.admm_epoch) + 1)
        self._advance(model, Unit.EPOCH)
        if logs is not None:
            logs.update(model.admm_logs())

    def _advance(self, model: AdmmModel, unit: Unit) -> bool:
        event = model.advance(unit)
        self._refresh(model)
        if event:
            self._check(None, variables=True)
        return bool(event)

    def _check(self, logs, variables: bool) -> None:
        if not self.check_finite:
            return
        loss = float(logs["loss"]) if logs and "loss" in logs else None
        bad_loss = loss is not None and not math.isfinite(loss)
        if not (bad_loss or variables):
            return
        culprits = []
        if variables:
            for variable in self.model.weights:
                if not keras.backend.is_float_dtype(variable.dtype):
                    continue
                value = keras.ops.convert_to_numpy(variable)
                if not np.isfinite(value).all():
                    culprits.append(
                        (
                            variable.path.rsplit("/", 1)[0],
                            variable.name,
                            int(np.isnan(value).sum()),
                            int(np.isinf(value).sum()),
                            value.size,
                        )
                    )
        if bad_loss or culprits:
            raise NonFiniteError(self._epoch, self._steps, loss, culprits)


def callbacks(
    log_dir: str | None = None,
    backup_dir: str | None = None,
    *,
    backup_freq: str | int = "epoch",
    delete_backup: bool = True,
    **tensorboard_kwargs,
) -> list[keras.callbacks.Callback]:
    """The Keras 3 callbacks an :class:`AdmmModel` needs, in order (see
    :func:`tf_admm.callbacks`, whose list a Keras 3 ``AdmmModel.fit`` also accepts)."""
    result: list[keras.callbacks.Callback] = [AdmmUpdate()]
    if log_dir is not None:
        result.append(keras.callbacks.TensorBoard(log_dir=log_dir, **tensorboard_kwargs))
    if backup_dir is not None:
        result.append(
            keras.callbacks.BackupAndRestore(
                backup_dir, save_freq=backup_freq, delete_checkpoint=delete_backup
            )
        )
    return result


def for_keras3(callback):
    """``callback`` as a Keras 3 callback: tf_admm's tf_keras callbacks (from
    :func:`tf_admm.callbacks`) become their Keras 3 twins; Keras 3 callbacks pass through.

    Raises:
      ValueError: for any other tf_keras callback, which a Keras 3 ``fit`` cannot run.
    """
    if isinstance(callback, training.AdmmUpdate):
        return AdmmUpdate(check_finite=callback.check_finite)
    twin = getattr(callback, "keras3_twin", None)
    if twin is not None:
        name, kwargs = twin
        return getattr(keras.callbacks, name)(**kwargs)
    if type(callback).__module__.startswith("tf_keras"):
        raise ValueError(
            f"Expected Keras 3 callbacks for a Keras 3 model; received a tf_keras "
            f"{type(callback).__name__}: use keras.callbacks.{type(callback).__name__}"
        )
    return callback
