"""The status page and ``/api/status``: readers, stores, notifiers, PDAs, plugins, today's counts.

Both views read one cached, filtered view of :meth:`vipsense.status.BranchStatus.snapshot`, rebuilt
every :data:`CACHE_SECONDS` by a thread of its own while anyone reads it, so a status page polled by
every screen in the branch costs the pipeline nothing and no request waits for a rebuild.  Nothing
personal leaves here: device and plugin texts pass :func:`scrub` (keys that look like secrets
dropped, ID and mobile numbers masked, URL passwords and the profile's ``!secret`` values blanked),
and no customer record is ever read.

``GET /api/status`` (``status.view``; 401 without a session or token) answers, for monitoring::

    {
      "ok": true,                      # false when anything below is a problem
      "state": "ok",                   # ok | degraded (something wrong, doors still work) | down
                                       # | finished (a replay reached its end; nothing is wrong)
      "problems": ["reader side disconnected since 14:03:22: LinkLost: ..."],
      "generated_at": 1717000000.0,    # UNIX times everywhere; ``since`` = when the state began
      "branch": {"id": "sh-01", "name": "..."}, "started_at": 1716990000.0,
      "readers": [{"id", "type", "state": "connected|disconnected|starting|failed|finished|stopped",
                   "reason", "since", "reads", "reads_per_s", "last_read_at", "errors", "last_error",
                   "last_error_at", "counters": {}}],
      "stores": [{"id", "type", "state": "ok|degraded|stale|down|starting", "device_state", "reason",
                  "since", "lookups", "errors", "last_error", "last_error_at", "latency_ms_p50",
                  "latency_ms_p99", "start_grace_s"}],
      "notifiers": [{"id", "type", "state", "reason", "since", "pending", "retrying", "delivered",
                     "failed", "expired", "retries", "errors", "last_error", "last_error_at",
                     "latency_ms_p50", "latency_ms_p99", "details": {}}],
      "pdas": [{"notifier", "name", "staff", "role", "state", "address", "port", "first_seen",
                "last_seen"}],
      "plugins": [{"name", "version", "state": "loaded|failed|blocked", "error", "hook_errors": {}}],
      "today": {"date": "2024-05-29", "arrivals", "greeted", "rejected", "suspect", "reentries",
                "unknown", "unresolved", "acknowledged"},
      "pipeline": {"reads", "reads_per_s", "stages": {"presence": {"count", "errors", "last_error",
                   "latency_ms_p50", "latency_ms_p99"}, ...}},
      "sync": {},                      # the replica refresh, when the profile has ``sync:``
      "web": {"type": "cheroot", "state", "reason", "since", "url", "threads"},
      "held": [{"visit_id", "epc", "reader_id", "arrived_at", "present",
                "state": "waiting|unresolved"}],  # cards seen, identity stores not answering (yet)
      "storage": {"state": "ok|degraded", "problem": "disk full at ...: outbox cannot be written; ...",
                  "files": [{"name", "path", "cause", "error", "since", "held"}]},  # files not written
      "centre": {"state": "ok|unreachable|refused|failed|starting", "url", "since", "reason", "error",
                 "position": {"visits", "deliveries"}, "backlog": {"visits", "deliveries"},
                 "last_ok_at", "sent", "text"}  # reporting to the centre, when the profile has centre:
    }

Keys are only ever added to this shape, never renamed or removed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import attrs
from flask import Blueprint, Response, render_template
from flask.blueprints import BlueprintSetupState

from .. import i18n
from ..config.types import Secret
from ..i18n import _
from ..permissions import Permission
from ..privacy import mask_personal_numbers
from ..states import DeviceState
from ..timezone import day_bounds, day_of, local
from ..uplink.shipper import centre_line
from .auth import require, web
from .words import state_name

if TYPE_CHECKING:
    from ..branch import Branch

bp = Blueprint("status", __name__)
log = logging.getLogger(__name__)

CACHE_SECONDS = 0.5  #: how often the status is rebuilt while someone reads it
STALE_AFTER = 3 * CACHE_SECONDS  #: older than this, a request rebuilds it itself
IDLE_AFTER = 30.0  #: the refresher stops after this long without a request
RATE_WINDOW = 1.0  #: reads/s are measured over at least this many seconds
MAX_TEXT = 300  #: longer plugin texts are cut
MAX_ITEMS = 100  #: longer plugin lists are cut
MAX_DEPTH = 4

# -- keeping secrets and personal numbers out --------------------------------------------------------

_SECRET_KEY = re.compile(r"key|passw|secret|token|credential|auth|signature|cookie|session", re.I)
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
_SECRET_PARAM = re.compile(r"(?i)([?&;][^=&\s]*(?:key|pass|secret|token|auth|sig)[^=&\s]*=)[^&\s]*")


def secrets_of(settings: Iterable[Any]) -> frozenset[str]:
    """Every ``!secret``/``!env`` value in the items' settings, to blank wherever a plugin repeats one."""
    found: set[str] = set()

    def walk(value: Any, depth: int) -> None:
        if isinstance(value, Secret):
            if len(value.reveal()) >= 4:
                found.add(value.reveal())
        elif depth < MAX_DEPTH and attrs.has(type(value)):
            for field in attrs.fields(type(value)):
                walk(getattr(value, field.name), depth + 1)
        elif depth < MAX_DEPTH and isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item, depth + 1)
        elif depth < MAX_DEPTH and isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)

    for item in settings:
        walk(item, 0)
    return frozenset(found)


