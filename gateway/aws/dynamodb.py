"""The shared queue's state in one DynamoDB table: plain Python values in, plain values out.

Items are keyed by ``pk`` alone (``mail#<id>``, ``thread#<instance>#<Message-ID>``, ``pacer#<name>``);
mail items carry ``state`` and ``received_at``, which the sparse index :data:`STATE_INDEX` orders, so that
``mail-gateway queue list`` reads one state at a time instead of scanning the table. Values are encoded
here (strings, numbers, booleans, None, lists and maps: all the gateway stores), so the rest never sees
DynamoDB's typed attribute values. Every write can carry a condition; one that does not hold raises
:class:`~gateway.errors.ConditionFailedError` with the item as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.aws.answers import Answers
from gateway.errors import ConditionFailedError

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb import DynamoDBClient

__all__ = [
    "KEY",
    "STATE_INDEX",
    "TTL_ATTRIBUTE",
    "IfNotExists",
    "Table",
    "condition_failed",
    "decode_item",
    "encode",
]

KEY = "pk"
STATE_INDEX = "by-state"  # HASH state (S), RANGE received_at (N): mail items only
TTL_ATTRIBUTE = "expires_at"  # epoch seconds; DynamoDB deletes the item some time after (or never: moto)
BATCH_GET = 100
_NAME = re.compile(r"#([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class IfNotExists:
    """An update that sets the attribute only when it has no value yet (a ContactId already recorded)."""

    value: Any


def encode(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, Mapping):
        return {"M": {str(k): encode(v) for k, v in value.items()}}
    if isinstance(value, Sequence):
        return {"L": [encode(v) for v in value]}
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def decode(value: Mapping[str, Any]) -> Any:
    if "S" in value:
        return value["S"]
    if "N" in value:
        text = str(value["N"])
        return float(text) if any(c in text for c in ".eE") else int(text)
    if "BOOL" in value:
        return bool(value["BOOL"])
    if "NULL" in value:
        return None
    if "M" in value:
        return {k: decode(v) for k, v in value["M"].items()}
    if "L" in value:
        return [decode(v) for v in value["L"]]
    raise TypeError(f"an attribute value the gateway never writes: {sorted(value)}")


def decode_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: decode(value) for name, value in item.items()}


class _Expression:
    """Attribute names as ``#name`` placeholders (``state`` is a reserved word) and values as ``:vN``."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def path(self, path: str) -> str:
        """``targets[2].state`` as ``#targets[2].#state``."""
        parts = []
        for segment in path.split("."):
            name, bracket, index = segment.partition("[")
            self.names[f"#{name}"] = name
            parts.append(f"#{name}{bracket}{index}")
        return ".".join(parts)

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = encode(value)
        return placeholder

    def condition(self, text: str, values: Mapping[str, Any]) -> str:
        """A condition written with ``#name`` and ``:name``: the names registered, the values encoded."""
        for name in _NAME.findall(text):
            self.names[f"#{name}"] = name
        for placeholder, value in values.items():
            self.values[placeholder] = encode(value)
        return text

    def options(
        self, condition: str | None = None, values: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The request's expression options, with ``condition`` (its ``:name`` values given by name)."""
        options: dict[str, Any] = {}
        if condition:
            arguments = {f":{name}": value for name, value in (values or {}).items()}
            options["ConditionExpression"] = self.condition(condition, arguments)
        if self.names:
            options["ExpressionAttributeNames"] = self.names
        if self.values:
            options["ExpressionAttributeValues"] = self.values
        return options


class Table:
    def __init__(self, client: DynamoDBClient, name: str, answers: Answers) -> None:
        self._client = client
        self.name = name
        self._answers = answers

    def _key(self, key: str) -> dict[str, Any]:
        return {KEY: {"S": key}}

    async def get(self, key: str) -> dict[str, Any] | None:
        """The item, read consistently (another gateway's last write included)."""
        with self._answers.call("dynamodb"):
            answer = await self._client.get_item(TableName=self.name, Key=self._key(key), ConsistentRead=True)
        item = answer.get("Item")
        return decode_item(item) if item else None

    async def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The items that exist among ``keys``, by key."""
        found: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(keys))
        while wanted:
            batch, wanted = wanted[:BATCH_GET], wanted[BATCH_GET:]
            request: dict[str, Any] = {
                self.name: {"Keys": [self._key(k) for k in batch], "ConsistentRead": True}
            }
            while request:
                with self._answers.call("dynamodb"):
                    answer = await self._client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.name, []):
                    decoded = decode_item(item)
                    found[decoded[KEY]] = decoded
                request = dict(answer.get("UnprocessedKeys") or {})
        return found

    async def put(
        self, key: str, item: Mapping[str, Any], *, condition: str | None = None, **values: Any
    ) -> None:
        options = _Expression().options(condition, values)
        encoded = {name: encode(value) for name, value in item.items()}
        encoded[KEY] = {"S": key}
        with self._answers.call("dynamodb"):
            await self._client.put_item(
                TableName=self.name,
                Item=encoded,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **options,
            )

    async def update(
        self,
        key: str,
        *,
        assign: Mapping[str, Any] | None = None,
        add: Mapping[str, int | float] | None = None,
        remove: Sequence[str] = (),
        condition: str | None = None,
        **values: Any,
    ) -> dict[str, Any]:
        """Apply the update (``assign``: SET, ``add``: ADD, ``remove``: REMOVE, by attribute path such as
        ``targets[2].state``) and return the item as it is now; ``condition`` uses ``#name`` and ``:name``
        (given as keyword arguments ``name=value``)."""
        expression = _Expression()
        clauses = []
        sets = []
        for path, value in (assign or {}).items():
            name = expression.path(path)
            if isinstance(value, IfNotExists):
                sets.append(f"{name} = if_not_exists({name}, {expression.value(value.value)})")
            else:
                sets.append(f"{name} = {expression.value(value)}")
        if sets:
            clauses.append("SET " + ", ".join(sets))
        if add:
            clauses.append(
                "ADD " + ", ".join(f"{expression.path(p)} {expression.value(v)}" for p, v in add.items())
            )
        if remove:
            clauses.append("REMOVE " + ", ".join(expression.path(p) for p in remove))
        options = expression.options(condition, values)
        with self._answers.call("dynamodb"):
            answer = await self._client.update_item(
                TableName=self.name,
                Key=self._key(key),
                UpdateExpression=" ".join(clauses),
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
                **options,
            )
        return decode_item(answer.get("Attributes", {}))

    async def delete(self, key: str, *, condition: str | None = None, **values: Any) -> None:
        options = _Expression().options(condition, values)
        with self._answers.call("dynamodb"):
            await self._client.delete_item(TableName=self.name, Key=self._key(key), **options)

    async def in_state(self, state: str, limit: int) -> list[dict[str, Any]]:
        """Mail items in ``state``, oldest first, at most ``limit``."""
        items: list[dict[str, Any]] = []
        options: dict[str, Any] = {}
        while len(items) < limit:
            with self._answers.call("dynamodb"):
                answer = await self._client.query(
                    TableName=self.name,
                    IndexName=STATE_INDEX,
                    KeyConditionExpression="#state = :state",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={":state": {"S": state}},
                    Limit=limit - len(items),
                    **options,
                )
            items += [decode_item(item) for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                break
            options["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
        return items

    async def count_state(self, state: str) -> int:
        total = 0
        options: dict[str, Any] = {}
        while True:
            with self._answers.call("dynamodb"):
                answer = await self._client.query(
                    TableName=self.name,
                    IndexName=STATE_INDEX,
                    KeyConditionExpression="#state = :state",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={":state": {"S": state}},
                    Select="COUNT",
                    **options,
                )
            total += answer.get("Count", 0)
            if "LastEvaluatedKey" not in answer:
                return total
            options["ExclusiveStartKey"] = answer["LastEvaluatedKey"]

    async def describe(self) -> dict[str, Any]:
        with self._answers.call("dynamodb"):
            answer = await self._client.describe_table(TableName=self.name)
        return dict(answer["Table"])

    async def time_to_live(self) -> dict[str, Any]:
        with self._answers.call("dynamodb"):
            answer = await self._client.describe_time_to_live(TableName=self.name)
        return dict(answer.get("TimeToLiveDescription", {}))


def condition_failed(error: BaseException) -> dict[str, Any] | None:
    """The item a lost conditional write found (decoded), or None when DynamoDB did not say."""
    if isinstance(error, ConditionFailedError) and error.item:
        return decode_item(error.item)
    return None
