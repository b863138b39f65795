"""The heartbeat a branch sends with every report: its devices' states, the PDAs present, the replica
refresh and the head of its audit chain, so the centre's board shows the branch as it is now and the
centre keeps the branch's audit anchors (a rewritten log is caught)."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..pluginhost import Kind
from ..privacy import mask_personal_numbers
from ..status import BranchStatus
from ..storage import changefeed
from ..texts import translated

log = logging.getLogger(__name__)

KINDS = frozenset({Kind.READER.value, Kind.STORE.value, Kind.NOTIFIER.value})


def _reason(text: object) -> str | None:
    """A device's reason as the centre may see it: in words, ID and mobile numbers masked."""
    shown = translated(text) if text else ""
    return mask_personal_numbers(str(shown))[:500] or None


def devices(status: BranchStatus) -> list[dict[str, Any]]:
    """Readers, stores, notifiers, the PDAs a notifier sees present, and the replica refresh."""
    out: list[dict[str, Any]] = []
    for item_id, dev in list(status.devices.items()):
        if dev.kind not in KINDS:
            continue
        out.append({"kind": dev.kind, "id": item_id, "state": dev.state.value, "reason": _reason(dev.reason)})
        details = dev._details() if dev.details is not None else {}
        for pda in details.get("pdas") or ():
            if isinstance(pda, dict) and pda.get("name"):
                out.append(
                    {
                        "kind": "pda",
                        "id": str(pda["name"]),
                        "state": str(pda.get("state", "")),
                        "reason": None,
                    }
                )
    if status.sync:
        out.append(
            {
                "kind": "sync",
                "id": "sync",
                "state": str(status.sync.get("state", "")),
                "reason": _reason(status.sync.get("error")),
            }
        )
    return out


class AuditHead:
    """The newest entry of the branch's audit chain, read through a read-only connection of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def __call__(self) -> dict[str, Any] | None:
        try:
            if self._db is None:
                self._db = changefeed.open_reader(self.path)
            row = self._db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        except sqlite3.Error as exc:
            log.debug("uplink: no audit head: %s", exc)
            return None
        return {"seq": int(row[0]), "hash": str(row[1])} if row else None

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


def heartbeat(
    status: BranchStatus, audit_head: Callable[[], dict[str, Any] | None]
) -> Callable[[], dict[str, Any]]:
    """What the shipper calls before each request (it adds the backlog and the version)."""

    def beat() -> dict[str, Any]:
        return {"at": time.time(), "devices": devices(status), "audit_head": audit_head()}

    return beat


__all__ = ["AuditHead", "devices", "heartbeat"]
