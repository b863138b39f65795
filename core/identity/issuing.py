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
from ..i18n import _
from ..model import TagRead
from ..pluginhost import PluginHost
from ..status import DeviceStatus
from ..texts import translated
from .standalone import build


class ReadError(Exception):
    """No card could be read: unknown reader, a reader that cannot start, or nothing read in time."""


def read_card(profile: Profile, host: PluginHost, reader_id: str, wait: float) -> TagRead:
    """The first read of any card by reader ``reader_id`` within ``wait`` seconds."""
    cfg = next((r for r in profile.readers if r.id == reader_id), None)
    if cfg is None:
        ids = _(", ").join(r.id for r in profile.readers) or _("none")
        raise ReadError(
            _("no reader has id {reader_id} (reader ids: {ids})").format(reader_id=repr(reader_id), ids=ids)
        )
    clock = Clock()
    try:
        reader = build(host, profile, cfg, clock)
    except Exception as exc:
        raise ReadError(
            _("reader {reader} ({type}) cannot start: {error}").format(
                reader=cfg.id, type=cfg.type, error=describe(exc)
            )
        ) from None
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
                raise ReadError(
                    _("reader {reader} stopped without reading a card ({reason})").format(
                        reader=cfg.id, reason=translated(status.reason)
                    )
                )
            if time.monotonic() >= deadline:
                if status.reason:
                    raise ReadError(
                        _(
                            "no card was read by reader {reader} within {seconds} s"
                            " (reader {state}: {reason})"
                        ).format(
                            reader=cfg.id,
                            seconds=f"{wait:g}",
                            state=status.state.label,
                            reason=translated(status.reason),
                        )
                    )
                raise ReadError(
                    _("no card was read by reader {reader} within {seconds} s").format(
                        reader=cfg.id, seconds=f"{wait:g}"
                    )
                )
    finally:
        runner.stop()
        runner.thread.join(2.0)
        runner.close()
