"""The shared queue's objects in S3: each accepted mail exactly as received, and each built request.

A mail goes up with its SHA-256 (``ChecksumSHA256``: S3 refuses bytes that do not match it) and the
bucket's configured encryption; it comes back checked against the same digest, into memory when small
and into a file when large, so that no process holds a 40 MB mail for nothing. A built request is
written once (``If-None-Match: *``): a second writer learns that the first one won and reads its request.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.aws.answers import NOT_FOUND, Answers
from gateway.errors import ConditionFailedError, DeliveryError, UnavailableError
from gateway.mail import Blob, FileContent, InMemoryContent, MailContent
from gateway.settings import AttachmentSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["MailObjects", "sha256_of"]

CHUNK_BYTES = 1024 * 1024
DELETE_BATCH = 1000


def sha256_of(blob: Blob) -> str:
    """The base64 SHA-256 S3 checks an upload against (read from the blob's stream: call it in a thread
    for a large one)."""
    digest = hashlib.sha256()
    with blob.open() as stream:
        for chunk in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


class MailObjects:
    def __init__(self, client: S3Client, settings: AttachmentSettings, answers: Answers) -> None:
        self._client = client
        self._settings = settings
        self.bucket = settings.bucket
        self._answers = answers

    def _encryption(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self._settings.sse:
            extra["ServerSideEncryption"] = self._settings.sse
        if self._settings.kms_key_id:
            extra["SSEKMSKeyId"] = self._settings.kms_key_id
        return extra

    async def put_mail(self, key: str, blob: Blob, sha256: str) -> None:
        with blob.open() as body, self._answers.call("s3"):
            await self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentLength=blob.size,
                ContentType="message/rfc822",
                ChecksumSHA256=sha256,
                **self._encryption(),
            )

    async def get_mail(self, key: str, sha256: str | None, directory: Path, in_memory: int) -> MailContent:
        """The mail under ``key``: in memory up to ``in_memory`` bytes, else in a file under ``directory``
        (the caller removes it); raises :class:`~gateway.errors.UnavailableError` when the bytes are not
        the ones stored."""
        digest = hashlib.sha256()
        parts: list[bytes] = []
        file = None
        path: Path | None = None
        size = 0
        try:
            with self._answers.call("s3"):
                answer = await self._client.get_object(Bucket=self.bucket, Key=key)
                async for chunk in answer["Body"].iter_chunks(CHUNK_BYTES):
                    digest.update(chunk)
                    size += len(chunk)
                    if file is None and size > in_memory:
                        descriptor, name = tempfile.mkstemp(dir=directory, suffix=".eml")
                        path, file = Path(name), os.fdopen(descriptor, "wb")
                        file.write(b"".join(parts))
                        parts = []
                    if file is not None:
                        file.write(chunk)
                    else:
                        parts.append(chunk)
        except BaseException:
            if file is not None:
                file.close()
            if path is not None:
                path.unlink(missing_ok=True)
            raise
        if file is not None:
            file.close()
        if sha256 is not None and base64.b64encode(digest.digest()).decode() != sha256:
            if path is not None:
                path.unlink(missing_ok=True)
            raise UnavailableError(
                f"{key}: the bytes read are not the ones stored", service="s3", code="BadDigest"
            )
        if path is not None:
            return FileContent(path, size)
        return InMemoryContent(b"".join(parts))

    async def exists(self, key: str) -> bool:
        try:
            with self._answers.call("s3"):
                await self._client.head_object(Bucket=self.bucket, Key=key)
        except DeliveryError as error:
            if error.code in NOT_FOUND:
                return False
            raise
        return True

    async def put_once(self, key: str, data: bytes) -> bool:
        """Write ``data`` unless the object exists; whether this call wrote it."""
        try:
            with self._answers.call("s3"):
                await self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType="application/json",
                    IfNoneMatch="*",
                    **self._encryption(),
                )
        except ConditionFailedError:
            return False
        return True

    async def get_bytes(self, key: str) -> bytes:
        with self._answers.call("s3"):
            answer = await self._client.get_object(Bucket=self.bucket, Key=key)
            return await answer["Body"].read()

    async def delete(self, keys: Sequence[str]) -> None:
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            with self._answers.call("s3"):
                await self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
