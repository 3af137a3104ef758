"""Sample events onto Kafka: the seeded sample set once, and the live stream of `make dev`.

The live stream publishes a small batch of sample events stamped today every few seconds,
like a producer would. Its event ids carry a nonce drawn when the stream starts (the start
time and random bits), so a restarted `make dev` never reuses an id of an earlier run: a
reused id would be MERGEd over the earlier event instead of arriving as a new one. A batch
keeps the generator's deliberate duplicate deliveries (same event, same id); every fifth
batch carries one malformed message for the dead letter.
"""

from __future__ import annotations

import secrets
import threading
import time
import zlib
from datetime import date, datetime, timezone
from typing import Iterable

from llm_assets.resources.kafka import KafkaResource
from llm_assets.domain.packs.payments_ops.sample_data.generator import SampleMessage, generate_messages

LIVE_BATCH_EVENTS = 20


def produce_sample_messages(kafka: KafkaResource | str, topic: str,
                            messages: Iterable[SampleMessage | tuple[bytes | None, bytes | None]]) -> int:
    """Publish messages (sample messages or `(key, value)` pairs) idempotently; returns how many."""
    resource = kafka if isinstance(kafka, KafkaResource) else KafkaResource(bootstrap_servers=kafka)
    pairs = ((m.key, m.value) if isinstance(m, SampleMessage) else m for m in messages)
    return resource.produce_batch(topic, pairs)


def new_stream_nonce() -> str:
    """Unique per stream start: the start time (seconds, hex) and 16 random bits."""
    return f"{int(time.time()):x}{secrets.token_hex(2)}"


def live_batch(nonce: str, batch: int, today: date) -> list[SampleMessage]:
    """Batch `batch` of the live stream `nonce`: ids `live-{nonce}-{batch}-NNNNNNN`, events of `today`."""
    messages = generate_messages(LIVE_BATCH_EVENTS, seed=zlib.crc32(f"{nonce}:{batch}".encode()), start_date=today,
                                 days=1, id_prefix=f"live-{nonce}-{batch}-")
    # A live stream is mostly clean: one malformed message every fifth batch.
    malformed = [m for m in messages if m.kind.startswith("malformed")][: int(batch % 5 == 0)]
    return [m for m in messages if not m.kind.startswith("malformed")] + malformed


class LiveSampleStream:
    """A background thread publishing `live_batch`es to `topic` every `interval_s` seconds."""

    def __init__(self, kafka: KafkaResource | str, topic: str, interval_s: float, nonce: str | None = None):
        self.kafka = kafka if isinstance(kafka, KafkaResource) else KafkaResource(bootstrap_servers=kafka)
        self.topic, self.interval_s = topic, interval_s
        self.nonce = nonce or new_stream_nonce()
        self.batches = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-sample-stream", daemon=True)

    def start(self) -> "LiveSampleStream":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)  # a daemon thread: a publish stuck on a stopped broker dies with us

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.batches += 1
            today = datetime.now(timezone.utc).date()
            try:
                produce_sample_messages(self.kafka, self.topic, live_batch(self.nonce, self.batches, today))
            except Exception:  # noqa: BLE001 - the broker is going away (shutdown): stop quietly
                if self._stop.is_set():
                    return
                raise
