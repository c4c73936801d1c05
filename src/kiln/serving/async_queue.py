"""An asynchronous endpoint's work queue on the broker (RabbitMQ, AMQP 0-9-1, through aio-pika).

One durable queue per deployed endpoint, `kiln.async.<endpoint>.<id>` (the id made at deploy: a broker is shared by
workspaces, and by an endpoint deployed again); each message is one inference id, persistent. Workers take
one message at a time and acknowledge it only once its outcome is written, so a worker that stops mid-request leaves
the message to come back (at-least-once). How many times a request was delivered is counted in the async store.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kiln.errors import ServiceError

if TYPE_CHECKING:
    import aio_pika
    from aio_pika.abc import AbstractChannel, AbstractRobustConnection

QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "classic"}


def queue_name(endpoint: str) -> str:
    """A new queue's name for ``endpoint``."""
    return f"kiln.async.{endpoint}.{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Work:
    """One queued request: its id and the endpoint it was sent to."""

    inference_id: str
    endpoint: str

    def body(self) -> bytes:
        return json.dumps({"inference_id": self.inference_id, "endpoint": self.endpoint}).encode()

    @classmethod
    def parse(cls, body: bytes) -> Work:
        data = json.loads(body)
        return cls(str(data["inference_id"]), str(data["endpoint"]))


def _where(url: str) -> str:
    """The broker's address without its credentials, for messages."""
    return url.split("@")[-1]


def broker_url(url: str) -> str:
    """The broker's URL: as given, or for ``env:NAME`` the value of that variable (on a cluster, from a Secret)."""
    if not url.startswith("env:"):
        return url
    value = os.environ.get(url[4:])
    if not value:
        raise ServiceError(f"the broker's URL is read from the variable {url[4:]}, which is not set")
    return value


async def connect(url: str) -> AbstractRobustConnection:
    """A connection that reconnects by itself; ServiceError naming the broker when none can be made."""
    import aio_pika

    url = broker_url(url)
    try:
        return await aio_pika.connect_robust(url, timeout=10)
    except (OSError, aio_pika.exceptions.AMQPError, TimeoutError) as exc:
        raise ServiceError(f"the broker at {_where(url)} does not answer: {type(exc).__name__}: {exc}",
                           hint="async endpoints queue on RabbitMQ: settings async_inference.broker_url") from None


async def declare(channel: AbstractChannel, queue: str) -> aio_pika.abc.AbstractQueue:
    return await channel.declare_queue(queue, durable=True, arguments=QUEUE_ARGUMENTS)


class Queue:
    """The endpoint's queue, for the front: publish requests, read the backlog."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None

    async def open(self) -> None:
        self._connection = await connect(self.url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await declare(self._channel, self.name)

    async def publish(self, work: Work) -> None:
        """Queue ``work``; returns once the broker has it (a publisher confirm)."""
        import aio_pika

        assert self._channel is not None, "open() first"
        try:
            await self._channel.default_exchange.publish(
                aio_pika.Message(work.body(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 content_type="application/json", message_id=work.inference_id),
                routing_key=self.name)
        except (aio_pika.exceptions.AMQPError, OSError) as exc:
            raise ServiceError(f"the broker at {_where(self.url)} did not take the request: {exc}") from None

    async def backlog(self) -> int:
        """Messages waiting for a worker (not those a worker holds)."""
        assert self._channel is not None, "open() first"
        # the protocol's own declare: aio-pika's robust channel answers a repeated passive declare with the count
        # its first one had
        raw = await self._channel.get_underlay_channel()
        declared = await raw.queue_declare(self.name, passive=True)
        return int(declared.message_count or 0)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


async def delete_queue(url: str, queue: str) -> list[Work]:
    """Remove an endpoint's queue (the endpoint is being deleted); the requests that were still waiting in it."""
    connection = await connect(url)
    waiting = []
    try:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, durable=True, arguments=QUEUE_ARGUMENTS)
        while (message := await declared.get(fail=False, no_ack=True)) is not None:
            with contextlib.suppress(ValueError, KeyError):
                waiting.append(Work.parse(message.body))
        await channel.queue_delete(queue)
    finally:
        await connection.close()
    return waiting
