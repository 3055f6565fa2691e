"""The Faust app's configuration: broker tuning, tables, web server, from `Settings`."""

from __future__ import annotations

from typing import Any

from streams.faust_ext.app import broker_url
from streams.runtime.request_timeouts import web_application_options
from streams.settings import Settings

# aiokafka keeps one produce request in flight per broker: a response that never comes
# holds every costed publish and table write of the worker until this timeout, 20
# minutes by Faust's default. Kafka's own default is 30 s; the ingest and the spend
# agent retry what times out.
PRODUCER_REQUEST_TIMEOUT_SECONDS = 30.0


def faust_app_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of `SpendstreamApp` (Faust's `App.conf` options)."""
    return {
        "broker": broker_url(settings.kafka_bootstrap),
        "store": "memory://",
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.replication_factor,
        "topic_disable_leader": True,
        # Tables keep JSON; every topic of ours sets raw bytes explicitly.
        "value_serializer": "json",
        "key_serializer": "json",
        "consumer_auto_offset_reset": "earliest",
        # The embedded broker answers JoinGroup after half the session timeout:
        # Faust's 60 s default would cost 30 s at every start.
        "broker_session_timeout": settings.session_timeout_seconds,
        "broker_heartbeat_interval": max(0.5, settings.session_timeout_seconds / 6),
        "broker_rebalance_timeout": max(10.0, settings.session_timeout_seconds * 2),
        "broker_commit_interval": 0.5,
        "stream_recovery_delay": 0.0,
        # The spend agent's costed messages and the changelogs, in large fetches.
        "broker_max_poll_records": 10_000,
        "stream_buffer_maxsize": 20_000,
        # Changelog and costed messages by the thousand per batch: aiokafka's 16 KB
        # batches and zero linger made one produce request of each.
        "producer_max_batch_size": 1024 * 1024,
        "producer_linger": 0.005,
        "producer_request_timeout": PRODUCER_REQUEST_TIMEOUT_SECONDS,
        "web_enabled": settings.web_enabled,
        # Faust's /table and /router views show table contents (per-tenant spend) to
        # anyone who reaches the port.
        "web_router_enabled": False,
        "web_tables_enabled": False,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        # Request header and body timeouts (streams/runtime/request_timeouts.py).
        "web_application_options": web_application_options(settings),
        "datadir": str(settings.data_dir / "faust"),
    }
