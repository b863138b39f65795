"""The centre's live board and each branch's feed: real-time and historical monitoring of any branch.

Routes (all guarded by ``visits.view``: head office and branch managers):

* ``GET /board`` -- every branch the viewer may see: online / late / offline by its last heartbeat,
  its devices, today's arrivals (in the branch's own day) with greeted / rejected / suspect, the last
  arrival (a masked name: a board may hang where customers see it), its clock offset when more than a
  minute off; server-rendered, then kept live by ``static/board.js``;
* ``GET /board/events`` -- Server-Sent Events: the board's rows when they change (looked at every
  :data:`PERIOD` seconds, at once when the ingest calls :func:`changed`), and every
  :data:`KEEPALIVE` seconds regardless (fresh ages of the last heartbeats);
* ``GET /api/board`` -- the same rows as JSON;
* ``GET /branches/<branch_id>?date=YYYY-MM-DD`` -- one branch: its devices and that day's visits,
  newest first, with who was told and when they acknowledged; today's is live over
  ``GET /branches/<branch_id>/events``.

Who sees what: ``head_office`` every branch, ``branch_manager`` only their own (``ctx.branch_of``); a
branch manager asking for another branch gets 403, audited as a denied view.  Opening the board, a
stream or a branch's visits is audited (``view``), once per page or stream, not per update.

A stream holds a request thread, so the branch web's caps apply (``web.streams.per_user`` per
account, ``web.max_streams`` in all: :class:`vipsense.web.live.StreamRefused`), and it ends as soon as
its session does (checked before every look at the database).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, jsonify, render_template, request, stream_with_context

from .. import i18n
from ..centre import queries
from ..centre.database import Database
from ..i18n import _, lazy_gettext
from ..model import Role, tier_label
from ..permissions import Permission
from ..storage.audit import AuditAction, AuditResult
from ..web.auth import Viewer, audit, made_once, refuse, require, still_valid, viewer, web
from ..web.live import RETRY_MS, StreamRefused, sse
from ..web.words import kind_name, state_name

bp = Blueprint("board", __name__, template_folder="templates", static_folder="static",
               static_url_path="/board-static")  # fmt: skip

PERIOD = 2.0  #: seconds between looks at the database for a stream
KEEPALIVE = 15.0  #: seconds between events when nothing changed (the ages shown, proxies' timeouts)
CACHE_FOR = 1.0  #: seconds the board's rows are shared by every stream and page of one scope
BRANCH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

STATE_WORDS = {
    "online": lazy_gettext("online"),
    "late": lazy_gettext("late"),
    "offline": lazy_gettext("offline"),
}
#: a symbol beside each state's colour and word: a colour-blind viewer, a grey-scale screen
STATE_MARKS = {"online": "●", "late": "◐", "offline": "○"}


# -- the context the centre app gives --------------------------------------------------------------


def database() -> Database:
    """The centre's database (``CentreContext.database``)."""
    found: Database = web().database
    return found


def branch_of(username: str) -> str | None:
    """The branch an account belongs to (``CentreContext.branch_of``), None for head office."""
    ctx = web()
    find = getattr(ctx, "branch_of", None)
    return find(username) if find is not None else None


def scope(who: Viewer) -> list[str] | None:
    """The branches ``who`` may see: None for every branch (head office), else a list (a branch
    manager: their own, or none when their account names no branch)."""
    if who.role is Role.HEAD_OFFICE:
        return None
    own = branch_of(who.username)
    return [own] if own else []


def may_see_branch(who: Viewer, branch_id: str) -> bool:
    allowed = scope(who)
    return allowed is None or branch_id in allowed


def me() -> Viewer:
    who = viewer()
    assert who is not None  # the route is guarded
    return who


# -- streams: caps and the change signal ------------------------------------------------------------


