"""Settings from the environment, through one helper that fails loudly."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("expected one of 1/0, true/false, yes/no, on/off")


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


PARSERS: dict[type, Callable[[str], object]] = {
    bool: _bool,
    int: int,
    float: float,
    str: str,
    list: _list,
}


def env(name: str, default: T, cast: type | None = None) -> T:
    """Read ``name`` from the environment, cast like ``default``.

    A value that does not parse stops start-up with the variable's name, rather
    than running with a silently wrong setting.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    kind = cast or type(default)
    try:
        return PARSERS[kind](raw)  # type: ignore[return-value]
    except (KeyError, ValueError) as error:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a valid {kind.__name__}: {error}"
        ) from error
