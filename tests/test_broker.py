"""The embedded broker: a consumer racing a producer never reads a half-written message.

kombu's own filesystem transport fails this test within a second (JSONDecodeError on an empty
file; checked by hand with transport "kombu.transport.filesystem:Transport").
"""

from __future__ import annotations

import multiprocessing
import queue

from kombu import Connection

from monitor import broker

MESSAGES = 3000


def options(folder: str) -> dict:
    return {"data_folder_in": folder, "data_folder_out": folder, "store_processed": False}


def produce(folder: str, transport: str) -> None:
    with Connection("filesystem://", transport=transport, transport_options=options(folder)) as connection:
        channel = connection.default_channel
        for number in range(MESSAGES):
            channel._put("race", {"n": number, "padding": "x" * 2000})


def consume_while_producing(folder: str, transport: str) -> list[int]:
    """Run a producer process and read the queue as fast as possible meanwhile; return the numbers read."""
    producer = multiprocessing.get_context("fork").Process(target=produce, args=(folder, transport))
    seen: list[int] = []
    with Connection("filesystem://", transport=transport, transport_options=options(folder)) as connection:
        channel = connection.default_channel
        producer.start()
        while producer.is_alive() or len(seen) < MESSAGES:
            try:
                seen.append(channel._get("race")["n"])
            except queue.Empty:
                if not producer.is_alive() and len(seen) < MESSAGES:
                    break
    producer.join(timeout=30)
    return seen


def test_every_message_is_read_whole_while_the_producer_writes(tmp_path):
    seen = consume_while_producing(str(tmp_path), f"{broker.__name__}:Transport")
    assert sorted(seen) == list(range(MESSAGES))
