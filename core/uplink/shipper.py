"""The shipper: a thread that sends the branch's change feeds and a heartbeat to the centre.

Every ``interval`` (at once again while a backlog remains, oldest first) it reads the visits and
deliveries changed after its cursor through connections of its own (read-only, so the pipeline's
writes never wait for it), signs one batch (wire format 1, docs/centre.md) and sends it through the
uplink.  The cursor is the centre's answer: the last position the centre holds per stream, kept in
``centre-cursor.json`` in the data directory (written atomically), so a restart resumes where the
centre is.  Delivery is at least once (a batch whose answer was lost is sent again) and the centre
applies each row idempotently, so each change counts once in effect.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .. import __version__, signing
from ..api import UplinkUnavailable
from ..backoff import Backoff
from ..i18n import _
from ..storage import changefeed, outbox, visitlog
from .settings import CentreLink

log = logging.getLogger(__name__)

FORMAT = 1
BRANCH_HEADER = "X-Vipsense-Branch"
CURSOR_FILE = "centre-cursor.json"
STREAMS = ("visits", "deliveries")
#: bytes of one request at most: under the centre's 4 MiB (``vipsense.centre.ingest.MAX_BODY``), with
#: room for the headers; rows are counted by ``batch:``, but a row of long texts weighs more
MAX_BODY = 3_500_000
#: seconds between back-to-back batches of a backlog at least: the door's writer goes first
BETWEEN_BATCHES = 0.02
#: while a backlog drains, the pause after a batch is this times what the batch took (reading,
#: encoding, sending, the answer): 1.0 keeps the shipper busy half the time at most, so the door's
#: threads find the interpreter and the cores free (issue 14 part 7: the door's p99 while 100,000
#: visits drain; the backlog of 20,000 still goes in well under 30 s)
DUTY_PAUSE = 1.0
#: the same while the door is reading (a read since the last batch): 4.0 keeps the shipper busy a
#: fifth of the time at most.  The door's p99 while 100,000 visits drained was 2.7 times its own at
#: 1.0, 1.5 times at 4.0 (bench/centre.py's door phase); a backlog then drains at some 900 visits a
#: second instead of 2,400, and at full speed once the lobby is quiet
DUTY_BUSY = 4.0
ENCODE_CHUNK = 100  #: rows encoded in one go: a batch's JSON never holds the interpreter lock for long
RETRY_FIRST = 1.0  #: seconds before the first retry after the centre could not be reached
RETRY_CAP = 60.0  #: the longest wait between retries
REFUSED_RETRY = (
    60.0  #: seconds between retries after a refusal (a key fixed in the secrets file needs a restart)
)

#: ``heartbeat()`` gives the heartbeat's devices and audit head; the shipper adds backlog and version
Heartbeat = Callable[[], dict[str, Any]]


class Cursor:
    """The centre's position per stream, on disk: ``{"position": {...}, "answer": {...}, "at": t}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.position = dict.fromkeys(STREAMS, 0)
        try:
            saved = json.loads(path.read_text("utf-8"))
            self.position.update({k: int(saved["position"][k]) for k in STREAMS})
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as exc:  # unreadable: the centre's 409 corrects it
            log.warning("uplink: ignoring an unreadable cursor %s (%s); starting from 0", path, exc)

    def save(self, position: dict[str, int], answer: Any) -> None:
        """Write the new position atomically: a crash leaves the old file or the new one."""
        self.position = {k: int(position[k]) for k in STREAMS}
        partial = self.path.with_name(self.path.name + ".partial")
        data = json.dumps({"position": self.position, "answer": answer, "at": time.time()})
        with open(partial, "w", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, self.path)


