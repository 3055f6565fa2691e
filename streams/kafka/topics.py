"""Topic names and partition counts, without importing Faust (for the launcher)."""

from __future__ import annotations

from collections.abc import Iterable

from streams.kafka.admin import TopicSpec
from streams.settings import Settings

APP_ID = "spendstream"  # also the Faust consumer group id (spend agent, tables)
# The usage topic is read by `UsageConsumer` in a group of its own.
INGEST_GROUP = f"{APP_ID}-ingest"


def topic_specs(settings: Settings, changelogs: Iterable[str] = ()) -> list[TopicSpec]:
    """Every topic the worker uses, changelogs included (compacted), with the partition
    count we mean: brokers may auto-create topics with their own default."""
    partitions = settings.topic_partitions
    specs = [
        TopicSpec(settings.usage_topic, partitions),
        TopicSpec(settings.costed_topic, partitions),
        TopicSpec(settings.dlq_topic, partitions),
    ]
    specs += [TopicSpec(name, partitions, compacted=True) for name in changelogs]
    return specs
