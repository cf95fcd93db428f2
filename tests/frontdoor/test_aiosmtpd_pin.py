"""The front door extends aiosmtpd's protocol class and reaches into some of its private names (its stream
reader and writer, its timeout, its TLS state, its envelope factory). aiosmtpd is pinned to the exact
version they were read from; an upgrade that moves one of them must fail here, loudly, not in production.
"""

from __future__ import annotations

import ast
import inspect
import re
import tomllib

import aiosmtpd
from aiosmtpd.smtp import SMTP

from gateway.frontdoor import smtp as front_door

from ..helpers import ROOT


def pinned_version() -> str:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in dependencies if d.startswith("aiosmtpd")]
    match = re.fullmatch(r"aiosmtpd==([\d.]+)", pin)
    assert match, f"aiosmtpd must be pinned to an exact version, not {pin!r}"
    return match.group(1)


# Private methods the protocol overrides: aiosmtpd calls them, so a rename would silently skip ours.
OVERRIDDEN = {"_create_envelope", "_timeout_cb"}


def _is_self(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _is_super(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def borrowed_names() -> set[str]:
    """Private names of aiosmtpd's ``SMTP`` the gateway's protocol relies on: the ``self._name`` it reads
    without defining them, what it calls through ``super()``, and the hooks it overrides."""
    tree = ast.parse(inspect.getsource(front_door))
    [protocol] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "GatewaySMTP"]
    own = {n.name for n in protocol.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    own |= {
        target.attr
        for node in ast.walk(protocol)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Attribute) and _is_self(target.value)
    }
    private = [
        node
        for node in ast.walk(protocol)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
    ]
    through_self = {node.attr for node in private if _is_self(node.value)} - own
    through_super = {node.attr for node in private if _is_super(node.value)}
    return through_self | through_super | OVERRIDDEN | {"line_length_limit"}


def test_aiosmtpd_is_the_pinned_version() -> None:
    assert aiosmtpd.__version__ == pinned_version()


def test_every_private_name_the_front_door_borrows_is_still_there() -> None:
    borrowed = borrowed_names()
    assert {"_reader", "_writer", "_reset_timeout", "_timeout_cb", "_tls_protocol"} <= borrowed
    source = inspect.getsource(SMTP)
    missing = sorted(
        name for name in borrowed if not hasattr(SMTP, name) and not re.search(rf"self\.{name}\b", source)
    )
    assert missing == [], f"aiosmtpd {aiosmtpd.__version__} no longer has {missing}: read its source again"