class Streams:
    """The open board and feed streams of one app: per-account and total caps, a change signal the
    ingest may raise (:func:`changed`) so a new visit shows at once, and ``close()`` at server stop."""

    def __init__(self, per_user: int, max_total: int) -> None:
        self.per_user = per_user
        self.max_total = max_total
        self.closed = False
        self.generation = 0
        self._open: dict[str, int] = {}
        self._cond = threading.Condition()
        self._cache: dict[tuple[str, ...] | None, tuple[int, float, list[queries.BranchRow]]] = {}
        self._cache_lock = threading.Lock()

    def take(self, user: str) -> None:
        """Count a new stream for ``user``; :class:`StreamRefused` past a cap."""
        with self._cond:
            total = sum(self._open.values())
            if total >= self.max_total:
                raise StreamRefused(
                    503,
                    _(
                        "the centre's web has {n} live streams open, the most it serves;"
                        " try again in a minute"
                    ).format(n=total),
                )
            mine = self._open.get(user, 0)
            if mine >= self.per_user:
                raise StreamRefused(
                    429,
                    _(
                        "{user} has {n} live streams open already, the most for one person;"
                        " close a board tab or window"
                    ).format(user=user, n=mine),
                )
            self._open[user] = mine + 1

    def release(self, user: str) -> None:
        with self._cond:
            left = self._open.get(user, 0) - 1
            if left > 0:
                self._open[user] = left
            else:
                self._open.pop(user, None)

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def rows(
        self, key: tuple[str, ...] | None, fetch: Callable[[], list[queries.BranchRow]]
    ) -> list[queries.BranchRow]:
        """The board's rows for ``key`` (a scope), fetched at most once per :data:`CACHE_FOR` seconds
        and again after every change: a hundred open boards cost the database one query a second."""
        generation = self.generation
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == generation and time.monotonic() - hit[1] < CACHE_FOR:
                return hit[2]
        found = fetch()
        with self._cache_lock:
            if len(self._cache) > 1000:  # one entry per scope: head office, each branch manager
                self._cache.clear()
            self._cache[key] = (generation, time.monotonic(), found)
        return found

    def changed(self) -> None:
        """Something was written (a batch applied): every stream looks now instead of at its tick."""
        with self._cond:
            self.generation += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait up to ``timeout`` for a change after generation ``seen``; the generation now."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != seen or self.closed, timeout)
            return self.generation

    def close(self) -> None:
        """The server stops: every stream ends at its next wake-up, which is now."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def streams() -> Streams:
    """This app's streams (``extensions["board_streams"]``), made on first use."""
    return made_once(
        "board_streams", lambda ctx: Streams(ctx.settings.streams.per_user, ctx.settings.max_streams)
    )


def changed(extensions: dict[str, Any]) -> None:
    """For the ingest: tell the open streams that a batch was applied (nothing if none is open)."""
    found = extensions.get("board_streams")
    if isinstance(found, Streams):
        found.changed()


def ticking(
    name: str,
    compute: Callable[[], dict[str, Any]],
    valid: Callable[[], bool],
    user: str,
    hub: Streams,
    period: float = PERIOD,
    keepalive: float = KEEPALIVE,
) -> Iterator[str]:
    """The body of one SSE response: ``name`` events with ``compute()`` whenever it changed beyond the
    heartbeats' ages (:func:`stable`), and at least every ``keepalive`` seconds (so the ages shown
    stay fresh and a proxy sees traffic), until the session ends, the server stops or the client goes."""
    try:
        yield f": connected\nretry: {RETRY_MS}\n\n"
        last = ""
        sent = time.monotonic()
        seen = hub.generation
        while not hub.closed:
            if not valid():  # logged out, revoked or too old: nothing more goes out
                yield sse("ended", '{"reason":"session"}')
                break
            data = compute()
            signature = json.dumps(stable(data), ensure_ascii=False, sort_keys=True)
            if signature != last or time.monotonic() - sent >= keepalive:
                last = signature
                sent = time.monotonic()
                yield sse(name, json.dumps(data, ensure_ascii=False, separators=(",", ":")))
            seen = hub.wait(seen, period)
    finally:
        hub.release(user)


#: what changes on every look without anything having happened: the time, heartbeats' ages
VOLATILE = frozenset({"at", "heartbeat_age_s", "heartbeat_text", "last_heartbeat_unix"})


def stable(data: Any) -> Any:
    """``data`` without :data:`VOLATILE` keys, at any depth: what a stream compares."""
    if isinstance(data, dict):
        return {k: stable(v) for k, v in data.items() if k not in VOLATILE}
    if isinstance(data, list):
        return [stable(v) for v in data]
    return data


