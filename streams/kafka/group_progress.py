"""How far a consumer group has committed, against known target offsets.

Targets come from the producer's own acknowledgements (last offset + 1 per
partition): the embedded broker's ListOffsets answers with a wrong high-water
mark once records arrive in batches, so `end_offsets()` cannot be trusted there.
Committed offsets are read with a plain consumer's `committed()`: the embedded
broker closes the connection on the admin client's ListConsumerGroupOffsets."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass(frozen=True)
class GroupProgress:
    target: int
    committed: int

    @property
    def lag(self) -> int:
        return max(0, self.target - self.committed)


class GroupProgressReader:
    def __init__(self, bootstrap: str, group_id: str, topic: str) -> None:
        self.topic = topic
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def listed_ends(self, partitions: Collection[int] | None = None) -> dict[int, int]:
        """partition → the log end ListOffsets answers, for `partitions` or the topic's
        all. Short on the embedded broker (see above): check it with a fetch."""
        if partitions is None:
            await self._consumer.topics()  # the metadata that names the partitions
            partitions = self._consumer.partitions_for_topic(self.topic) or set()
        tps = [TopicPartition(self.topic, p) for p in partitions]
        if not tps:
            return {}
        ends = await self._consumer.end_offsets(tps)
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def read(self, targets: Mapping[int, int]) -> GroupProgress:
        """`targets`: partition → the offset after the last record that must be processed."""
        committed = 0
        for partition, target in targets.items():
            offset = await self._consumer.committed(TopicPartition(self.topic, partition))
            committed += min(target, offset or 0)
        return GroupProgress(sum(targets.values()), committed)
