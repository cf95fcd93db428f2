"""SMTP AUTH credentials: a file of ``user:hash`` lines with salted, slow bcrypt hashes.

``mail-gateway passwd USER`` writes such a line. Verification takes the same time whether the user exists
or not (an unknown user is checked against a dummy hash), so that names cannot be probed; it is slow by
design, so the SMTP front door runs it in a worker thread.
"""

from __future__ import annotations

import functools
from pathlib import Path

import bcrypt

from gateway.errors import ConfigError

__all__ = ["Credentials", "hash_password"]

ROUNDS = 12


@functools.cache
def _dummy_hash() -> bytes:
    """Checked against for unknown users; made on first use, not at import (it takes a quarter second)."""
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(ROUNDS))


def hash_password(password: str, rounds: int = ROUNDS) -> str:
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


class Credentials:
    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users

    @classmethod
    def load(cls, path: Path) -> Credentials:
        users: dict[str, bytes] = {}
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            user, separator, hashed = line.strip().partition(":")
            if not separator or not user or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
                raise ConfigError(f"{path}:{number}: expected user:bcrypt-hash (see mail-gateway passwd)")
            users[user] = hashed.encode("ascii")
        return cls(users)

    @property
    def count(self) -> int:
        """How many users the file names (not ``__len__``: an empty file must not make the object false)."""
        return len(self._users)

    def verify(self, user: bytes, password: bytes) -> bool:
        """Whether the password is the user's; as slow for an unknown user as for a known one."""
        name = user.decode("utf-8", errors="replace")
        hashed = self._users.get(name)
        try:
            ok = bcrypt.checkpw(password, hashed if hashed is not None else _dummy_hash())
        except ValueError:  # a damaged hash in the file
            return False
        return ok and hashed is not None
