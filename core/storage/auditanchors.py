"""Anchors of the audit chain: the chain's head and length, signed, kept where the branch cannot rewrite.

A keyed hash chain (:mod:`vipsense.storage.audit`) stops anyone without the key from editing an entry, but a
shortened log is still a valid chain.  An anchor records, at a moment, how long the chain was and the
hash of its last entry, signed with the audit key; ``vipsense audit verify`` then checks that the log
still holds every anchored entry, unchanged.  ``privacy-security.md`` §3 asks that audit records be
"protected from deletion and overwrite": the anchors are only as safe as the place they are kept, so
a branch writes them to a directory on write-once (WORM) storage, and every anchor is also handed to
the ``vipsense_audit_anchor`` hook, for a head-office uplink to ship to the centre.

One anchor is one line of JSON, appended to ``<anchors dir>/<name>.jsonl``::

    {"at":1717000000.25,"branch":"sh-01","count":5000,"head":"<hash of entry 5000>",
     "key":"<key id>","mac":"<hex>","v":1}

``mac`` is the lowercase hex HMAC-SHA256, under the audit key whose id ``key`` names, of the same JSON
object without ``mac`` (keys sorted, no white space, UTF-8).  ``count`` is the number of entries,
which is the ``seq`` of the entry whose hash ``head`` is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
from pathlib import Path
from typing import Any

import attrs

VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_TAIL = 64 * 1024  #: bytes read from the end of the file to find the last anchor


@attrs.frozen
class AnchorPolicy:
    """Where and how often a log publishes anchors."""

    file: Path  #: the append-only anchor file
    every: int = 1000  #: entries between anchors at most
    interval: float = 600.0  #: seconds between anchors at most, while entries are added


def anchor_file(directory: Path, branch_id: str) -> Path:
    """The anchor file of a branch in a directory that several branches may share."""
    name = branch_id if _SAFE_NAME.match(branch_id) else "branch-" + branch_id.encode().hex()[:80]
    return directory / f"{name}.audit-anchors.jsonl"


@attrs.frozen
class Anchor:
    """One signed anchor: the chain had ``count`` entries, the last one hashing to ``head``."""

    branch: str
    count: int
    head: str
    at: float
    key: str  #: the id of the audit key that signed it (never the key)
    mac: str = ""

    def body(self) -> bytes:
        fields = {"v": VERSION, "branch": self.branch, "count": self.count, "head": self.head}
        fields |= {"at": self.at, "key": self.key}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def signed(self, secret: bytes) -> Anchor:
        return attrs.evolve(self, mac=hmac.digest(secret, self.body(), "sha256").hex())

    def valid(self, secret: bytes) -> bool:
        return hmac.compare_digest(self.mac, hmac.digest(secret, self.body(), "sha256").hex())

    def line(self) -> str:
        fields = json.loads(self.body()) | {"mac": self.mac}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def as_dict(self) -> dict[str, Any]:
        """The anchor as JSON-ready data (what the hook's observers ship)."""
        return json.loads(self.line())


class BadAnchor(ValueError):
    """A line of the anchor file that is not an anchor."""


def parse(line: str) -> Anchor:
    try:
        d = json.loads(line)
        if not isinstance(d, dict) or d.get("v") != VERSION:
            raise BadAnchor("not an anchor of this version")
        anchor = Anchor(str(d["branch"]), int(d["count"]), str(d["head"]), float(d["at"]), str(d["key"]))
        return attrs.evolve(anchor, mac=str(d["mac"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise BadAnchor(str(exc) or type(exc).__name__) from None


def append(file: Path, anchor: Anchor) -> None:
    """Add one line, synced, under an exclusive lock (several processes may anchor one log)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (anchor.line() + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def read(file: Path) -> list[tuple[int, Anchor | BadAnchor]]:
    """Every line of the anchor file, numbered from 1: an anchor, or why it is not one."""
    if not file.exists():
        return []
    out: list[tuple[int, Anchor | BadAnchor]] = []
    with file.open("r", encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                out.append((number, parse(line)))
            except BadAnchor as exc:
                out.append((number, exc))
    return out


def last(file: Path) -> Anchor | None:
    """The newest well-formed anchor, reading only the end of the file."""
    with contextlib.suppress(FileNotFoundError), file.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _TAIL))
        lines = f.read().decode("utf-8", errors="replace").splitlines()
        for line in reversed(lines[1:] if size > _TAIL else lines):
            with contextlib.suppress(BadAnchor):
                return parse(line)
    return None


def key_fingerprint(secret: bytes) -> str:
    """What names a key in anchors and entries without giving it away."""
    return hmac.new(secret, b"vipsense audit key id", hashlib.sha256).hexdigest()[:16]