def open_stream(who: Viewer, name: str, compute: Callable[[], dict[str, Any]]) -> Response:
    """An SSE response for ``who``, within the caps; ``compute`` runs in ``who``'s language."""
    hub = streams()
    try:
        hub.take(who.username)
    except StreamRefused as exc:
        response = refuse(exc.status, exc.message)
        response.headers["Retry-After"] = "30"
        return response
    locale = i18n.current()
    valid = still_valid(who)

    def localised() -> dict[str, Any]:
        with i18n.using(locale):
            return compute()

    return Response(
        stream_with_context(ticking(name, localised, valid, who.username, hub)),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# -- what the pages show ---------------------------------------------------------------------------------


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def tier_word(code: str | None) -> str:
    """A tier as people call it (``gold``: 金卡) in the viewer's language; an unknown one as written."""
    return tier_label(code) or "-"


def clock_text(offset: float | None) -> str:
    """``clock 5 min ahead`` / ``behind`` for a clock more than a minute off, else empty."""
    if offset is None or abs(offset) <= queries.CLOCK_FLAG:
        return ""
    minutes = max(1, round(abs(offset) / 60))
    if offset > 0:
        return _("clock {minutes} min ahead").format(minutes=minutes)
    return _("clock {minutes} min behind").format(minutes=minutes)


def age_text(age: float | None) -> str:
    if age is None:
        return _("never reported")
    if age < 90:
        return _("last report {seconds} s ago").format(seconds=max(0, round(age)))
    if age < 5400:
        return _("last report {minutes} min ago").format(minutes=round(age / 60))
    return _("last report {hours} h ago").format(hours=round(age / 3600))


def row_view(row: queries.BranchRow) -> dict[str, Any]:
    """One branch for the page and the stream: the data, and its words in the viewer's language."""
    out = row.as_dict()
    out["state_word"] = str(STATE_WORDS[row.state])
    out["state_mark"] = STATE_MARKS[row.state]
    out["heartbeat_text"] = age_text(row.heartbeat_age_s)
    out["clock_text"] = clock_text(row.clock_offset_s)
    down = [d for d in row.devices if d.state != "ok"]
    if row.devices:
        out["devices_text"] = _("{ok} of {n} devices ok").format(
            ok=len(row.devices) - len(down), n=len(row.devices)
        )
    else:
        out["devices_text"] = _("No device reported yet.")
    out["devices_down_text"] = [f"{d.device_id}: {state_name(d.state)}" for d in down]
    out["revoked_text"] = _("key revoked") if row.revoked else ""
    # the centre's audit anchors contradict the branch's log (vipsense.centre.anchors): the words are
    # the viewer's; the finding itself (English, as audited) is the title
    out["audit_alarm_text"] = _("audit log rewritten?") if row.audit_alarm else ""
    last = row.last_arrival
    if last is not None:
        out["last_arrival_text"] = _("{time} {kind} {tier} {name}").format(
            time=i18n.format_time(last.arrived_unix, queries.zone(row.timezone)),
            kind=kind_name(last.kind),
            tier=tier_word(last.tier),
            name=last.name,
        )
    else:
        out["last_arrival_text"] = _("no arrival today")
    if row.backlog:
        out["backlog_text"] = _("{visits} visits and {deliveries} deliveries not yet sent").format(
            visits=row.backlog.get("visits", 0), deliveries=row.backlog.get("deliveries", 0)
        )
    else:
        out["backlog_text"] = ""
    return out


def board_data(allowed: list[str] | None) -> dict[str, Any]:
    """The board of the branches in ``allowed`` (None: all), in the viewer's language."""
    key = None if allowed is None else tuple(sorted(allowed))
    rows = streams().rows(key, lambda: queries.board(database(), now(), allowed))
    states = {s: sum(1 for r in rows if r.state == s) for s in STATE_WORDS}
    return {
        "at": time.time(),
        "branches": [row_view(r) for r in rows],
        "counts": states,
        "summary": _("{online} online, {late} late, {offline} offline").format(**states),
    }


def visit_view(v: queries.FeedVisit, tz: Any) -> dict[str, Any]:
    out = v.as_dict()
    out["time"] = i18n.format_time(v.arrived_unix, tz)
    out["date"] = i18n.format_date(v.arrived_unix, tz)
    out["kind_word"] = kind_name(v.kind)
    out["tier_word"] = tier_word(v.tier)
    out["acknowledged_time"] = i18n.format_time(v.acknowledged_unix, tz) if v.acknowledged_unix else ""
    out["departed_time"] = i18n.format_time(v.departed_unix, tz) if v.departed_unix else ""
    out["told"] = [
        {
            "recipient_id": d["recipient_id"],
            "state": state_name(d["state"]),
            "acknowledged_time": i18n.format_time(d["acknowledged_unix"], tz)
            if d["acknowledged_unix"]
            else "",
        }
        for d in v.deliveries
    ]
    return out


def branch_data(branch_id: str, day: dt.date | None) -> dict[str, Any] | None:
    """One branch's row and the visits of ``day`` (its own day; None: today), or None if unknown."""
    info = queries.branch_info(database(), branch_id)
    if info is None:
        return None
    tz = queries.zone(info.timezone)
    since, until = queries.day_window(now(), tz, day)
    rows = queries.board(database(), now(), [branch_id])
    visits = queries.branch_feed(database(), branch_id, since, until)
    today = now().astimezone(tz).date()
    return {
        "at": time.time(),
        "branch": row_view(rows[0]) if rows else None,
        "date": (day or today).isoformat(),
        "today": today.isoformat(),
        "visits": [visit_view(v, tz) for v in visits],
        "truncated": len(visits) >= queries.FEED_LIMIT,
    }


def parse_day(value: str | None) -> dt.date | None:
    """None for today (no date), else the date; ValueError when ``value`` is no calendar date."""
    if not value:
        return None
    if not DATE.fullmatch(value):
        raise ValueError(value)
    return dt.date.fromisoformat(value)


def branch_refused(who: Viewer, branch_id: str) -> Response | None:
    """Why ``who`` may not see ``branch_id`` (an answer to send, audited), or None when they may."""
    if not BRANCH_ID.fullmatch(branch_id):
        return refuse(404, _("no such branch"))
    if not may_see_branch(who, branch_id):
        own = branch_of(who.username) or "(none)"
        why = f"denied: {who.username} ({who.role.value}) sees branch {own} only"
        audit(AuditAction.VIEW, f"branch {branch_id}", AuditResult.DENIED, why)
        return refuse(
            403,
            _("{user} may see their own branch only, not {branch}").format(
                user=who.username, branch=branch_id
            ),
        )
    return None


def words_json() -> str:
    """The few words the page's script needs that the rows do not carry, in the viewer's language."""
    return json.dumps(
        {
            "live": _("live"),
            "reconnecting": _("reconnecting …"),
            "ended": _("the session ended: reload the page to log in again"),
            "none": _("no visits"),
            "no_branch": _("No branch to show."),
            "arrivals": _("arrivals today"),
            "greeted": _("greeted"),
            "rejected": _("rejected"),
            "suspect": _("suspect"),
        },
        ensure_ascii=False,
    )


# -- routes ---------------------------------------------------------------------------------------------


@bp.route("/board")
@require(Permission.VISITS_VIEW)
def page() -> Any:
    who = me()
    data = board_data(scope(who))
    audit(
        AuditAction.VIEW,
        "board",
        AuditResult.SUCCESS,
        reason=f"centre board: {len(data['branches'])} branches",
    )
    return render_template("board.html", board=data, words=words_json())


@bp.route("/board/events")
@require(Permission.VISITS_VIEW)
def events() -> Any:
    who = me()
    allowed = scope(who)
    answer = open_stream(who, "board", lambda: board_data(allowed))
    if answer.status_code == 200:
        audit(AuditAction.VIEW, "board live", AuditResult.SUCCESS, reason="centre board stream")
    return answer


@bp.route("/api/board")
@require(Permission.VISITS_VIEW)
def api() -> Any:
    who = me()
    data = board_data(scope(who))
    audit(AuditAction.VIEW, "board", AuditResult.SUCCESS, reason=f"api: {len(data['branches'])} branches")
    return jsonify(data)


@bp.route("/branches/<branch_id>")
@require(Permission.VISITS_VIEW)
def branch(branch_id: str) -> Any:
    who = me()
    refused = branch_refused(who, branch_id)
    if refused is not None:
        return refused
    try:
        day = parse_day(request.args.get("date"))
    except ValueError:
        return refuse(400, _("date must be a calendar date written YYYY-MM-DD, e.g. 2025-06-01"))
    data = branch_data(branch_id, day)
    if data is None:
        return refuse(404, _("no such branch"))
    audit(AuditAction.VIEW, f"branch {branch_id} visits {data['date']}", AuditResult.SUCCESS,
          reason=f"centre branch feed: {len(data['visits'])} visits")  # fmt: skip
    if request.args.get("format") == "json" or request.accept_mimetypes.best == "application/json":
        return jsonify(data)
    return render_template("branch.html", feed=data, branch_id=branch_id, words=words_json())


@bp.route("/branches/<branch_id>/events")
@require(Permission.VISITS_VIEW)
def branch_events(branch_id: str) -> Any:
    who = me()
    refused = branch_refused(who, branch_id)
    if refused is not None:
        return refused
    if queries.branch_info(database(), branch_id) is None:
        return refuse(404, _("no such branch"))

    def compute() -> dict[str, Any]:
        return branch_data(branch_id, None) or {}

    answer = open_stream(who, "feed", compute)
    if answer.status_code == 200:
        audit(
            AuditAction.VIEW,
            f"branch {branch_id} visits live",
            AuditResult.SUCCESS,
            reason="centre branch stream",
        )
    return answer
