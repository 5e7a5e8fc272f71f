"""Checks and errors shared by the spec's dataclasses (:mod:`tf_admm.rule`, :mod:`tf_admm.spec`).

Every refused value raises :class:`SpecError` worded "<where>: Expected ...; received:
field=value"; the helpers here check one field each and build that message, so that a rule, a
rho schedule and a spec word their errors alike. NumPy scalars are accepted as the Python
numbers they hold (:func:`plain_fields`).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "MAX_COUNT",
    "FrozenCounts",
    "SpecError",
    "as_float",
    "check_bool",
    "check_count",
    "check_fractions",
    "check_positive_int",
    "check_positive_number",
    "check_ratio",
    "enum_value",
    "fail",
    "from_mapping",
    "is_finite",
    "plain",
    "plain_fields",
    "set_enum",
    "show",
]


class SpecError(ValueError):
    """A spec, rule or schedule was given a value outside what it accepts."""


# Counts are compared with int64 step, epoch and round variables, so nothing larger is reachable
# (and every accepted spec can be written to JSON: Python refuses to print ints of > 4300 digits).
MAX_COUNT = 2**63 - 1


def show(value: Any) -> str:
    """``repr(value)``, or a short description for values Python cannot print."""
    try:
        return repr(value)
    except (ValueError, RecursionError):
        # ValueError: an int of more than sys.get_int_max_str_digits() digits.
        if isinstance(value, int):
            return f"<int of {value.bit_length()} bits>"
        return f"<unprintable {type(value).__name__}>"


def plain(value: Any) -> Any:
    """``value`` with NumPy scalars (also inside lists and tuples) turned into Python ones.

    Sparsities and ratios are often computed with NumPy; ``np.float32(0.9)`` should mean 0.9.
    """
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.generic) for v in value):
        return type(value)(v.item() if isinstance(v, np.generic) else v for v in value)
    return value


def plain_fields(instance: Any) -> None:
    """Replaces NumPy scalars in the fields of frozen dataclass ``instance`` (see ``plain``)."""
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        converted = plain(value)
        if converted is not value:
            object.__setattr__(instance, field.name, converted)


def enum_value(member: enum.Enum | None) -> Any:
    """An enum member's value (None stays None), to show in messages."""
    return None if member is None else member.value


def fail(where: str, expected: str, field: str, value: Any) -> SpecError:
    """The error "<where>: Expected <expected>; received: <field>=<value>" (to raise)."""
    return SpecError(f"{where}: Expected {expected}; received: {field}={show(value)}")


def is_finite(value: int | float) -> bool:
    """``math.isfinite``, False for an int too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:  # An int too large for a float.
        return False


def as_float(value: int | float) -> float:
    """``float(value)``, an infinity of the same sign for an int too large for a float."""
    try:
        return float(value)
    except OverflowError:  # An int too large for a float: out of range either way.
        return math.inf if value > 0 else -math.inf


def check_positive_number(where: str, field: str, value: Any, *, allow_none: bool = False):
    """Refuses anything but a finite number > 0 (or None, with ``allow_none``)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_finite(value):
        raise fail(where, f"{field} to be a finite number", field, value)
    if value <= 0:
        raise fail(where, f"{field} > 0", field, value)


def check_ratio(where: str, field: str, value: Any) -> None:
    """Refuses anything but a finite number >= 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(where, f"{field} to be a number >= 1", field, value)
    if not (is_finite(value) and value >= 1):
        raise fail(where, f"{field} >= 1", field, value)


def set_enum(instance: Any, field: str, enum_class: type[enum.Enum]) -> None:
    """Replaces field ``field`` of frozen ``instance`` by its ``enum_class`` member."""
    value = getattr(instance, field)
    try:
        object.__setattr__(instance, field, enum_class(value))
    except ValueError:
        allowed = [member.value for member in enum_class]
        raise fail(type(instance).__name__, f"{field} in {allowed}", field, value) from None


def check_bool(where: str, field: str, value: Any) -> None:
    """Refuses anything but True or False."""
    if not isinstance(value, bool):
        raise fail(where, f"{field} to be true or false", field, value)


def check_count(where: str, field: str, value: Any) -> None:
    """Refuses a count above :data:`MAX_COUNT`."""
    if value > MAX_COUNT:
        raise fail(where, f"{field} <= 2**63 - 1", field, value)


def check_positive_int(where: str, field: str, value: Any):
    """Refuses anything but an integer in [1, :data:`MAX_COUNT`]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise fail(where, f"{field} to be an integer >= 1", field, value)
    check_count(where, field, value)


def check_fractions(field: str, fractions: Any) -> tuple[float, ...]:
    """``fractions`` as a tuple of floats increasing in (0, 1] and ending at 1."""
    if (
        isinstance(fractions, (str, bytes))
        or not isinstance(fractions, Sequence)
        or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions)
    ):
        raise fail("Spec", f"{field} to be a list of numbers", field, fractions)
    fractions = tuple(as_float(f) for f in fractions)
    if (
        not fractions
        or fractions[-1] != 1.0
        or any(not 0 < f <= 1 for f in fractions)
        or any(b <= a for a, b in zip(fractions, fractions[1:]))
    ):
        raise fail("Spec", f"{field} increasing in (0, 1] and ending at 1", field, list(fractions))
    return fractions


class FrozenCounts(dict):
    """A dict that refuses changes (the ``allocated`` counts of a frozen :class:`Spec`)."""

    def _refuse(self, *args, **kwargs):
        """Refused: the counts of a frozen spec do not change (raises TypeError)."""
        raise TypeError("Spec.allocated cannot change: use dataclasses.replace(spec, ...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse

    def __hash__(self):
        return hash(tuple(self.items()))


def from_mapping(cls, where: str, config: Any):
    """Builds dataclass ``cls`` from a mapping, refusing unknown keys by name."""
    if not isinstance(config, Mapping):
        raise fail(where, f"a mapping of {cls.__name__} fields", "config", config)
    allowed = {f.name for f in dataclasses.fields(cls)}
    # Keys of mixed types (possible from Python, not from JSON) do not sort by themselves.
    unknown = sorted(
        set(config) - allowed, key=lambda k: (0, k) if isinstance(k, str) else (1, show(k))
    )
    if unknown:
        raise SpecError(
            f"{where}: Expected fields among {sorted(allowed)}; "
            f"received unknown field(s) [{', '.join(show(k) for k in unknown)}]"
        )
    return cls(**config)
