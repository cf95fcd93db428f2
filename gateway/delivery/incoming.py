"""Where a mail's bytes go while they arrive: memory while the mail is small, a file beyond that.

Postfix writes every mail to its queue file as it arrives; the gateway does the same for any mail larger
than :data:`SMALL_MAIL_BYTES`, so that a 40 MB mail costs a chunk of memory, not 40 MB (and a thousand
sessions at once cost a thousand chunks). Small mails stay in memory and go into the spool's database in
one group commit. The file is not flushed to disk here: whoever keeps the mail (the spool) does that
before the 250, off the event loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from gateway.errors import SpoolError, SpoolFullError
from gateway.mail import FileContent, InMemoryContent, MailContent

__all__ = ["SMALL_MAIL_BYTES", "SpillingWriter"]

SMALL_MAIL_BYTES = 256 * 1024


class SpillingWriter:
    """A :class:`~gateway.mail.MailWriter` that moves to a file under ``directory`` past ``threshold``."""

    def __init__(self, directory: Path, threshold: int = SMALL_MAIL_BYTES) -> None:
        self._directory = directory
        self._threshold = threshold
        self._buffer = bytearray()
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._size = 0
        self._failure: OSError | None = None

    def write(self, data: bytes) -> None:
        if self._failure is not None:
            return  # the rest of the mail is read and dropped; close() says why
        self._size += len(data)
        try:
            if self._file is None:
                self._buffer += data
                if len(self._buffer) > self._threshold:
                    self._spill()
            else:
                self._file.write(data)
        except OSError as error:  # a full or broken disk: the client gets a 4xx at the end of DATA
            self._failure = error
            self._drop_file()

    def _spill(self) -> None:
        descriptor, name = tempfile.mkstemp(dir=self._directory, suffix=".part")
        self._path = Path(name)
        self._file = os.fdopen(descriptor, "wb")
        self._file.write(self._buffer)
        self._buffer = bytearray()

    def close(self) -> MailContent:
        """The content; raises :class:`~gateway.errors.SpoolError` when its file could not be written."""
        if self._failure is not None:
            if self._failure.errno == errno.ENOSPC:
                raise SpoolFullError(f"the mail could not be written: {self._failure}")
            raise SpoolError(f"the mail could not be written: {self._failure}")
        if self._file is None:
            return InMemoryContent(bytes(self._buffer))
        assert self._path is not None
        try:
            self._file.close()
        except OSError as error:
            self._failure = error
            self._drop_file()
            return self.close()
        return FileContent(self._path, self._size)

    def discard(self) -> None:
        self._buffer = bytearray()
        self._drop_file()

    def _drop_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # the file goes anyway
                self._file.close()
            self._file = None
        if self._path is not None:
            self._path.unlink(missing_ok=True)
            self._path = None