def scrub_text(text: str, secrets: frozenset[str] = frozenset()) -> str:
    for secret in secrets:
        text = text.replace(secret, "******")
    text = _URL_USERINFO.sub(r"\1******@", text)
    text = _SECRET_PARAM.sub(r"\1******", text)
    text = mask_personal_numbers(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def scrub(value: Any, secrets: frozenset[str] = frozenset(), depth: int = 0) -> Any:
    """A plugin's health() made fit to show: JSON types only, secret-looking keys dropped, texts
    scrubbed, depth and length bounded (a plugin may put anything there)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if depth >= MAX_DEPTH:
        return "…"
    if isinstance(value, dict):
        return {
            str(k): scrub(v, secrets, depth + 1)
            for k, v in list(value.items())[:MAX_ITEMS]
            if not _SECRET_KEY.search(str(k))
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [scrub(v, secrets, depth + 1) for v in list(value)[:MAX_ITEMS]]
    return scrub_text(str(value), secrets)


# -- per-reader reads --------------------------------------------------------------------------------


class ReadRate:
    """Each reader's reads per second, from the read counts the core keeps in its status."""

    def __init__(self) -> None:
        self._rate: dict[str, tuple[float, int, float]] = {}  #: id -> (monotonic, reads then, rate)

    def rate(self, reader_id: str, count: int) -> float:
        """Reads per second over the last :data:`RATE_WINDOW` or more."""
        now = time.monotonic()
        then, before, last = self._rate.get(reader_id, (now, count, 0.0))
        if now - then >= RATE_WINDOW:
            last = (count - before) / (now - then)
            then, before = now, count
        self._rate[reader_id] = (then, before, last)
        return round(last, 1)


# -- today's counts ----------------------------------------------------------------------------------

TODAY_KINDS = {"greeted": "greeted", "rejected": "rejected", "suspect": "suspect", "suppressed": "reentries"}
TODAY_KEYS = (
    "arrivals",
    "greeted",
    "rejected",
    "suspect",
    "reentries",
    "unknown",
    "unresolved",
    "acknowledged",
)


class TodayCounts:
    """Today's figures without a query per request: the visit log is counted once per day, then the
    running counters add what came since.

    The first count, at start, takes only visits that arrived before the branch started (this run's
    counters start at zero and hold all the rest), so an arrival recorded while the query runs is
    counted exactly once.  At midnight the counters are read before the new day's visits are counted:
    a visit recorded in between is counted twice rather than lost."""

    def __init__(self, branch: Branch) -> None:
        self.branch = branch
        self._day: dt.date | None = None
        self._base: dict[str, int] = {}
        self._counters_then: dict[str, int] = {}

    def get(self) -> dict[str, Any]:
        day = day_of(self.branch.clock.wall(), self.branch.profile.tz)
        if day != self._day:
            self._rebase(day)
        counters = self.branch.status.counters
        out: dict[str, Any] = {"date": day.isoformat()}
        for key in TODAY_KEYS:
            name = "suppressed" if key == "reentries" else key
            out[key] = self._base.get(key, 0) + counters.get(name, 0) - self._counters_then.get(name, 0)
        return out

    def _rebase(self, day: dt.date) -> None:
        start, end = day_bounds(day, self.branch.profile.tz)
        if self._day is None:  # the first count: what came before this run
            then: dict[str, int] = {}
            end = min(end, self.branch.status.started_at)
        else:
            then = dict(self.branch.status.counters)
        base = dict.fromkeys(TODAY_KEYS, 0)
        try:
            db = sqlite3.connect(f"file:{self.branch.visit_log.path}?mode=ro", uri=True, timeout=1)
        except sqlite3.Error:
            db = None
        if db is not None:
            with contextlib.closing(db), contextlib.suppress(sqlite3.Error):
                rows = db.execute(
                    "SELECT kind, COUNT(*) FROM visits WHERE arrived_at >= ? AND arrived_at < ?"
                    " GROUP BY kind",
                    (start, end),
                ).fetchall()
                for kind, n in rows:
                    base["arrivals"] += n
                    key = TODAY_KINDS.get(kind, kind)
                    if key in base:
                        base[key] += n
                (base["acknowledged"],) = db.execute(
                    "SELECT COUNT(*) FROM visits WHERE acknowledged_at >= ? AND acknowledged_at < ?",
                    (start, end),
                ).fetchone()
        self._day, self._base, self._counters_then = day, base, then


# -- building the view -------------------------------------------------------------------------------

_STATS = ("errors", "last_error", "last_error_at", "latency_ms_p50", "latency_ms_p99")
_NOTIFIER_COUNTS = ("pending", "retrying", "delivered", "failed", "expired", "retries")
_PDA_KEYS = ("name", "staff", "role", "state", "address", "port", "first_seen", "last_seen")
_READER_OK = frozenset({DeviceState.CONNECTED, DeviceState.FINISHED, DeviceState.STOPPED})
#: a store's state in the page's words (``stale``: degraded, answering from a cache)
_STORE_WORD = {
    DeviceState.READY: "ok",
    DeviceState.DEGRADED: "degraded",
    DeviceState.UNAVAILABLE: "down",
    DeviceState.FAILED: "down",
    DeviceState.STUCK: "down",
}


def clock_text(at: float | None, tz: ZoneInfo | None = None) -> str:
    """A time on the branch's clock (``tz``; this machine's without one) for people: ``14:03:22``
    today, ``2026年12月7日 14:03`` (``Dec 7, 2026 14:03``) before."""
    if not at:
        return _("never")
    when = local(at, tz) if tz is not None else dt.datetime.fromtimestamp(at)
    now = dt.datetime.now(tz)
    if when.date() == now.date():
        return when.strftime("%H:%M:%S")
    return i18n.format_datetime(at, tz)


def ago_text(at: float | None, now: float | None = None) -> str:
    """How long ago: ``42 s``, ``3 min``, ``2 h 5 min``, ``3 d``."""
    if not at:
        return ""
    s = max(0, int((now or time.time()) - at))
    if s < 60:
        return _("{n} s").format(n=s)
    if s < 3600:
        return _("{n} min").format(n=s // 60)
    if s < 86400:
        return _("{h} h {m} min").format(h=s // 3600, m=s % 3600 // 60)
    return _("{n} d").format(n=s // 86400)


class StatusView:
    """The filtered status of one branch, cached for :data:`CACHE_SECONDS`."""

    def __init__(self, branch: Branch) -> None:
        self.branch = branch
        profile = branch.profile
        self.secrets = secrets_of(i.settings for i in (*profile.readers, *profile.stores, *profile.notifiers))
        self.rates = ReadRate()
        self.today = TodayCounts(branch)
        self._grace = {cfg.id: float(cfg.start_grace or 0) for cfg in profile.stores}
        self._reads_rate = (time.monotonic(), 0, 0.0)
        self._lock = threading.Lock()
        self._built: tuple[float, dict[str, Any], bytes] | None = None
        self._wanted = 0.0
        self._refresher: threading.Thread | None = None
        self._starting = threading.Lock()

    def current(self) -> tuple[dict[str, Any], bytes]:
        """The status and its JSON encoding.  A refresher thread rebuilds it every
        :data:`CACHE_SECONDS` while someone is looking, so no request pays for building it; a
        request builds it itself only at first, or when the refresher has fallen behind."""
        self._wanted = time.monotonic()
        self._start_refresher()
        built = self._built
        if built is not None and time.monotonic() - built[0] < STALE_AFTER:
            return built[1], built[2]
        if not self._lock.acquire(blocking=built is None):
            return built[1], built[2]  # type: ignore[index]  # another request is rebuilding it
        try:
            built = self._built
            if built is None or time.monotonic() - built[0] >= STALE_AFTER:
                built = self._rebuild()
        finally:
            self._lock.release()
        return built[1], built[2]

    def _rebuild(self) -> tuple[float, dict[str, Any], bytes]:
        data = self.build()
        encoded = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._built = (time.monotonic(), data, encoded)
        return self._built

    def _start_refresher(self) -> None:
        if self._refresher is None or not self._refresher.is_alive():
            with self._starting:
                if self._refresher is None or not self._refresher.is_alive():
                    self._refresher = threading.Thread(target=self._refresh, name="web-status", daemon=True)
                    self._refresher.start()

    def _refresh(self) -> None:
        """Rebuild while the status is being read; end after :data:`IDLE_AFTER` without a reader."""
        while not self.branch.stopping and time.monotonic() - self._wanted < IDLE_AFTER:
            time.sleep(CACHE_SECONDS)
            with self._lock:
                try:
                    self._rebuild()
                except Exception:  # the next request builds it itself and shows the error
                    log.exception("web status: building the status failed")
                    return

    def build(self) -> dict[str, Any]:
        snap = self.branch.status.snapshot()
        devices = snap["devices"]
        by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for item_id, dev in devices.items():
            by_kind.setdefault(dev["kind"], []).append((item_id, dev))
        sync = scrub(snap.get("sync") or {}, self.secrets)
        readers = [self._reader(i, d) for i, d in by_kind.get("reader", [])]
        stores = [self._store(i, d, sync) for i, d in by_kind.get("store", [])]
        notifiers = [self._notifier(i, d) for i, d in by_kind.get("notifier", [])]
        web_dev = dict(by_kind.get("web", [("web", {})])[0][1])
        web_entry = {
            "type": web_dev.get("type", ""),
            "state": web_dev.get("state", "unknown"),
            "reason": self._text(web_dev.get("reason", "")),
            "since": web_dev.get("since"),
            "url": self._text((web_dev.get("details") or {}).get("url", "")),
            "threads": (web_dev.get("details") or {}).get("threads"),
        }
        plugins = [
            {
                "name": name,
                "version": p.get("version", ""),
                "state": p.get("state", ""),
                "error": self._text(p.get("error", "")),
                "hook_errors": scrub(p.get("hook_errors", {}), self.secrets),
            }
            for name, p in sorted(snap["plugins"].items())
        ]
        out: dict[str, Any] = {
            "ok": True,
            "state": "ok",
            "problems": [],
            "generated_at": time.time(),
            "branch": snap["branch"],
            "started_at": snap["started_at"],
            "readers": readers,
            "stores": stores,
            "notifiers": notifiers,
            "pdas": self._pdas(devices),
            "plugins": plugins,
            "today": self.today.get(),
            "pipeline": self._pipeline(snap),
            "sync": sync,
            "web": web_entry,
            "held": [
                {k: h.get(k) for k in ("visit_id", "epc", "reader_id", "arrived_at", "present", "state")}
                for h in snap.get("held", [])
            ],
            "storage": scrub(snap["storage"], self.secrets),
            "centre": scrub(snap.get("centre") or {}, self.secrets),
        }
        with i18n.using(None):  # the cache is everyone's: its words are the branch's (the process's)
            if out["centre"]:
                tz = self.branch.profile.tz
                out["centre"]["text"] = centre_line(out["centre"], lambda t: clock_text(t, tz))
            problems, down = judge(out, self.branch.profile.tz)
        replayed = bool(readers) and all(
            r["state"] in (DeviceState.FINISHED, DeviceState.STOPPED) for r in readers
        )
        state = "down" if down else "degraded" if problems else "finished" if replayed else "ok"
        out.update(ok=not problems, state=state)
        out["problems"] = problems
        return out

    def _text(self, value: Any) -> str:
        return scrub_text(str(value or ""), self.secrets)

    def _common(self, item_id: str, dev: dict[str, Any]) -> dict[str, Any]:
        entry = {
            "id": item_id,
            "type": dev["type"],
            "state": dev["state"],
            "reason": self._text(dev["reason"]),
            "since": dev["since"],
        }
        entry.update({k: dev.get(k) for k in _STATS})
        entry["last_error"] = self._text(entry["last_error"])
        return entry

    def _reader(self, item_id: str, dev: dict[str, Any]) -> dict[str, Any]:
        entry = self._common(item_id, dev)
        entry.update(
            reads=dev.get("reads", 0),
            reads_per_s=self.rates.rate(item_id, dev.get("reads", 0)),
            last_read_at=dev.get("last_read_at"),
            counters=scrub(dev["counters"], self.secrets),
        )
        return entry

    def _store(self, item_id: str, dev: dict[str, Any], sync: dict[str, Any]) -> dict[str, Any]:
        entry = self._common(item_id, dev)
        word = _STORE_WORD.get(dev["state"], dev["state"])
        reason = entry["reason"]
        plan = self.branch.profile.sync
        if word == "degraded" and re.search(r"cache|stale", reason, re.I):
            word = "stale"
        elif word == "ok" and plan is not None and plan.target == item_id and sync.get("state") == "failed":
            word = "stale"
            reason = _("the replica could not be refreshed: {error}").format(error=sync.get("error", ""))
            reason = reason.rstrip(": ")
        entry.update(state=word, device_state=dev["state"], reason=reason, lookups=dev["count"])
        entry["start_grace_s"] = self._grace.get(item_id)
        return entry

    def _notifier(self, item_id: str, dev: dict[str, Any]) -> dict[str, Any]:
        entry = self._common(item_id, dev)
        counters = dev["counters"]
        entry.update({k: counters.get(k, 0) for k in _NOTIFIER_COUNTS})
        entry["details"] = {k: v for k, v in scrub(dev["details"], self.secrets).items() if k != "pdas"}
        return entry

    def _pdas(self, devices: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for item_id, dev in devices.items():
            table = (dev.get("details") or {}).get("pdas")
            if dev["kind"] != "notifier" or not isinstance(table, list):
                continue
            for row in scrub(table, self.secrets):
                if isinstance(row, dict):
                    rows.append({"notifier": item_id} | {k: row.get(k) for k in _PDA_KEYS})
        return rows

    def _pipeline(self, snap: dict[str, Any]) -> dict[str, Any]:
        now, reads = time.monotonic(), snap["counters"]["reads"]
        then, before, rate = self._reads_rate
        if now - then >= RATE_WINDOW:
            rate = (reads - before) / (now - then)
            self._reads_rate = (now, reads, rate)
        stages = {
            name: {
                k: (self._text(s[k]) if k == "last_error" else s[k])
                for k in ("count", "errors", "last_error", "latency_ms_p50", "latency_ms_p99")
            }
            for name, s in snap["stages"].items()
        }
        return {"reads": reads, "reads_per_s": round(rate, 1), "stages": stages}


def judge(status: dict[str, Any], tz: ZoneInfo | None = None) -> tuple[list[str], bool]:
    """What is wrong, in words (in the language in force), and whether the door is down (no reader
    or no store working)."""
    problems = []
    for r in status["readers"]:
        if r["state"] not in _READER_OK:
            problems.append(
                _("reader {id} {state} since {time}: {reason}").format(
                    id=r["id"],
                    state=state_name(r["state"]),
                    time=clock_text(r["since"], tz),
                    reason=r["reason"],
                )
            )
    for s in status["stores"]:
        if s["state"] != "ok":
            problems.append(
                _("store {id} {state}: {reason}").format(
                    id=s["id"], state=state_name(s["state"]), reason=s["reason"]
                )
            )
    for n in status["notifiers"]:
        if n["state"] != DeviceState.READY:
            problems.append(
                _("notifier {id} {state}: {reason}").format(
                    id=n["id"], state=state_name(n["state"]), reason=n["reason"]
                )
            )
    for p in status["plugins"]:
        if p["state"] != "loaded":
            problems.append(
                _("plugin {name} {state}: {error}").format(
                    name=p["name"], state=state_name(p["state"]), error=p["error"]
                )
            )
    unresolved = [h for h in status.get("held", []) if h["state"] == "unresolved"]
    if unresolved:
        problems.append(
            i18n.ngettext(
                "{n} card seen, identity stores not answering: whose it is is not known yet (at {time})",
                "{n} cards seen, identity stores not answering: whose they are is not known yet"
                " (first at {time})",
                len(unresolved),
            ).format(n=len(unresolved), time=clock_text(min(h["arrived_at"] for h in unresolved), tz))
        )
    if status.get("storage", {}).get("state", "ok") != "ok":  # a full disk (vipsense.status.Storage)
        problems.append(status["storage"]["problem"])
    if status.get("centre", {}).get("state") in ("unreachable", "refused", "failed"):  # the doors still work
        problems.append(_("centre: {text}").format(text=status["centre"]["text"]))
    if status["web"]["state"] not in (DeviceState.READY, "unknown"):
        problems.append(
            _("web {state}: {reason}").format(
                state=state_name(status["web"]["state"]), reason=status["web"]["reason"]
            )
        )
    # a replay that reached its end is finished, not down: its page stays up for people to read
    readers_up = any(r["state"] in (DeviceState.CONNECTED, DeviceState.FINISHED) for r in status["readers"])
    stores_up = any(s["state"] in ("ok", "degraded", "stale") for s in status["stores"])
    down = (bool(status["readers"]) and not readers_up) or (bool(status["stores"]) and not stores_up)
    return [p.rstrip(": ") for p in problems], down


# -- the views ---------------------------------------------------------------------------------------


@bp.record_once
def _attach(state: BlueprintSetupState) -> None:
    """Start counting reads per reader as soon as the app exists, not at the first page view."""
    ctx = state.app.extensions["vipsense"]
    ctx.extensions["status"] = StatusView(ctx.branch)


def view() -> StatusView:
    return web().extensions["status"]


@bp.route("/status")
@require(Permission.STATUS_VIEW)
def page() -> Any:
    status, _encoded = view().current()
    tz = view().branch.profile.tz
    return render_template(
        "status.html",
        status=status,
        problems=judge(status, tz)[0],  # in the viewer's language; the cached ones are the branch's
        clock=lambda at: clock_text(at, tz),
        ago=ago_text,
        now=time.time(),
        refresh=5,
    )


@bp.route("/api/status")
@require(Permission.STATUS_VIEW)
def api() -> Any:
    status, encoded = view().current()
    problems = judge(status, view().branch.profile.tz)[0]
    if problems != status["problems"]:  # a viewer who reads another language than the branch's
        encoded = json.dumps(
            status | {"problems": problems}, ensure_ascii=False, separators=(",", ":")
        ).encode("utf-8")
    return Response(encoded, mimetype="application/json")
