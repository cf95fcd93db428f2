"""The emulator refuses what Connect refuses: every maximum, minimum, pattern and enum of the botocore
model, and every documented limit, with errors botocore turns into the right exception classes.

Requests that break a maximum, a pattern or an enum travel through a real aiobotocore client (botocore
does not check those); requests that break a minimum would be stopped by botocore itself, so they are
sent as signed-looking raw HTTP instead.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from gateway.contact import contract
from gateway.sandbox.emulator import EmulatorServer

VALID_STRINGS = {
    # shapes with patterns or documented values need a value that passes them
    "EmailAddress": "someone@example.com",
    "FileName": "file.txt",
    "PreSignedAttachmentUrl": "https://bucket.s3.amazonaws.com/key",
    "EmailMessageContentType": "text/plain",
    "ReferenceArn": "arn:aws:connect:us-east-1:111122223333:x",
}
# where the documented rules narrow what the model allows
VALID_ENUMS = {"ReferenceType": "URL"}
SKIP_MEMBERS = {"ValueMap", "ValueList"}  # recursive shapes: one level of SegmentAttributeValue is enough


def valid_value(shape: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        return {
            name: valid_value(member) for name, member in shape.members.items() if name not in SKIP_MEMBERS
        }
    if kind == "list":
        return [valid_value(shape.member)]
    if kind == "map":
        key = "MESSAGE_ID" if shape.key.enum else "key"
        return {key: valid_value(shape.value)}
    if kind == "integer":
        return 1
    if shape.enum:
        return VALID_ENUMS.get(shape.name, shape.enum[0])
    return VALID_STRINGS.get(shape.name, "x" * max(1, shape.metadata.get("min", 1)))


def valid_request() -> dict[str, Any]:
    request: dict[str, Any] = valid_value(contract.operation_model().input_shape)
    return request


def test_the_fully_populated_request_is_valid() -> None:
    assert contract.violations(valid_request()) == []


def constrained_paths(
    shape: Any, value: Any, path: tuple[Any, ...] = ()
) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every place in the valid request whose shape carries a constraint, with that shape."""
    if shape.type_name == "structure":
        for name, item in value.items():
            yield from constrained_paths(shape.members[name], item, (*path, name))
    elif shape.type_name == "list":
        yield path, shape
        yield from constrained_paths(shape.member, value[0], (*path, 0))
    elif shape.type_name == "map":
        key = next(iter(value))
        yield (*path, ("key", key)), shape.key
        yield from constrained_paths(shape.value, value[key], (*path, key))
    elif shape.type_name == "string":
        yield path, shape


def replace_at(request: dict[str, Any], path: tuple[Any, ...], new: Any) -> dict[str, Any]:
    changed = copy.deepcopy(request)
    target: Any = changed
    for step in path[:-1]:
        target = target[step]
    last = path[-1]
    if isinstance(last, tuple):  # a map key
        target[new] = target.pop(last[1])
    else:
        target[last] = new
    return changed


def mutations() -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(description, broken request, whether botocore itself would refuse it before sending)."""
    base = valid_request()
    for path, shape in constrained_paths(contract.operation_model().input_shape, base):
        current: Any = base
        for step in path:
            current = step[1] if isinstance(step, tuple) else current[step]  # a map key is its own value
        name = ".".join(str(s if not isinstance(s, tuple) else "key") for s in path)
        metadata = shape.metadata
        if shape.type_name == "list":
            if "max" in metadata:
                yield (
                    f"{name}: more than {metadata['max']} items",
                    replace_at(base, path, current * (metadata["max"] + 1)),
                    False,
                )
            if metadata.get("min", 0) > 0:
                yield f"{name}: empty list", replace_at(base, path, []), True
            continue
        if "max" in metadata:
            too_long = _lengthened(current, metadata["max"] + 1)
            yield f"{name}: {metadata['max'] + 1} characters", replace_at(base, path, too_long), False
        if metadata.get("min", 0) > 0:
            yield (
                f"{name}: shorter than {metadata['min']}",
                replace_at(base, path, current[: metadata["min"] - 1]),
                True,
            )
        if "pattern" in metadata:
            yield f"{name}: breaks its pattern", replace_at(base, path, "bad\u0007value with spaces"), False
        if shape.enum:
            yield f"{name}: not in its enum", replace_at(base, path, "NOT_A_VALUE"), False


def _lengthened(value: str, length: int) -> str:
    """A string of ``length`` characters that still passes the member's pattern, if it has one."""
    if "@" in value:
        return "a" * (length - len(value) + value.index("@")) + value[value.index("@") :]
    return value + "x" * (length - len(value))


