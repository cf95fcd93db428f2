"""Reading one TOML table with errors that name the key: the helpers behind :mod:`gateway.config`.

Besides TOML's own types, operators write durations (``"5d"``, ``"30s"``, ``"250ms"``, or seconds as a
number), sizes (``"512MiB"``, or bytes as a number) and ``host:port`` pairs; each is parsed here once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, TypeVar

from gateway.errors import ConfigError

__all__ = ["Table", "parse_duration", "parse_size", "split_host_port"]

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_AMOUNT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_duration(value: Any) -> float:
    """Seconds from ``30``, ``1.5``, ``"250ms"``, ``"30s"``, ``"10m"``, ``"4h"`` or ``"5d"``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = _AMOUNT.fullmatch(value) if isinstance(value, str) else None
    if match is None or match[2].lower() not in _DURATION_UNITS:
        raise ValueError('must be a duration: seconds, or a number with ms, s, m, h or d ("30s", "5d")')
    return float(match[1]) * _DURATION_UNITS[match[2].lower()]


def parse_size(value: Any) -> int:
    """Bytes from ``1048576``, ``"512MiB"``, ``"1GB"``..."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _AMOUNT.fullmatch(value) if isinstance(value, str) else None
    if match is None or match[2].lower() not in _SIZE_UNITS:
        raise ValueError('must be a size: bytes, or a number with KiB, MiB, GiB, KB, MB or GB ("512MiB")')
    return int(float(match[1]) * _SIZE_UNITS[match[2].lower()])


def split_host_port(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` into its parts; raises ValueError with a readable message."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ValueError("must be host:port, e.g. 127.0.0.1:2525 or [::1]:2525")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"the port {port!r} is not a number from 0 to 65535")
    return host, int(port)


class Table:
    """The keys of one TOML table; every error names its key, and unknown keys are refused."""

    def __init__(self, values: Mapping[str, Any], path: str) -> None:
        self.values = values
        self.path = path
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.name(key)}: {message}")

    def get(self, key: str, kind: type[T], default: T) -> T:
        self.used.add(key)
        value = self.values.get(key, default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if (kind in (int, float) and isinstance(value, bool)) or not isinstance(value, kind):
            raise self.error(key, f"must be {_kind_name(kind)}, not {type(value).__name__}")
        return value

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A string; an empty string counts as absent (``connect_endpoint_url = ""``)."""
        if required and key not in self.values:
            raise self.error(key, "is required")
        value = self.get(key, str, default or "")
        return value or None

    def converted(self, key: str, convert: Callable[[Any], T], default: T) -> T:
        """A value through a parser that raises ValueError (durations, sizes, addresses)."""
        self.used.add(key)
        if key not in self.values:
            return default
        try:
            return convert(self.values[key])
        except ValueError as error:
            raise self.error(key, str(error)) from None

    def choice(self, key: str, default: E) -> E:
        """One of the words of ``default``'s enum; the error lists them (``must be "spool", "sync" or
        "sqs"``)."""
        kind = type(default)
        value = self.get(key, str, default.value)
        if value not in kind._value2member_map_:
            quoted = [f'"{choice.value}"' for choice in kind]
            raise self.error(key, f"must be {', '.join(quoted[:-1])} or {quoted[-1]}")
        return kind(value)

    def duration(self, key: str, default: float) -> float:
        return self.converted(key, parse_duration, default)

    def size(self, key: str, default: int) -> int:
        return self.converted(key, parse_size, default)

    def host_port(self, key: str, default: tuple[str, int] | None) -> tuple[str, int] | None:
        def convert(value: Any) -> tuple[str, int] | None:
            if not isinstance(value, str):
                raise ValueError("must be a string host:port")
            return split_host_port(value) if value else None

        return self.converted(key, convert, default)

    def table(self, key: str, *, required: bool = False) -> Table:
        if required and key not in self.values:
            raise ConfigError(f"[{self.name(key)}]: this section is required")
        return Table(self.get(key, dict, {}), self.name(key))

    def array(self, key: str) -> list[Table]:
        items = self.get(key, list, [])
        tables = []
        for index, item in enumerate(items):
            path = f"{self.name(key)}[{index}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{path}: must be a table")
            tables.append(Table(item, path))
        return tables

    def check(self, key: str, value: T, rule: Callable[[T], str | None]) -> T:
        problem = rule(value)
        if problem:
            raise self.error(key, problem)
        return value

    def done(self) -> None:
        unknown = sorted(set(self.values) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (is it misspelled or in the wrong section?)")


def _kind_name(kind: type) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        dict: "a table",
        list: "an array",
    }
    return names.get(kind, kind.__name__)
