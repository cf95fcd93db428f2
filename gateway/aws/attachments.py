"""Attachments into S3, and the presigned URLs Connect reads them through; the original message beside them.

Keys are deterministic and short (``<prefix><mail digest>/<n>``): a retry of the same mail overwrites the
same objects instead of leaving copies, and the presigned URL stays far under Connect's 2,000 characters even
with a long ``X-Amz-Security-Token`` from role credentials. The file name travels in Content-Disposition,
not in the key, so that a long non-ASCII name cannot lengthen the URL. The original message, kept when
something did not fit into the contact, is linked by a stable locator (the S3 console's URL of the object,
or the endpoint's own URL), never by a presigned URL, which dies with the credentials that signed it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from gateway.aws.boundary import translated
from gateway.contact import contract
from gateway.errors import MisconfiguredError
from gateway.mail import Blob
from gateway.observe.metrics import Metrics
from gateway.settings import AttachmentSettings, AwsSettings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = [
    "AttachmentStore",
    "DryRunStore",
    "S3AttachmentStore",
    "attachment_key",
    "content_disposition",
    "object_locator",
    "original_key",
    "safe_content_type",
]


class AttachmentStore(Protocol):
    async def store(self, key: str, data: Blob, content_type: str, filename: str) -> str:
        """Keep the bytes under ``key`` and return a URL Connect can download them from."""
        ...

    async def keep(self, key: str, data: Blob, content_type: str) -> str:
        """Keep the bytes under ``key`` and return a stable locator for people (not a presigned URL)."""
        ...


def attachment_key(prefix: str, digest: str, index: int) -> str:
    return f"{prefix}{digest[:32]}/{index}"


def original_key(prefix: str, digest: str) -> str:
    return f"{prefix}{digest[:32]}/original.eml"


_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


def safe_content_type(content_type: str) -> str:
    """The part's media type if it is a well-formed token pair, else the neutral octet-stream."""
    return content_type if _MEDIA_TYPE.fullmatch(content_type) else "application/octet-stream"


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback for old clients and the exact UTF-8 name for the rest."""
    fallback = filename.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def object_locator(settings: AttachmentSettings, aws: AwsSettings, key: str) -> str:
    """Where a person finds the object: the S3 console, or the configured endpoint's own URL."""
    if aws.s3_endpoint_url:
        return f"{aws.s3_endpoint_url.rstrip('/')}/{settings.bucket}/{quote(key)}"
    query = f"region={quote(aws.region)}&prefix={quote(key, safe='')}"
    return f"https://s3.console.aws.amazon.com/s3/object/{settings.bucket}?{query}"


class S3AttachmentStore:
    def __init__(
        self,
        client: S3Client,
        settings: AttachmentSettings,
        aws: AwsSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._client = client
        self._settings = settings
        self._aws = aws or AwsSettings()
        self._metrics = metrics or Metrics()

    async def _put(self, key: str, data: Blob, content_type: str, filename: str) -> None:
        settings = self._settings
        extra: dict[str, Any] = {}
        if settings.sse:
            extra["ServerSideEncryption"] = settings.sse
        if settings.kms_key_id:
            extra["SSEKMSKeyId"] = settings.kms_key_id
        # A stream (from memory or from the file the bytes are in): uploaded in chunks, never copied whole.
        with data.open() as body, self._metrics.aws_call("s3"), translated("s3"):
            await self._client.put_object(
                Bucket=settings.bucket,
                Key=key,
                Body=body,
                ContentLength=data.size,
                ContentType=safe_content_type(content_type),
                ContentDisposition=content_disposition(filename),
                **extra,
            )

    async def store(self, key: str, data: Blob, content_type: str, filename: str) -> str:
        await self._put(key, data, content_type, filename)
        return await self.presigned_url(key)

    async def keep(self, key: str, data: Blob, content_type: str) -> str:
        await self._put(key, data, content_type, key.rsplit("/", 1)[-1])
        return object_locator(self._settings, self._aws, key)

    async def presigned_url(self, key: str) -> str:
        """A GET URL for the object; refused if longer than Connect accepts (an operator must act)."""
        settings = self._settings
        with translated("s3"):  # signed here, no request made: not an S3 call to time
            url: str = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": settings.bucket, "Key": key},
                ExpiresIn=settings.url_expiry_seconds,
            )
        if len(url) > contract.limits().s3_url_chars:
            raise MisconfiguredError(
                f"a presigned URL has {len(url)} characters, more than Connect accepts; "
                "shorten attachments.prefix or use credentials with a shorter session token",
                service="s3",
                code="PresignedUrlTooLong",
            )
        return url


class DryRunStore:
    """Stores nothing: the URLs the attachments would have (``mail-gateway parse`` sends nothing)."""

    def __init__(self, settings: AttachmentSettings, aws: AwsSettings) -> None:
        self._settings = settings
        self._aws = aws

    async def store(self, key: str, data: Blob, content_type: str, filename: str) -> str:
        return f"https://{self._settings.bucket}.s3.{self._aws.region}.amazonaws.com/{quote(key)}"

    async def keep(self, key: str, data: Blob, content_type: str) -> str:
        return object_locator(self._settings, self._aws, key)
