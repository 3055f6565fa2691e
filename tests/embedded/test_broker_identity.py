"""The embedded broker says when its log is new: each start is another cluster id at the
same address, which the ingest consumer reads as a new log (streams/ingest/consumer.py)."""

from __future__ import annotations

import asyncio

from streams.embedded.broker import EmbeddedBroker
from streams.kafka.admin import ClusterIdentity


async def cluster_id(bootstrap: str) -> str:
    identity = ClusterIdentity(bootstrap, "test-identity")
    await identity.start()
    try:
        return await identity.cluster_id()
    finally:
        await identity.stop()


def test_a_restarted_embedded_broker_is_another_cluster_at_the_same_address() -> None:
    broker = EmbeddedBroker()
    with broker:
        first = asyncio.run(cluster_id(broker.bootstrap))
        again = asyncio.run(cluster_id(broker.bootstrap))
    with broker:  # the same port, an empty log
        restarted = asyncio.run(cluster_id(broker.bootstrap))
    assert first == again
    assert first.startswith("embedded-") and restarted.startswith("embedded-")
    assert restarted != first