class Shipper:
    """Ships the branch's visits, deliveries and heartbeat to the centre; see the module's text.

    ``state`` is what the branch's status shows (:meth:`snapshot`)."""

    def __init__(
        self,
        link: CentreLink,
        transport: Any,
        branch_id: str,
        data_dir: Path,
        heartbeat: Heartbeat,
        visits_path: Path | None = None,
        outbox_path: Path | None = None,
        tz: ZoneInfo | None = None,
        wall: Callable[[], float] = time.time,
        door_reads: Callable[[], int] | None = None,
    ) -> None:
        self.link = link
        #: the door's reads so far (the branch's status counter): while it grows, a backlog drains
        #: at :data:`DUTY_BUSY`
        self.door_reads = door_reads
        self._reads_seen: int | None = None
        #: the branch's wall clock, for ``sent_at``, the signature's time and the heartbeat's ``at``:
        #: the branch sets its own :class:`~vipsense.clock.Clock` here, so a batch carries the time its
        #: visits were recorded by.  It stands for the OS clock, which a test cannot step (a branch
        #: whose clock is fast is tested through it, tests/test_centre_faults.py).
        self.wall = wall
        self.transport = transport
        self.branch_id = branch_id
        assert link.key is not None, "build_shipper refuses a link without a key"
        self.key = link.key.reveal().encode("utf-8")
        self.heartbeat = heartbeat
        self.tz = tz  #: the branch's time zone: times in the status text are on its clock
        self.visits_path = visits_path or data_dir / "visits.sqlite3"
        self.outbox_path = outbox_path or data_dir / "outbox.sqlite3"
        self.cursor = Cursor(data_dir / CURSOR_FILE)
        self.interval = float(link.interval)
        self.batch = link.batch
        self._dbs: dict[str, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._backoff = Backoff(RETRY_FIRST, RETRY_CAP)
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self.state: dict[str, Any] = {
            "state": "starting",
            "url": link.url,
            "since": None,
            "reason": "",
            "error": "",
            "position": dict(self.cursor.position),
            "backlog": None,
            "last_ok_at": None,
            "sent": dict.fromkeys(STREAMS, 0),
        }

    # -- the feeds --------------------------------------------------------------------------------

    def _db(self, stream: str) -> sqlite3.Connection:
        db = self._dbs.get(stream)
        if db is None:
            db = changefeed.open_reader(self.visits_path if stream == "visits" else self.outbox_path)
            self._dbs[stream] = db
        return db

    def _changes(self, stream: str, after: int) -> list[dict[str, Any]]:
        db = self._db(stream)
        if stream == "visits":
            return visitlog.changes(db, after, self.batch)
        return outbox.changes(db, after, self.batch)

    def backlog(self, after: dict[str, int] | None = None) -> dict[str, int]:
        """Rows past ``after`` (default: what the centre has not acknowledged yet), per stream, one
        indexed count each."""
        after = after or self.cursor.position
        out = {}
        for stream in STREAMS:
            table = "visits" if stream == "visits" else "outbox"
            row = self._db(stream).execute(
                f"SELECT COUNT(*) FROM {table} WHERE change_seq > ?", (after[stream],)
            )
            out[stream] = int(row.fetchone()[0])
        return out

    # -- one request -------------------------------------------------------------------------------

    def build(self) -> tuple[dict[str, Any], bool]:
        """The next batch, and whether a full batch was read (more may be waiting)."""
        streams: dict[str, Any] = {}
        full = False
        for stream in STREAMS:
            after = self.cursor.position[stream]
            rows = self._changes(stream, after)
            full = full or len(rows) >= self.batch
            streams[stream] = {"after": after, "upto": rows[-1]["seq"] if rows else after, "rows": rows}
        try:
            beat = dict(self.heartbeat())
        except Exception as exc:  # a status bug must not stop the reports
            log.error("uplink: cannot build the heartbeat: %s", exc)
            beat = {"devices": [], "audit_head": None}
        beat["at"] = self.wall()
        # what will be left once this batch is applied, so the board is not one report behind
        beat["backlog"] = self.backlog({stream: streams[stream]["upto"] for stream in STREAMS})
        beat["version"] = __version__
        batch = {
            "format": FORMAT,
            "branch_id": self.branch_id,
            "sent_at": self.wall(),
            "streams": streams,
            "heartbeat": beat,
        }
        return batch, full

    def ship_once(self) -> str:
        """Send one batch and act on the answer.  Returns ``more`` (send again at once), ``ok``,
        ``rewound`` (409: the cursor moved to the centre's position), ``unreachable`` or
        ``refused``."""
        try:
            batch, full = self.build()
        except sqlite3.Error as exc:  # a file not made yet, or locked: next round
            log.warning("uplink: cannot read the change feed: %s", exc)
            return "ok"
        body = encode(batch)
        while len(body) > MAX_BODY and _halve(batch):  # long texts: fewer rows, the rest next time
            after = {stream: batch["streams"][stream]["upto"] for stream in STREAMS}
            batch["heartbeat"]["backlog"] = self.backlog(after)
            body = encode(batch)
            full = True
        headers = {**signing.signed_headers(self.key, body, now=self.wall()), BRANCH_HEADER: self.branch_id}
        try:
            status, answer_body = self.transport.send(body, headers)
        except UplinkUnavailable as exc:
            return self._unreachable(str(exc))
        except Exception as exc:  # a transport plugin's own failure counts as unreachable
            return self._unreachable(f"{type(exc).__name__}: {exc}")
        answer = _json(answer_body)
        if status == 200 and _position(answer) is not None:
            position = _position(answer)
            assert position is not None
            self._ok(position, answer, batch)
            if self._behind_the_centre(position):
                return "rewound"
            return "more" if full else "ok"
        if status == 409 and _position(answer) is not None:
            position = _position(answer)
            assert position is not None
            log.warning(
                "uplink: the centre holds %s, not %s: resending from there", position, self.cursor.position
            )
            self.cursor.save(position, answer)
            self.state["position"] = dict(position)
            return "rewound"
        error = answer.get("error") if isinstance(answer, dict) else None
        if status in (400, 401, 403, 413):
            return self._refused(status, str(error or answer_body[:200].decode("utf-8", "replace")))
        return self._unreachable(f"HTTP {status}: {error or answer_body[:200].decode('utf-8', 'replace')}")

    def _ok(self, position: dict[str, int], answer: Any, batch: dict[str, Any]) -> None:
        self.cursor.save(position, answer)
        self._backoff.succeeded()
        with self._lock:
            if self.state["state"] != "ok" and self.state["state"] != "starting":
                log.warning("uplink: the centre at %s answers again", self.link.url)
            for stream in STREAMS:
                self.state["sent"][stream] += len(batch["streams"][stream]["rows"])
            # what is left after this batch, counted as it was built (not again while draining)
            self.state["backlog"] = dict(batch["heartbeat"]["backlog"])
            self.state.update(
                state="ok",
                since=None,
                reason="",
                error="",
                position=dict(position),
                last_ok_at=time.time(),
            )

    def _behind_the_centre(self, position: dict[str, int]) -> bool:
        """The centre holds more of a stream than this branch's file ever numbered: the file was
        replaced or restored from a copy.  Its rows are renumbered past the centre's position and go
        again (the centre applies each once, by key), rather than new rows being taken for ones the
        centre holds and never sent."""
        moved = False
        for stream, feed, path in (
            ("visits", visitlog.FEED, self.visits_path),
            ("deliveries", outbox.FEED, self.outbox_path),
        ):
            newest = feed.last(self._db(stream))
            if position[stream] <= newest:
                continue
            renumbered = feed.move_past(path, position[stream])
            log.warning(
                "uplink: the centre holds %s %d but this branch's feed ends at %d (its file was replaced or"
                " restored): %d rows renumbered past %d, sent again",
                stream, position[stream], newest, renumbered, position[stream],
            )  # fmt: skip
            moved = True
        return moved

    def _unreachable(self, reason: str) -> str:
        with self._lock:
            if self.state["state"] != "unreachable":
                log.error("uplink: the centre cannot be reached: %s (retrying; nothing is lost)", reason)
                self.state.update(state="unreachable", since=time.time())
            self.state.update(reason=reason, error="")
        return "unreachable"

    def _refused(self, status: int, error: str) -> str:
        with self._lock:
            if self.state["state"] != "refused" or self.state["error"] != error:
                log.error("uplink: the centre refused the branch's report (HTTP %d): %s", status, error)
            if self.state["state"] != "refused":
                self.state["since"] = time.time()
            self.state.update(state="refused", error=error, reason=f"HTTP {status}")
        return "refused"

    # -- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        """Ship, wait, ship again; after :meth:`stop` one last round, then out.  A backlog drains
        at a duty cycle (:data:`DUTY_PAUSE`): the door comes first, the backlog goes in the gaps."""
        while True:
            began = time.monotonic()
            try:
                outcome = self.ship_once()
            except Exception as exc:  # never let the thread die: the next round tries again
                log.exception("uplink: unexpected failure: %s", exc)
                outcome = "unreachable"
            if outcome != "more":  # while draining, the next batch's heartbeat counts it again
                with contextlib.suppress(Exception):
                    self.state["backlog"] = self.backlog()
            took = time.monotonic() - began
            if self._stop.is_set():
                return
            if outcome in ("more", "rewound"):
                wait = max(BETWEEN_BATCHES, took * (DUTY_BUSY if self.door_busy() else DUTY_PAUSE))
            elif outcome == "unreachable":
                wait = self._backoff.failed()
            elif outcome == "refused":
                wait = REFUSED_RETRY
            else:
                wait = self.interval
            self._wake.wait(wait)
            self._wake.clear()

    def door_busy(self) -> bool:
        """Has the door read since the last time this was asked?"""
        if self.door_reads is None:
            return False
        try:
            reads = int(self.door_reads())
        except Exception:  # a status bug must not stop the reports
            return False
        busy = self._reads_seen is not None and reads != self._reads_seen
        self._reads_seen = reads
        return busy

    def wake(self) -> None:
        """Send now rather than at the next interval (tests, a last flush)."""
        self._wake.set()

    def stop(self, timeout: float) -> None:
        """One last attempt to ship what is left (bounded by ``timeout``), then close."""
        self._stop.set()
        self._wake.set()
        if self._thread.ident is not None:  # started
            self._thread.join(max(0.0, timeout))
        if self._thread.is_alive():
            log.warning(
                "uplink: the last report did not finish in %.1f s; it is resent at the next start", timeout
            )
            return  # the thread still uses the connections; it is a daemon and dies with the process
        with contextlib.suppress(Exception):
            self.transport.close()
        for db in self._dbs.values():
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._dbs.clear()

    def snapshot(self) -> dict[str, Any]:
        """The ``centre`` entry of the branch status."""
        with self._lock:
            state = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.state.items()}
        state["text"] = centre_line(state, self._time_of_day)
        return state

    def _time_of_day(self, at: float) -> str:
        """``10:04:05`` on the branch's clock."""
        return dt.datetime.fromtimestamp(at, self.tz).strftime("%H:%M:%S")


def centre_line(state: dict[str, Any], time_of_day: Callable[[float], str] | None = None) -> str:
    """The centre link in one line, in the language in force: ``unreachable since 10:04:05 —
    connection refused``."""
    show = time_of_day or (lambda t: time.strftime("%H:%M:%S", time.localtime(t)))
    word = state.get("state")
    if word == "ok":
        backlog = sum((state.get("backlog") or {}).values())
        if backlog:
            return _("reporting; {n} changes still to send").format(n=backlog)
        return _("reporting")
    if word == "unreachable":
        return _("unreachable since {since} — {reason}").format(
            since=show(state.get("since") or time.time()), reason=state.get("reason", "")
        )
    if word == "refused":
        return _(
            "refused since {since}: {error} (fix the branch key in the secrets file and restart)"
        ).format(since=show(state.get("since") or time.time()), error=state.get("error", ""))
    if word == "failed":
        return _("not reporting: {error}").format(error=state.get("error", ""))
    return _("starting")


def _halve(batch: dict[str, Any]) -> bool:
    """Keep the first half of each stream's rows (at least one), ``upto`` following; False when no
    stream has more than one row left to cut."""
    cut = False
    for stream in batch["streams"].values():
        rows = stream["rows"]
        if len(rows) > 1:
            del rows[(len(rows) + 1) // 2 :]
            stream["upto"] = rows[-1]["seq"]
            cut = True
    return cut


def encode(batch: dict[str, Any]) -> bytes:
    """The batch as compact JSON, the rows encoded :data:`ENCODE_CHUNK` at a time: one
    ``json.dumps`` of 1,000 rows holds the interpreter lock about 3 ms at once, which the door's
    threads would wait out; between chunks they get their turn.  The same JSON as one dumps."""

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)

    streams = []
    for name, stream in batch["streams"].items():
        rows = stream["rows"]
        chunks = [dumps(rows[i : i + ENCODE_CHUNK])[1:-1] for i in range(0, len(rows), ENCODE_CHUNK)]
        head = dumps({"after": stream["after"], "upto": stream["upto"]})[:-1]
        streams.append(f'{dumps(name)}:{head},"rows":[{",".join(chunks)}]}}')
    rest = {k: v for k, v in batch.items() if k != "streams"}
    text = dumps(rest)[:-1] + (',"streams":{' + ",".join(streams) + "}}")
    return text.encode("utf-8")


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _position(answer: Any) -> dict[str, int] | None:
    """The centre's ``position`` from an answer, or None when it has none."""
    if not isinstance(answer, dict) or not isinstance(answer.get("position"), dict):
        return None
    try:
        return {k: int(answer["position"][k]) for k in STREAMS}
    except (KeyError, TypeError, ValueError):
        return None


__all__ = ["BRANCH_HEADER", "CURSOR_FILE", "FORMAT", "Cursor", "Shipper", "centre_line"]
