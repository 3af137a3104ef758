"""Read back what a real topic holds (the tests' view of `cases.enriched`)."""

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def read_topic(bootstrap: str, topic: str, partitions: int = 3, idle_polls: int = 6) -> list[tuple[str, bytes]]:
    """Every (key, value) of `topic` from its earliest offsets, until `idle_polls` polls in a row bring nothing."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False,
                         "enable.partition.eof": False})
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        out, idle = [], 0
        while idle < idle_polls:
            batch = consumer.consume(num_messages=1000, timeout=0.5)
            idle = 0 if batch else idle + 1
            out += [(m.key().decode(), m.value()) for m in batch if m.error() is None]
        return out
    finally:
        consumer.close()
