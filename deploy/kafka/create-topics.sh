#!/bin/sh
# Creates spendstream's three main topics on Apache Kafka; safe to run again.
# Run by the compose service `topic-init`; by hand:
#   KAFKA_BOOTSTRAP=localhost:9094 TOPIC_PARTITIONS=4 sh deploy/kafka/create-topics.sh
# (with Kafka's bin/ directory on PATH or KAFKA_BIN set).
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka:9092}"
PARTITIONS="${TOPIC_PARTITIONS:-4}"
REPLICATION="${TOPIC_REPLICATION:-1}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"

for topic in spendstream.usage spendstream.costed spendstream.usage.dlq; do
    "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
        --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION"
done

# A topic that already existed keeps its partition count: say so if it differs.
for topic in spendstream.usage spendstream.costed spendstream.usage.dlq; do
    actual="$("$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --describe --topic "$topic" \
        | sed -n 's/.*PartitionCount: *\([0-9][0-9]*\).*/\1/p' | head -n 1)"
    if [ "$actual" != "$PARTITIONS" ]; then
        echo "topic $topic has $actual partitions, SPENDSTREAM_TOPIC_PARTITIONS is $PARTITIONS" >&2
        exit 1
    fi
done
echo "topics ready: spendstream.usage spendstream.costed spendstream.usage.dlq ($PARTITIONS partitions)"
