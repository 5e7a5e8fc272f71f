"""The stacks a recipe runs on: flag checks, the Keras of a model, the restart on a backend."""

import sys

import pytest

from recipes import models, stacks
from tf_admm.compat import keras, keras3


@pytest.mark.parametrize(
    "version, backend, expected",
    [
        ("2", None, stacks.Stack.TF_KERAS),
        (2, None, stacks.Stack.TF_KERAS),
        ("3", None, stacks.Stack.KERAS3_TENSORFLOW),
        ("3", "tensorflow", stacks.Stack.KERAS3_TENSORFLOW),
        ("3", "jax", stacks.Stack.KERAS3_JAX),
    ],
)
def test_flags_name_a_stack(version, backend, expected):
    stack = stacks.from_flags(version, backend)
    assert stack is expected
    assert stack.backend == (backend or "tensorflow")
    assert stack.api is (keras3 if str(version) == "3" else keras)


@pytest.mark.parametrize(
    "version, backend, message",
    [
        ("2", "jax", "--backend only with --keras=3.*received: --keras=2 --backend=jax"),
        ("2", "tensorflow", "--backend only with --keras=3"),
        ("4", None, r"--keras in \['2', '3'\]; received: --keras=4"),
        ("3", "torch", r"--backend in \['tensorflow', 'jax'\]; received: --backend=torch"),
    ],
)
def test_bad_flags_are_refused_with_the_fix(version, backend, message):
    with pytest.raises(ValueError, match=message):
        stacks.from_flags(version, backend)


def test_models_of_either_keras_are_told_apart():
    assert stacks.api_of(models.lenet5()) is keras
    assert stacks.api_of(models.lenet5(api=keras3)) is keras3
    assert isinstance(models.lenet5(api=keras3), keras3.Model)
    # The same layers, names and weights in both.
    two, three = models.lenet5(), models.lenet5(api=keras3)
    assert [la.name for la in two.layers] == [la.name for la in three.layers]
    assert two.count_params() == three.count_params() == 431_080


def test_a_stack_this_process_runs_needs_no_restart(monkeypatch):
    def refuse(*args):
        raise AssertionError(f"restarted: {args}")

    monkeypatch.setattr(stacks.os, "execve", refuse)
    here = keras3.backend.backend()
    stacks.ensure_backend(stacks.Stack.TF_KERAS, "recipes.lenet5_mnist")
    if here == "tensorflow":
        stacks.ensure_backend(stacks.Stack.KERAS3_TENSORFLOW, "recipes.lenet5_mnist")


def _other_stack() -> stacks.Stack:
    here = keras3.backend.backend()
    return stacks.Stack.KERAS3_JAX if here != "jax" else stacks.Stack.KERAS3_TENSORFLOW


def test_another_backend_restarts_the_command_with_keras_backend_set(monkeypatch):
    calls = []

    def execve(path, args, env):
        calls.append((path, args, env))
        raise SystemExit(0)  # In place of the new process.

    monkeypatch.setattr(stacks.os, "execve", execve)
    monkeypatch.delenv("TF_ADMM_RECIPE_RESTARTED", raising=False)
    stack = _other_stack()
    argv = ["lenet5_mnist.py", "--keras=3", f"--backend={stack.backend}", "--seed=2"]
    with pytest.raises(SystemExit):
        stacks.ensure_backend(stack, "recipes.lenet5_mnist", argv)
    [(path, args, env)] = calls
    assert path == sys.executable
    assert args == [sys.executable, "-m", "recipes.lenet5_mnist", *argv[1:]]
    assert env["KERAS_BACKEND"] == stack.backend and env["TF_ADMM_RECIPE_RESTARTED"] == "1"


def test_a_restarted_command_still_on_another_backend_fails_instead_of_looping(monkeypatch):
    monkeypatch.setattr(stacks.os, "execve", lambda *args: pytest.fail("restarted again"))
    monkeypatch.setenv("TF_ADMM_RECIPE_RESTARTED", "1")
    stack = _other_stack()
    with pytest.raises(RuntimeError, match=f"Expected Keras 3 on the {stack.backend} backend"):
        stacks.ensure_backend(stack, "recipes.lenet5_mnist")
