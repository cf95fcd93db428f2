"""The gateway's settings: frozen values that every stage reads, whatever built them.

:mod:`gateway.config` builds them from the TOML file (and checks every rule there); the sandbox and the tests
build them directly. They are plain values: no I/O, no validation, no defaults read from the machine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

__all__ = [
    "CONNECT_DEFAULT_FILE_TYPES",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "EVERYWHERE",
    "LOOPBACK",
    "AccessSettings",
    "AttachmentSettings",
    "AuthSettings",
    "AuthenticationSettings",
    "AutomaticPolicy",
    "AutomaticSettings",
    "AwsSettings",
    "Body",
    "ClamdAddress",
    "ContentPolicy",
    "DnsSettings",
    "EngineFailure",
    "EventLoop",
    "FailAction",
    "FilterSettings",
    "HttpSettings",
    "LimitSettings",
    "LogFormat",
    "LogSettings",
    "MessageSettings",
    "Network",
    "QueueMode",
    "QueueSettings",
    "QuotaSettings",
    "RouteSettings",
    "Settings",
    "SmtpSettings",
    "StoreOriginal",
    "TlsSettings",
    "TrustMode",
    "Unreadable",
    "VirusAction",
]

DEFAULT_MAX_MESSAGE_SIZE = 40 * 1024 * 1024  # what SES inbound accepts, headers included


class QueueMode(StrEnum):
    SPOOL = "spool"  # stored durably, 250, delivered by workers
    SYNC = "sync"  # the SMTP reply waits for Connect
    SQS = "sqs"  # raw mail in S3, work in SQS, state in DynamoDB: any number of gateways share it


class AutomaticPolicy(StrEnum):
    """What happens to auto-replies, bounces and list mail."""

    FORWARD = "forward"  # delivered, marked with the gateway_automatic attribute
    REFUSE = "refuse"  # 550 5.7.1
    DROP = "drop"  # kept in the spool as parked, never delivered by itself


class Unreadable(StrEnum):
    """What becomes of a mail that cannot be read within its budget (poison)."""

    CONTACT = "contact"  # a contact saying it could not be read, the original stored and linked
    DEAD = "dead"  # a dead letter, and a notification to the sender


class StoreOriginal(StrEnum):
    WHEN_NEEDED = "when-needed"  # when something is left out of the contact
    ALWAYS = "always"


class Body(StrEnum):
    """Which body a contact shows when the mail has both."""

    HTML = "html"
    TEXT = "text"


class EventLoop(StrEnum):
    """Which asyncio event loop runs the gateway."""

    AUTO = "auto"  # uvloop when it is installed (the ``fast`` extra), else asyncio's own
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


# Amazon Connect accepts these attachment types by default; administrators can allow more.
CONNECT_DEFAULT_FILE_TYPES = (
    ".csv", ".doc", ".docx", ".heic", ".jfif", ".jpeg", ".jpg", ".mov", ".mp4", ".pdf", ".png", ".ppt",
    ".pptx", ".rtf", ".txt", ".wav", ".xls", ".xlsx",
)  # fmt: skip
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
EVERYWHERE: tuple[Network, ...] = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
# This machine, as Postfix's ``mynetworks_style = host``: local relays and applications.
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class ContentPolicy:
    prefer_body: Body = Body.HTML
    allowed_file_types: frozenset[str] | None = frozenset(CONNECT_DEFAULT_FILE_TYPES)  # None: any type
    max_file_size: int = 20_000_000
    max_total_size: int = 25_000_000  # body and attachments together


@dataclass(frozen=True)
class TlsSettings:
    certificate: Path | None = None
    key: Path | None = None
    require_tls: bool = False  # MAIL before STARTTLS gets 530 5.7.0
    implicit_listen: tuple[str, int] | None = None  # a second listener speaking TLS from the first byte
    reload_seconds: float = 60.0  # how often the certificate files are looked at for a renewal

    @property
    def enabled(self) -> bool:
        return self.certificate is not None


@dataclass(frozen=True)
class AuthSettings:
    credentials: Path | None = None  # lines of "user:bcrypt-or-argon2-hash"
    max_failures: int = 5  # per client address, within failure_window; then AUTH waits (454 4.7.0)
    failure_window: float = 600.0


@dataclass(frozen=True)
class AccessSettings:
    clients: tuple[Network, ...] = EVERYWHERE  # who may connect at all
    without_auth: tuple[Network, ...] = EVERYWHERE  # who may send without AUTH (others must AUTH first)
    senders_allow: tuple[str, ...] = ()  # if given, only these senders (patterns like the routes')
    senders_deny: tuple[str, ...] = ()
    proxy_protocol: bool = False  # expect a PROXY v1/v2 header (behind a TCP load balancer)
    proxy_trusted: tuple[Network, ...] = ()  # the load balancers allowed to send it
    # Relays and applications of one's own (Postfix's $mynetworks): exempt from the per-client limits, so
    # that a relay's parallel connections and a test suite's bursts are never refused.
    relay_networks: tuple[Network, ...] = LOOPBACK


@dataclass(frozen=True)
class LimitSettings:
    max_connections: int = (
        100  # the configuration file's default is what memory affords (config/frontdoor.py)
    )
    max_connections_per_client: int = 50  # Postfix's smtpd_client_connection_count_limit
    max_mails_per_client_per_minute: int = 60
    max_recipients: int = 100
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2: five minutes
    data_timeout: float = 120.0  # DATA must move at least 256 KiB in this time (slow-loris)
    max_line_length: int = 64 * 1024
    max_header_size: int = 1024 * 1024
    max_mime_parts: int = 1000
    max_nesting: int = (
        100  # multiparts and attached messages within one another (Postfix's mime_nesting_limit)
    )
    max_received_headers: int = 25
    max_junk_commands: int = 100  # NOOP, RSET, VRFY, HELP without a mail: then 421 (Postfix: 100)
    backlog: int | None = None  # the listen queue; None: twice max_connections (the kernel caps it)

    @property
    def listen_backlog(self) -> int:
        """Connections the kernel may queue before they are accepted: beyond max_connections too, so that
        a burst is answered (421 when full) instead of left hanging in a full accept queue."""
        return self.backlog if self.backlog is not None else 2 * self.max_connections


@dataclass(frozen=True)
class AutomaticSettings:
    """Auto-replies, bounces and list mail: "forward" (marked with an attribute), "refuse" or "drop"."""

    policy: AutomaticPolicy = AutomaticPolicy.FORWARD


@dataclass(frozen=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    hostname: str = "localhost"  # the configuration file's default is the machine's FQDN
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    postmaster: str | None = (
        None  # where mail to postmaster goes; unset: the first route with a fixed address
    )
    event_loop: EventLoop = EventLoop.AUTO


@dataclass(frozen=True)
class AwsSettings:
    region: str = "us-east-1"
    connect_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    sts_endpoint_url: str | None = None  # where routes with a role_arn assume it (None: the region's STS)
    sqs_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None


@dataclass(frozen=True)
class AttachmentSettings:
    bucket: str
    prefix: str = "inbound/"
    url_expiry_seconds: int = 6 * 3600
    sse: str | None = None
    kms_key_id: str | None = None
    allowed_file_types: tuple[str, ...] | None = CONNECT_DEFAULT_FILE_TYPES  # None: every type ("*")
    max_file_size: int = 20_000_000
    max_total_size: int = 25_000_000
    store_original: StoreOriginal = StoreOriginal.WHEN_NEEDED


@dataclass(frozen=True)
class LogSettings:
    format: LogFormat = LogFormat.JSON
    level: str = "info"
    personal_data: bool = False  # subjects and addresses in the per-mail line


@dataclass(frozen=True)
class HttpSettings:
    """``/metrics``, ``/healthz`` and ``/readyz``; no listener when ``listen`` is None."""

    listen: tuple[str, int] | None = ("127.0.0.1", 8080)


@dataclass(frozen=True)
class MessageSettings:
    prefer_body: Body = Body.HTML  # which body the contact shows when the mail has both


class TrustMode(StrEnum):
    """Whether the verdicts of :mod:`gateway.trust` may refuse a mail, or only tag it (a safe rollout)."""

    ENFORCE = "enforce"
    MONITOR = "monitor"  # computed and tagged, never refused


class FailAction(StrEnum):
    REFUSE = "refuse"
    TAG = "tag"  # delivered, with the verdict in the contact's attributes


class VirusAction(StrEnum):
    REFUSE = "refuse"  # 554 5.7.1
    STRIP = "strip"  # delivered without the infected files (named in the contact, kept out of S3)


class EngineFailure(StrEnum):
    """When rspamd or clamd does not answer in time: deliver (``PROCESSING_FAILED``) or answer 451."""

    OPEN = "open"
    CLOSED = "closed"


ClamdAddress = Path | tuple[str, int]  # a Unix socket, or host and port


@dataclass(frozen=True)
class AuthenticationSettings:
    """``[authentication]``: SPF, DKIM, DMARC and ARC at DATA, and what their verdicts may do."""

    enabled: bool = False
    authserv_id: str = "localhost"  # names this gateway in Authentication-Results; the config's: hostname
    mode: TrustMode = TrustMode.ENFORCE
    dmarc_reject: FailAction = FailAction.REFUSE  # a DMARC failure of a p=reject domain
    dmarc_quarantine: FailAction = FailAction.TAG
    spf_fail: FailAction = FailAction.TAG  # an SPF fail (-all) that no DMARC policy decided
    trusted_authserv_ids: tuple[str, ...] = ()  # upstreams whose Authentication-Results are believed
    senders_allow: tuple[str, ...] = ()  # envelope senders never refused by these checks (still tagged)
    timeout: float = 20.0  # for all of SPF, DKIM, ARC and DMARC together


@dataclass(frozen=True)
class FilterSettings:
    """``[filters]``: the spam (rspamd) and virus (clamd) engines, each optional."""

    rspamd_url: str | None = None
    rspamd_timeout: float = 20.0
    spam_reject: FailAction = FailAction.REFUSE  # rspamd's "reject"
    greylist_delay: float = 300.0  # rspamd's "greylist": 451 until a retry this much later
    clamd_address: ClamdAddress | None = None
    clamd_timeout: float = 30.0  # each scan
    clamd_max_size: int = 25 * 1024 * 1024  # at most clamd's StreamMaxLength (Debian: 25M)
    virus: VirusAction = VirusAction.REFUSE
    on_failure: EngineFailure = EngineFailure.OPEN

    @property
    def enabled(self) -> bool:
        return self.rspamd_url is not None or self.clamd_address is not None


@dataclass(frozen=True)
class DnsSettings:
    """``[dns]``: the resolvers the sender checks ask; none: the system's (``/etc/resolv.conf``)."""

    nameservers: tuple[tuple[str, int], ...] = ()
    timeout: float = 5.0  # each query, retries included


