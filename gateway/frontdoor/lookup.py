"""aiosmtpd's per-connection method lookup, answered once per class.

On every connection aiosmtpd's ``SMTP.__init__`` looks through ``dir()`` of the protocol and of its handler
(``inspect.getmembers`` included) for their ``auth_``, ``smtp_`` and ``handle_`` methods, and takes the
signature of ``handle_EHLO``: measured, that was most of the cost of constructing a session and a sixth of
an accepted mail's CPU on the event loop. Those methods are fixed per class, so :class:`FixedMethods`
answers ``dir()`` from the class, once, and :func:`fixed_signature` stores a hook's signature where
:func:`inspect.signature` finds it first.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["FixedMethods", "fixed_signature"]

PREFIXES = ("auth_", "smtp_", "handle_")  # what aiosmtpd looks for
F = TypeVar("F", bound=Callable[..., Any])


_NAMES: dict[type, list[str]] = {}


def _names(cls: type) -> list[str]:
    if cls not in _NAMES:
        _NAMES[cls] = sorted(name for name in dir(cls) if name.startswith(PREFIXES))
    return _NAMES[cls]


class FixedMethods:
    """``dir()`` of an instance is its class's aiosmtpd methods: no instance adds one."""

    def __dir__(self) -> list[str]:
        return list(_names(type(self)))


def fixed_signature(function: F) -> F:
    """The function with its signature computed now, not at each ``inspect.signature`` call."""
    function.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    return function
