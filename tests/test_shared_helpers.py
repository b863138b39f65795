"""The helpers the core keeps one of: percentile, backoff, describe, device states."""

from __future__ import annotations

import sqlite3

import pytest

from vipsense.api import Backoff, DeviceState, ReaderState, describe
from vipsense.backoff import doubled
from vipsense.cli.common import describe as describe_for_people
from vipsense.stats import percentile
from vipsense.status import DeviceStatus


def test_percentile_is_nearest_rank():
    assert percentile([3.0, 1.0, 2.0, 4.0], 0.5) == 2.0  # the 2nd of 4, never a mean of two
    assert percentile(range(1, 101), 0.99) == 99
    assert percentile(range(1, 101), 1.0) == 100
    assert percentile([7.0], 0.01) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_backoff_doubles_to_its_cap_and_starts_over():
    backoff = Backoff(0.1, 1.6)
    assert backoff.delay == 0.0
    assert [backoff.failed() for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 1.6]
    assert backoff.delay == 1.6
    backoff.succeeded()
    assert backoff.failed() == 0.1
    assert [doubled(0.5, 3.0, n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert doubled(0.5, 3.0, 10_000) == 3.0  # no float overflow after a long outage


def test_describe_is_one_line_with_its_type():
    assert describe(OSError("disk full\nmore detail")) == "OSError: disk full"
    assert describe(ValueError()) == "ValueError"
    assert describe(ValueError("bad value"), typed=False) == "bad value"
    assert describe_for_people(ValueError("bad value")) == "bad value"
    assert describe_for_people(sqlite3.OperationalError("database is locked")) == (
        "OperationalError: database is locked"
    )


def test_one_device_state_for_readers_stores_and_notifiers():
    assert ReaderState is DeviceState
    status = DeviceStatus("store", "sqlite")
    assert status.state is DeviceState.STARTING
    assert status.set("ready") and status.state is DeviceState.READY  # a word is taken as its state
    assert not status.set(DeviceState.READY)
    assert status.snapshot()["state"] == "ready" and f"{status.state}" == "ready"
    assert {DeviceState.READY: "ok"}.get("ready") == "ok"  # a snapshot's word finds its state