@dataclass(frozen=True)
class RouteSettings:
    """One ``[[routes]]`` entry. ``match`` is an address, ``*@domain`` or ``*`` (every recipient)."""

    match: str
    instance_id: str
    destination: str | None = None
    contact_flow_id: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    segment_attributes: Mapping[str, Any] = field(default_factory=dict)
    references: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    related_contact_header: str | None = None
    sender_from_reply_to: bool = False
    trust_mode: TrustMode | None = None  # overrides [authentication] mode for this route
    # Where this route's contacts and attachments go when not where [aws] and [attachments] say (None:
    # inherited): another region, another account through an assumed role, a bucket near the instance.
    region: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    connect_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    sts_endpoint_url: str | None = None


@dataclass(frozen=True)
class QuotaSettings:
    """One ``[[quotas]]`` entry: Connect's StartEmailContact quota in a region, for one account (the
    12 digits of a route's role_arn) or, with ``account`` None, for every account in that region."""

    region: str
    account: str | None = None
    rate_per_second: float = 2.0
    burst: int = 5


@dataclass(frozen=True)
class QueueSettings:
    """Between SMTP and Connect. ``spool``: stored durably, 250, delivered by workers; ``sync``: the SMTP
    reply waits for Connect (staging, where the reply should carry the ContactId); ``sqs``: the shared
    queue of several gateways (raw mail under ``prefix`` in the attachments bucket, work items in the SQS
    queue at ``queue_url``, per-mail state in the DynamoDB ``table``)."""

    mode: QueueMode = QueueMode.SPOOL
    path: Path = Path("/var/spool/mail-gateway")
    rate_per_second: float = 2.0  # Connect's default StartEmailContact quota per account and region
    burst: int = 5
    workers: int = 4
    max_age: float = 5 * 86400.0  # then a transiently failing mail is given up, as MTAs do after days
    retry_initial: float = 30.0
    retry_max: float = 3600.0
    min_free_disk: int = 512 * 1024 * 1024
    shutdown_grace: float = 30.0
    max_attempts: int = 100  # then a transiently failing mail is given up too, however young
    unreadable: Unreadable = Unreadable.CONTACT
    read_budget: float = 60.0  # seconds to read (parse and fit) one mail; then it is unreadable
    readers: int = 2  # reader processes (reading is CPU-bound: about one per core)
    reader_memory: int = 1024 * 1024 * 1024  # address space of each reader process (RLIMIT_AS)
    smarthost: tuple[str, int] | None = None  # where delivery status notifications are sent
    # sqs mode: the work queue, the table of per-mail state, and where raw mail waits in the bucket.
    queue_url: str | None = None
    table: str | None = None
    prefix: str = "queue/"


@dataclass(frozen=True)
class Settings:
    smtp: SmtpSettings
    aws: AwsSettings
    attachments: AttachmentSettings
    routes: tuple[RouteSettings, ...]
    queue: QueueSettings = field(default_factory=QueueSettings)
    message: MessageSettings = field(default_factory=MessageSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    access: AccessSettings = field(default_factory=AccessSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    automatic: AutomaticSettings = field(default_factory=AutomaticSettings)
    log: LogSettings = field(default_factory=LogSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    authentication: AuthenticationSettings = field(default_factory=AuthenticationSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    quotas: tuple[QuotaSettings, ...] = ()

    @property
    def content_policy(self) -> ContentPolicy:
        """What a contact may carry, from ``[attachments]`` and ``[message]``."""
        attachments = self.attachments
        allowed = attachments.allowed_file_types
        return ContentPolicy(
            prefer_body=self.message.prefer_body,
            allowed_file_types=None if allowed is None else frozenset(allowed),
            max_file_size=attachments.max_file_size,
            max_total_size=attachments.max_total_size,
        )
