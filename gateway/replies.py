"""Every SMTP reply the gateway sends, by name.

One table, so that a code and its enhanced status code (RFC 3463) are chosen once and checked by a test:
5xx for policy and permanent faults, 4xx only for conditions that can clear. Texts are written for the
human who reads a bounce; they never carry internal exception text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

__all__ = ["EARLIER_CONTACT", "MAX_LINE_OCTETS", "Replies", "Reply"]

EARLIER_CONTACT = "(made by an earlier attempt)"  # names a contact whose ContactId this attempt never saw
MAX_LINE_OCTETS = 512  # RFC 5321 §4.5.3.1.5: a reply line, its code and CRLF included


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    status: str
    text: str
    name: str = field(default="", compare=False)  # the table's name for it: metrics count refusals by name
    more: tuple[str, ...] = ()  # further lines of a multi-line reply (RFC 5321 §4.2.1), each with its code

    def fits(self) -> bool:
        """Whether every line is within :data:`MAX_LINE_OCTETS`."""
        return all(len(line.encode()) + 2 <= MAX_LINE_OCTETS for line in str(self).split("\r\n"))

    def listing(self, items: Sequence[str], separator: str = " ") -> Reply:
        """The same reply with ``items`` on the lines that follow it, as many to a line as fit: nothing is
        cut, however many there are (a mail to 100 recipients keeps its 100 ContactIds)."""
        room = MAX_LINE_OCTETS - len(f"{self.code}-{self.status} ".encode()) - 2
        lines: list[str] = []
        for item in items:
            if lines and len((lines[-1] + separator + item).encode()) <= room:
                lines[-1] += separator + item
            else:
                lines.append(item)
        return replace(self, more=self.more + tuple(lines))

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def format(self, **values: object) -> Reply:
        """The same reply with ``{name}`` placeholders of its text filled in."""
        return replace(self, text=self.text.format(**values))

    def __str__(self) -> str:
        """The reply as sent, without the final CRLF: lines joined by CRLF, ``250-`` on all but the last."""
        texts = (self.text, *self.more)
        last = len(texts) - 1
        return "\r\n".join(
            f"{self.code}{'-' if n < last else ' '}{self.status} {text}" for n, text in enumerate(texts)
        )


class Replies:
    """Named replies. ``{placeholders}`` are filled with :meth:`Reply.format`."""

    # 2xx: success
    OK = Reply(250, "2.0.0", "OK")
    SENDER_OK = Reply(250, "2.1.0", "Sender OK")
    AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
    PARKED = Reply(250, "2.0.0", "Accepted as automatic mail: kept, not delivered ({queue_id})")
    RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
    DELIVERED = Reply(250, "2.0.0", "Delivered to Amazon Connect as contact {contacts}")
    QUEUED = Reply(250, "2.0.0", "Queued as {queue_id}")
    PARTLY_DELIVERED = Reply(
        250, "2.0.0", "Delivered to Amazon Connect as contact {contacts}; refused for {refused} recipient(s)"
    )
    # When the ContactIds do not fit one line: they follow on lines of their own (Reply.listing).
    DELIVERED_MANY = Reply(250, "2.0.0", "Delivered to Amazon Connect as {count} contacts:")
    PARTLY_DELIVERED_MANY = Reply(
        250, "2.0.0", "Delivered to Amazon Connect as {count} contacts; refused for {refused} recipient(s):"
    )

    # 4xx: conditions that can clear; the client retries and the retry is idempotent
    THROTTLED = Reply(451, "4.4.5", "Amazon Connect is busy; please try again later")
    UNAVAILABLE = Reply(451, "4.4.1", "Amazon Connect could not be reached; please try again later")
    CONNECT_FAILED = Reply(451, "4.3.0", "Amazon Connect answered with an error; please try again later")
    STORE_FAILED = Reply(
        451, "4.3.0", "The attachment store (Amazon S3) answered with an error; please try again later"
    )
    MISCONFIGURED = Reply(451, "4.3.5", "This gateway has a configuration problem; please try again later")
    LOCAL_ERROR = Reply(451, "4.3.0", "Temporary local problem; please try again later")
    TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections; please try again later")
    TOO_MANY_CLIENT_CONNECTIONS = Reply(
        421, "4.7.0", "Too many connections from your address; try again later"
    )
    TIMEOUT = Reply(421, "4.4.2", "Timeout: closing the connection")
    TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands without a mail; closing the connection")
    TOO_MANY_MAILS = Reply(450, "4.7.1", "Too many mails from your address; please slow down")
    TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients; send the others in another transaction")
    AUTH_BLOCKED = Reply(454, "4.7.0", "Too many failed authentications; please try again later")
    NO_ROOM = Reply(452, "4.3.1", "Insufficient system storage; please try again later")
    SPAM_DEFERRED = Reply(451, "4.7.1", "The spam filter asks you to try again later")
    GREYLISTED = Reply(451, "4.7.1", "Greylisted: please try again in a few minutes")
    CHECKS_UNAVAILABLE = Reply(451, "4.3.0", "The message could not be checked now; please try again later")

    # 5xx: syntax and sequence
    BAD_CHARACTERS = Reply(500, "5.5.2", "Syntax error: NUL or CR characters in the command line")
    HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname")
    AUTH_SYNTAX = Reply(501, "5.5.2", "The authentication data is not valid base64")
    AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
    AUTH_UNAVAILABLE = Reply(502, "5.5.1", "Authentication is not offered here")
    AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
    ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated")
    AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
    TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
    AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
    ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
    HELO_FIRST = Reply(503, "5.5.1", "Send EHLO or HELO first")
    NESTED_MAIL = Reply(503, "5.5.1", "Sender already given; send RSET to start over")
    MAIL_FIRST = Reply(503, "5.5.1", "Send MAIL FROM first")
    MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
    RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
    PARAMETER_UNKNOWN = Reply(555, "5.5.4", "Unsupported parameter {parameter}")
    PARAMETER_INVALID = Reply(501, "5.5.4", "Invalid value for parameter {parameter}")
    BAD_SENDER = Reply(553, "5.1.7", "The sender address {address} is not valid: {reason}")
    BAD_RECIPIENT = Reply(501, "5.1.3", "The recipient address {address} is not valid: {reason}")
    SMTPUTF8_NEEDED = Reply(553, "5.6.7", "Address {address} needs SMTPUTF8, which MAIL FROM did not request")

    # 5xx: policy
    UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "No mailbox {address} here")
    RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied: this gateway does not accept mail for {address}")
    NETWORK_REFUSED = Reply(554, "5.7.1", "This gateway does not accept connections from your network")
    SENDER_REFUSED = Reply(550, "5.7.1", "This sender is not accepted here")
    AUTOMATIC_REFUSED = Reply(550, "5.7.1", "Automatic replies, bounces and list mail are not accepted here")
    DMARC_REFUSED = Reply(
        550, "5.7.1", "The domain {domain} asks (DMARC p=reject) to refuse mail that fails its authentication"
    )
    DMARC_QUARANTINE_REFUSED = Reply(
        550,
        "5.7.1",
        "The domain {domain} asks (DMARC p=quarantine) to set apart mail that fails its "
        "authentication, and this gateway refuses such mail",
    )
    SPF_REFUSED = Reply(550, "5.7.1", "SPF: {domain} does not allow your server to send its mail")
    SPAM_REFUSED = Reply(550, "5.7.1", "The message was refused as spam")
    VIRUS_REFUSED = Reply(554, "5.7.1", "The message was refused: a virus was found ({signature})")
    TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops ({count} Received headers): a mail loop?")
    LOOP = Reply(554, "5.4.6", "Mail loop: this message has already passed through this gateway")
    HEADER_TOO_BIG = Reply(
        552, "5.3.4", "The header section is larger than the {limit} bytes this gateway accepts"
    )
    TOO_MANY_PARTS = Reply(554, "5.6.0", "The message has more than {limit} MIME parts")
    NESTED_TOO_DEEP = Reply(554, "5.6.0", "The message nests MIME parts more than {limit} levels deep")
    TOO_BIG = Reply(552, "5.3.4", "Message too big: this gateway accepts at most {limit} bytes")
    LINE_TOO_LONG = Reply(
        552, "5.3.4", "A line of this message is longer than the {limit} bytes this gateway accepts"
    )
    NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
    DATA_SYNTAX = Reply(501, "5.5.4", "Syntax: DATA (without arguments)")

    # 5xx: the contact service refused the message as built
    REFUSED_BY_CONNECT = Reply(554, "5.6.0", "Amazon Connect refused this message")
    UNREADABLE = Reply(554, "5.6.0", "This message could not be read")
    EXPIRED = Reply(
        554, "5.4.7", "Delivery time expired: Amazon Connect could not take the message for {age}"
    )


for _name, _reply in list(vars(Replies).items()):
    if isinstance(_reply, Reply):
        setattr(Replies, _name, replace(_reply, name=_name.lower()))
