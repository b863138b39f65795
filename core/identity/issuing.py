"""The card-issuing station: read the one card lying on the desk reader, so the issuer never types an
EPC (or a TID) by hand.

The reader is one of the profile's ``readers:``, built through its plugin exactly as a running branch
builds it, and run by the same :class:`vipsense.devices.ReaderRunner`, so a link that drops while the
issuer waits is retried with the usual backoff.
"""

from __future__ import annotations

import queue
import time

from ..clock import Clock
from ..config.profile import Profile
from ..devices import ReaderRunner
from ..errors import describe
from ..model import TagRead
from ..pluginhost import PluginHost
from ..status import DeviceStatus
from .standalone import build


class ReadError(Exception):
    """No card could be read: unknown reader, a reader that cannot start, or nothing read in time."""


def read_card(profile: Profile, host: PluginHost, reader_id: str, wait: float) -> TagRead:
    """The first read of any card by reader ``reader_id`` within ``wait`` seconds."""
    cfg = next((r for r in profile.readers if r.id == reader_id), None)
    if cfg is None:
        ids = ", ".join(r.id for r in profile.readers) or "none"
        raise ReadError(f"no reader has id {reader_id!r} (reader ids: {ids})")
    clock = Clock()
    try:
        reader = build(host, profile, cfg, clock)
    except Exception as exc:
        raise ReadError(f"reader {cfg.id} ({cfg.type}) cannot start: {describe(exc)}") from None
    reads: queue.Queue[TagRead] = queue.Queue()
    status = DeviceStatus(kind="reader", type=cfg.type)
    runner = ReaderRunner(cfg.id, reader, clock, reads.put, status, lambda reader_id, state: None)
    runner.start()
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                return reads.get(timeout=max(0.0, min(0.05, deadline - time.monotonic())))
            except queue.Empty:
                pass
            if runner.finished and reads.empty():
                raise ReadError(f"reader {cfg.id} stopped without reading a card ({status.reason})")
            if time.monotonic() >= deadline:
                state = f" (reader {status.state}: {status.reason})" if status.reason else ""
                raise ReadError(f"no card was read by reader {cfg.id} within {wait:g} s{state}")
    finally:
        runner.stop()
        runner.thread.join(2.0)
        runner.close()