MUTATIONS = list(mutations())
DOCUMENTED: list[tuple[str, dict[str, Any]]] = [
    (
        "49 additional recipients at most (To and Cc together)",
        {
            "AdditionalRecipients": {
                "ToAddresses": [{"EmailAddress": f"t{i}@example.com"} for i in range(30)],
                "CcAddresses": [{"EmailAddress": f"c{i}@example.com"} for i in range(20)],
            }
        },
    ),
    (
        "references: 4,096 UTF-8 bytes in all",
        {"References": {f"k{i}": {"Type": "STRING", "Value": "é" * 500} for i in range(5)}},
    ),
    (
        "references: only URL, NUMBER, STRING, DATE on create",
        {"References": {"k": {"Type": "EMAIL", "Value": "x"}}},
    ),
    ("attributes: 32,768 UTF-8 bytes in all", {"Attributes": {f"a{i}": "x" * 10000 for i in range(4)}}),
    (
        "body: 5 MiB of UTF-8",
        {
            "EmailMessage": {
                "MessageSourceType": "RAW",
                "RawMessage": {"Subject": "s", "Body": "é" * (3 * 1024 * 1024), "ContentType": "text/plain"},
            }
        },
    ),
    (
        "content type: text/plain or text/html",
        {
            "EmailMessage": {
                "MessageSourceType": "RAW",
                "RawMessage": {"Subject": "s", "Body": "b", "ContentType": "text/markdown"},
            }
        },
    ),
    (
        "attachment URL: presigned http(s)",
        {"Attachments": [{"FileName": "f.txt", "S3Url": "s3://bucket/key"}]},
    ),
]


def minimal_request(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "InstanceId": "instance-1",
        "FromEmailAddress": {"EmailAddress": "customer@client.test"},
        "DestinationEmailAddress": "support@example.com",
        "EmailMessage": {
            "MessageSourceType": "RAW",
            "RawMessage": {"Subject": "s", "Body": "b", "ContentType": "text/plain"},
        },
    }
    request.update(changes)
    return request


def test_every_model_constraint_is_covered() -> None:
    kinds = {description.split(": ", 1)[1].split(" ")[0] for description, _, _ in MUTATIONS}
    assert len(MUTATIONS) > 40
    assert {"more", "breaks", "not", "empty", "shorter"} <= kinds


@pytest.mark.parametrize(
    ("description", "request_body", "client_refuses"), MUTATIONS, ids=[m[0] for m in MUTATIONS]
)
def test_model_violations_are_refused(
    description: str, request_body: dict[str, Any], client_refuses: bool
) -> None:
    assert contract.violations(request_body), description


@pytest.mark.parametrize(("description", "changes"), DOCUMENTED, ids=[d[0] for d in DOCUMENTED])
def test_documented_limits_are_refused(description: str, changes: dict[str, Any]) -> None:
    assert contract.violations(minimal_request(**changes)), description


@pytest.fixture
async def connect(emulator: EmulatorServer) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "connect",
        region_name="us-east-1",
        endpoint_url=emulator.url,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ) as client:
        yield client


async def test_over_http_botocore_gets_invalid_request_exceptions(connect: Any) -> None:
    """Every case botocore lets through comes back as the modeled InvalidRequestException."""
    sent = 0
    for description, request_body, client_refuses in MUTATIONS:
        if client_refuses:
            continue
        with pytest.raises(connect.exceptions.InvalidRequestException) as caught:
            await connect.start_email_contact(**request_body)
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400, description
        sent += 1
    for _, changes in DOCUMENTED:
        with pytest.raises(connect.exceptions.InvalidRequestException):
            await connect.start_email_contact(**minimal_request(**changes))
        sent += 1
    assert sent > 40


async def test_minimum_violations_over_raw_http(emulator: EmulatorServer) -> None:
    headers = {"Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/connect/aws4_request, ..."}
    async with aiohttp.ClientSession() as http:
        for description, request_body, client_refuses in MUTATIONS:
            if not client_refuses:
                continue
            async with http.put(
                f"{emulator.url}/contact/email", data=json.dumps(request_body), headers=headers
            ) as r:
                assert r.status == 400, description
                assert r.headers["x-amzn-ErrorType"] == "InvalidRequestException"
                assert "validation error" in (await r.json())["Message"]


async def test_the_valid_request_is_accepted_over_http(connect: Any) -> None:
    response = await connect.start_email_contact(**minimal_request())
    assert response["ContactId"]


async def test_unsigned_requests_are_refused(emulator: EmulatorServer) -> None:
    url = f"{emulator.url}/contact/email"
    async with aiohttp.ClientSession() as http, http.put(url, data=json.dumps(minimal_request())) as response:
        assert response.status == 403
        assert response.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


async def test_error_answers_parse_into_botocore_errors(connect: Any, emulator: EmulatorServer) -> None:
    emulator.connect.instances = frozenset({"known"})
    with pytest.raises(connect.exceptions.ResourceNotFoundException):
        await connect.start_email_contact(**minimal_request())
    emulator.connect.addresses = ("*@example.com",)
    with pytest.raises(ClientError) as caught:
        await connect.start_email_contact(
            **minimal_request(InstanceId="known", DestinationEmailAddress="other@example.org")
        )
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "not an email address of instance" in caught.value.response["Error"]["Message"]
