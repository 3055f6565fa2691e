"""Where a producer's batches go: Kafka (aiokafka) or spendstream's HTTP ingest.

A transport is async and knows nothing of batching or retries: it gets a list
of already-encoded events, delivers what it can, and raises `TransportError`
saying which events were not delivered and whether trying again can help. The
producers own the queue, the retries and the backoff.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import httpx
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedVersionError,
)
from aiokafka.partitioner import murmur2
from pydantic import SecretStr

from schemas.usage_event import MAX_MESSAGE_BYTES
from streams.retrying import parse_retry_after

log = logging.getLogger("spendstream.sdk")

DEFAULT_TOPIC = "spendstream.usage"
INGEST_PATH = "/v1/events"

_KAFKA_PERMANENT = (
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    UnsupportedVersionError,
)
_KAFKA_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)
_HTTP_RETRIABLE = frozenset({408, 425, 429})


class EncodedEvent(NamedTuple):
    """One validated event, serialized once: its dedupe key and JSON bytes."""

    request_id: str
    data: bytes


class TransportError(Exception):
    """Some events were not delivered.

    `failed` lists them (None: all of the batch); events before them may have
    been delivered. `retriable` says whether the same events can succeed
    later, `retry_after` is the receiver's requested wait in seconds,
    `too_large` asks the producer to split the batch. `rejected` counts events
    the receiver accepted for processing but refused one by one.
    """

    def __init__(
        self,
        message: str,
        *,
        retriable: bool,
        failed: Sequence[EncodedEvent] | None = None,
        retry_after: float | None = None,
        too_large: bool = False,
        rejected: int = 0,
    ) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.failed = list(failed) if failed is not None else None
        self.retry_after = retry_after
        self.too_large = too_large
        self.rejected = rejected


class Transport(Protocol):
    async def start(self) -> None: ...

    async def send(self, events: Sequence[EncodedEvent]) -> int:
        """Deliver `events`; return how many the receiver rejected."""
        ...

    async def close(self) -> None: ...


def _chunks(
    events: Sequence[EncodedEvent], max_events: int, max_bytes: int
) -> list[list[EncodedEvent]]:
    """Consecutive groups of at most `max_events` events and about
    `max_bytes` bytes of JSON (a single larger event gets its own group)."""
    chunks: list[list[EncodedEvent]] = []
    current: list[EncodedEvent] = []
    size = 2
    for event in events:
        extra = len(event.data) + 1
        if current and (len(current) >= max_events or size + extra > max_bytes):
            chunks.append(current)
            current, size = [], 2
        current.append(event)
        size += extra
    if current:
        chunks.append(current)
    return chunks


def _json_body(chunk: Sequence[EncodedEvent], *, array: bool) -> bytes:
    if not array and len(chunk) == 1:
        return chunk[0].data
    return b"[" + b",".join(event.data for event in chunk) + b"]"


class KafkaTransport:
    """Publishes to the usage topic with aiokafka.

    Every event goes to the partition its `request_id` hashes to (Kafka's
    default murmur2 partitioner), so a re-sent duplicate lands on the same
    partition as the original and the per-partition dedupe sees both. Events
    that share a partition travel as one JSON array of up to
    `max_events_per_message` events, keyed by the first event's request id.

    `producer_config` goes to `AIOKafkaProducer` as is (security settings,
    compression, ...). Idempotence stays off by default: the embedded broker
    does not implement InitProducerId, and duplicates are deduplicated
    downstream by request id anyway.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        topic: str = DEFAULT_TOPIC,
        *,
        max_events_per_message: int = 100,
        max_message_bytes: int = MAX_MESSAGE_BYTES // 2,
        request_timeout_s: float = 10.0,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if max_events_per_message < 1:
            raise ValueError("max_events_per_message must be at least 1")
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.max_events_per_message = max_events_per_message
        self.max_message_bytes = max_message_bytes
        self.request_timeout_s = request_timeout_s
        self.producer_config = dict(producer_config or {})
        self._producer: AIOKafkaProducer | None = None

    def __repr__(self) -> str:
        return f"KafkaTransport({self.bootstrap_servers!r}, topic={self.topic!r})"

    async def start(self) -> None:
        if self._producer is not None:
            return
        config: dict[str, Any] = {
            "acks": "all",
            "linger_ms": 5,
            "enable_idempotence": False,
            "request_timeout_ms": int(self.request_timeout_s * 1000),
            **self.producer_config,
        }
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, **config)
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            raise TransportError(f"cannot connect to Kafka: {exc!r}", retriable=True) from exc
        self._producer = producer

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def send(self, events: Sequence[EncodedEvent]) -> int:
        await self.start()
        producer = self._producer
        assert producer is not None
        try:
            partitions = sorted(await producer.partitions_for(self.topic))
        except Exception as exc:
            raise TransportError(
                f"no metadata for topic {self.topic!r}: {exc!r}", retriable=True
            ) from exc
        if not partitions:
            raise TransportError(f"topic {self.topic!r} has no partitions", retriable=True)

        by_partition: dict[int, list[EncodedEvent]] = defaultdict(list)
        for event in events:
            index = (murmur2(event.request_id.encode()) & 0x7FFFFFFF) % len(partitions)
            by_partition[partitions[index]].append(event)

        sent: list[tuple[list[EncodedEvent], Any]] = []
        failures: list[tuple[list[EncodedEvent], BaseException]] = []
        array = self.max_events_per_message > 1
        for partition, group in by_partition.items():
            for chunk in _chunks(group, self.max_events_per_message, self.max_message_bytes):
                try:
                    future = await producer.send(
                        self.topic,
                        _json_body(chunk, array=array),
                        key=chunk[0].request_id.encode(),
                        partition=partition,
                    )
                except Exception as exc:
                    failures.append((chunk, exc))
                else:
                    sent.append((chunk, future))
        results = await _gather([future for _, future in sent])
        for (chunk, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failures.append((chunk, result))
        if failures:
            raise _kafka_error(failures)
        return 0


async def _gather(futures: list[Any]) -> list[Any]:
    return list(await asyncio.gather(*futures, return_exceptions=True))


def _kafka_error(failures: list[tuple[list[EncodedEvent], BaseException]]) -> TransportError:
    failed = [event for chunk, _ in failures for event in chunk]
    errors = [exc for _, exc in failures]
    first = errors[0]
    if all(isinstance(exc, _KAFKA_TOO_LARGE) for exc in errors):
        return TransportError(
            f"Kafka message too large: {first!r}", retriable=False, failed=failed, too_large=True
        )
    retriable = not any(isinstance(exc, _KAFKA_PERMANENT) for exc in errors)
    return TransportError(f"Kafka send failed: {first!r}", retriable=retriable, failed=failed)


class HttpTransport:
    """POSTs JSON arrays of events to `{base_url}/v1/events` with the ingest key
    as a bearer token.

    Status handling: 2xx delivered (per-event rejections in the answer are
    counted and logged, not retried: the same event would be rejected again);
    413 splits the batch; 408/425/429/5xx and connection errors are retried,
    honouring `Retry-After`; any other 4xx (401 bad key, 400 ...) is final.
    Pass `client` (or `transport`, e.g. `httpx.MockTransport`) to control the
    HTTP stack; a client passed in is not closed here.

    On the embedded broker the worker answers 202 once the events are ledgered (its
    default durable ack), after at most 30 s (then 504): `timeout_s` outlasts that.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str | None = None,
        *,
        timeout_s: float = 35.0,
        max_events_per_request: int = 500,
        max_request_bytes: int = MAX_MESSAGE_BYTES,
        gzip_body: bool = False,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + INGEST_PATH
        self.api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.timeout_s = timeout_s
        self.max_events_per_request = max_events_per_request
        self.max_request_bytes = max_request_bytes
        self.gzip_body = gzip_body
        self._client = client
        self._owns_client = client is None
        self._http_transport = transport

    def __repr__(self) -> str:
        return f"HttpTransport({self.url!r})"

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, transport=self._http_transport)

    async def close(self) -> None:
        client = self._client
        if client is not None and self._owns_client:
            self._client = None
            await client.aclose()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        if self.gzip_body:
            headers["Content-Encoding"] = "gzip"
        return headers

    async def send(self, events: Sequence[EncodedEvent]) -> int:
        await self.start()
        client = self._client
        assert client is not None
        chunks = _chunks(events, self.max_events_per_request, self.max_request_bytes)
        rejected = 0
        for index, chunk in enumerate(chunks):
            undelivered = [event for later in chunks[index:] for event in later]
            body = _json_body(chunk, array=True)
            if self.gzip_body:
                body = gzip.compress(body, compresslevel=5)
            try:
                response = await client.post(self.url, content=body, headers=self._headers())
            except httpx.HTTPError as exc:
                raise TransportError(
                    f"POST {self.url} failed: {exc!r}",
                    retriable=True,
                    failed=undelivered,
                    rejected=rejected,
                ) from exc
            status = response.status_code
            if 200 <= status < 300:
                rejected += _rejected_count(response, len(chunk))
                continue
            message = f"POST {self.url} answered {status}"
            if status == 413:
                raise TransportError(
                    message, retriable=False, failed=undelivered, too_large=True, rejected=rejected
                )
            retriable = status in _HTTP_RETRIABLE or status >= 500
            raise TransportError(
                message + ("" if retriable else f": {response.text[:200]}"),
                retriable=retriable,
                failed=undelivered,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                rejected=rejected,
            )
        return rejected


def _rejected_count(response: httpx.Response, size: int) -> int:
    try:
        answer = response.json()
    except ValueError:
        return 0
    if not isinstance(answer, Mapping):
        return 0
    rejected = answer.get("rejected")
    count = len(rejected) if isinstance(rejected, list) else rejected
    if not isinstance(count, int) or isinstance(count, bool) or count <= 0:
        return 0
    reasons = answer.get("errors") or (rejected if isinstance(rejected, list) else None)
    log.warning("ingest rejected %d of %d events: %s", count, size, str(reasons)[:500])
    return min(count, size)
