"""Attachments into S3, and the presigned URLs Connect reads them through.

Keys are deterministic and short (``<prefix><mail digest>/<n>``): a retry of the same mail overwrites the
same objects instead of leaving copies, and the presigned URL stays far under Connect's 2,000 characters even
with a long ``X-Amz-Security-Token`` from role credentials. The file name travels in Content-Disposition,
not in the key, so that a long non-ASCII name cannot lengthen the URL.
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from gateway import contract
from gateway.aws_errors import translated
from gateway.config import AttachmentSettings
from gateway.errors import MisconfiguredError

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "AttachmentStore",
    "S3AttachmentStore",
    "attachment_key",
    "content_disposition",
    "safe_content_type",
]


class AttachmentStore(Protocol):
    async def store(self, key: str, data: bytes, content_type: str, filename: str) -> str:
        """Keep the bytes under ``key`` and return a URL Connect can download them from."""
        ...


def attachment_key(prefix: str, digest: str, index: int) -> str:
    return f"{prefix}{digest[:32]}/{index}"


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def safe_content_type(content_type: str) -> str:
    """The part's media type if it is a well-formed token pair, else the neutral octet-stream."""
    return content_type if _MEDIA_TYPE.fullmatch(content_type) else "application/octet-stream"


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback for old clients and the exact UTF-8 name for the rest."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class S3AttachmentStore:
    def __init__(self, client: S3Client, settings: AttachmentSettings) -> None:
        self._client = client
        self._settings = settings

    async def store(self, key: str, data: bytes, content_type: str, filename: str) -> str:
        settings = self._settings
        extra: dict[str, Any] = {}
        if settings.sse:
            extra["ServerSideEncryption"] = settings.sse
        if settings.kms_key_id:
            extra["SSEKMSKeyId"] = settings.kms_key_id
        with translated("s3"):
            await self._client.put_object(
                Bucket=settings.bucket,
                Key=key,
                Body=io.BytesIO(data),  # a stream: aiohttp would block the loop copying large bytes
                ContentType=safe_content_type(content_type),
                ContentDisposition=content_disposition(filename),
                **extra,
            )
        return await self.presigned_url(key)

    async def presigned_url(self, key: str) -> str:
        """A GET URL for the object; refused if longer than Connect accepts (an operator must act)."""
        settings = self._settings
        with translated("s3"):
            url: str = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": settings.bucket, "Key": key},
                ExpiresIn=settings.url_expiry_seconds,
            )
        if len(url) > contract.limits().s3_url_chars:
            raise MisconfiguredError(
                f"s3: a presigned URL has {len(url)} characters, more than Connect accepts; "
                "shorten attachments.prefix or use credentials with a shorter session token"
            )
        return url
