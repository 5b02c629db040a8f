"""read_ahead: a decoder thread that runs ahead of curation, stops with it and hands over its errors."""

from __future__ import annotations

import threading
import time
from contextlib import closing

import pytest

from ptta.curate.read_ahead import _wait_uninterrupted, read_ahead


def counting(limit: int, produced: list[int], closed_on: list[str], fail_at: int | None = None):
    try:
        for value in range(limit):
            if value == fail_at:
                raise ValueError(f"broken at {value}")
            produced.append(value)
            yield value
    finally:
        closed_on.append(threading.current_thread().name)


def test_items_arrive_in_order_and_the_source_is_closed_on_its_own_thread():
    produced, closed_on = [], []
    assert list(read_ahead(counting(50, produced, closed_on), depth=4, name="decoder")) == list(range(50))
    assert closed_on == ["decoder"]


def test_the_producer_runs_at_most_depth_items_ahead():
    produced, closed_on = [], []
    with closing(read_ahead(counting(1000, produced, closed_on), depth=3)) as items:
        for consumed, _ in enumerate(items, start=1):
            if consumed == 5:
                time.sleep(0.2)  # time enough for the producer to fill the queue
                # 3 queued, one waiting to be put, plus the five taken.
                assert len(produced) <= consumed + 3 + 1
                break
    assert closed_on and len(produced) < 1000


def test_an_error_in_the_source_is_raised_where_the_consumer_reaches_it():
    produced, closed_on, received = [], [], []
    with pytest.raises(ValueError, match="broken at 7"):
        for value in read_ahead(counting(20, produced, closed_on, fail_at=7), depth=2):
            received.append(value)
    assert received == list(range(7))
    assert len(closed_on) == 1


def test_a_consumer_that_fails_stops_the_producer_before_closing_returns():
    produced, closed_on = [], []
    items = read_ahead(counting(10**6, produced, closed_on), depth=2, name="decoder")
    with pytest.raises(RuntimeError):
        with closing(items):
            for value in items:
                if value == 3:
                    raise RuntimeError("the consumer broke")
    # closing() returned only after the producer closed its source and ended.
    assert closed_on == ["decoder"]
    assert not any(t.name == "decoder" for t in threading.enumerate())
    assert len(produced) < 100


def test_a_ctrl_c_while_waiting_for_the_producer_is_raised_only_once_it_has_finished():
    """A second Ctrl-C during the wait must not let the caller close the decoder under the
    producer: the wait goes on, and the interrupt is raised after it."""

    class InterruptedOnce:
        waits = 0

        def wait(self):
            self.waits += 1
            if self.waits == 1:
                raise KeyboardInterrupt

    event = InterruptedOnce()
    with pytest.raises(KeyboardInterrupt):
        _wait_uninterrupted(event)
    assert event.waits == 2
