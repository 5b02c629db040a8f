"""Run an iterator on a background thread a few items ahead of its consumer.

Decoding (FFmpeg), pixel conversion (libswscale) and OpenCV all release the GIL, so a decoder
running on its own thread overlaps with the shot detection, flow and scoring of the frames it has
already handed over instead of waiting for them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

Item = TypeVar("Item")
# How often a producer blocked on a full queue checks whether its consumer has gone away.
_POLL_SECONDS = 0.05


class _End:
    """Put on the queue after the last item, with the producer's exception if it raised."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def read_ahead(items: Iterator[Item], depth: int, name: str = "read-ahead") -> Iterator[Item]:
    """Yield what `items` yields, produced on a thread up to `depth` items ahead.

    An exception in `items` is raised here, at the point the consumer reaches it. When the
    consumer stops early (break, exception, close), the producer stops too and `items` is closed on
    its own thread before this generator returns, so files it holds open are closed by then.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    # Set by the producer as its very last step, after `items` is closed. Waited on rather than
    # Thread.join, which a second Ctrl-C interrupts, after which is_alive() reports a thread that
    # is still decoding as stopped (CPython 3.11).
    finished = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_End())
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_End(error))
        finally:
            try:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
            finally:
                finished.set()

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            entry = handoff.get()
            if isinstance(entry, _End):
                if entry.error is not None:
                    raise entry.error
                return
            yield entry
    finally:
        stop.set()
        _wait_uninterrupted(finished)
        # Only returning is left to it now.
        producer.join()


def _wait_uninterrupted(event: threading.Event) -> None:
    """Wait for `event` even through Ctrl-C; an interrupt that came meanwhile is raised after.

    The caller goes on to close what the producer is using (a decoder, its file), which must not
    happen while the producer still runs.
    """
    interrupt: BaseException | None = None
    while True:
        try:
            event.wait()
            break
        except BaseException as error:  # noqa: BLE001 - re-raised below, once it is safe
            interrupt = error
    if interrupt is not None:
        raise interrupt
