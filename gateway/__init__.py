"""An SMTP gateway for Amazon Connect's email channel.

The journey of a mail, one module per stage: :mod:`~gateway.smtp` (the front door, with
:mod:`~gateway.smtp_data` and :mod:`~gateway.addresses`), :mod:`~gateway.routing`, :mod:`~gateway.mime`
(bytes to a parsed mail, with :mod:`~gateway.decoding`), :mod:`~gateway.request` (a parsed mail to a
StartEmailContact request, within :mod:`~gateway.contract`), :mod:`~gateway.attachments` (S3),
:mod:`~gateway.connect` (the contact), orchestrated by :mod:`~gateway.delivery`. Errors:
:mod:`~gateway.errors`, translated from AWS at :mod:`~gateway.aws_errors`; replies: :mod:`~gateway.replies`.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
