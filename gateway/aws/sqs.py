"""The shared queue's work items in SQS: send, receive with long polling, keep invisible, delete.

A standard queue: a message may come twice (Connect's ClientToken makes a second delivery harmless) and
nothing can list or change a message once sent, which is why each mail's state lives in DynamoDB and a
message only says "look at this mail". :meth:`WorkQueue.receive` always names ``WaitTimeSeconds`` and
``VisibilityTimeout``, so the queue's own defaults never hold a call longer than asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.aws.answers import Answers

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["MAX_VISIBILITY_SECONDS", "Received", "WorkQueue"]

MAX_VISIBILITY_SECONDS = 43200  # SQS's limit: 12 hours
MAX_BATCH = 10


@dataclass(frozen=True)
class Received:
    """One message as received: ``receipt`` is what deleting it or changing its visibility needs."""

    message_id: str
    receipt: str
    body: str
    receive_count: int


class WorkQueue:
    def __init__(self, client: SQSClient, url: str, answers: Answers) -> None:
        self._client = client
        self.url = url
        self._answers = answers

    async def send(self, body: str) -> str:
        """Its MessageId, once SQS has the message."""
        with self._answers.call("sqs"):
            answer = await self._client.send_message(QueueUrl=self.url, MessageBody=body)
        return answer["MessageId"]

    async def receive(self, count: int, wait: int, visibility: int) -> list[Received]:
        with self._answers.call("sqs"):
            answer = await self._client.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=max(1, min(MAX_BATCH, count)),
                WaitTimeSeconds=wait,
                VisibilityTimeout=visibility,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
            )
        return [
            Received(
                message["MessageId"],
                message["ReceiptHandle"],
                message["Body"],
                int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
            )
            for message in answer.get("Messages", [])
        ]

    async def delete(self, receipt: str) -> None:
        with self._answers.call("sqs"):
            await self._client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)

    async def hide(self, receipt: str, seconds: float) -> None:
        """Keep the message invisible for ``seconds`` from now (0: visible at once), within SQS's 12 hours."""
        seconds = int(max(0, min(MAX_VISIBILITY_SECONDS, seconds)))
        with self._answers.call("sqs"):
            await self._client.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=receipt, VisibilityTimeout=seconds
            )

    async def attributes(self) -> dict[str, str]:
        with self._answers.call("sqs"):
            answer = await self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])
        return {str(name): value for name, value in answer.get("Attributes", {}).items()}

    async def dead_letter_queue(self, attributes: dict[str, str] | None = None) -> WorkQueue | None:
        """The queue the redrive policy names, or None without one."""
        attributes = attributes if attributes is not None else await self.attributes()
        policy = attributes.get("RedrivePolicy")
        if not policy:
            return None
        arn = str(json.loads(policy)["deadLetterTargetArn"])
        *_, account, name = arn.split(":")
        with self._answers.call("sqs"):
            answer = await self._client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)
        return WorkQueue(self._client, answer["QueueUrl"], self._answers)
