"""The auditor's /audit page verifies the chain as it grows, not from the start on every view
(pentest point 7): against a real running branch and its web, over the Flask test client, and the
incremental check itself against real SQLite files."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

import pytest

from vipsense.storage.audit import AuditAction, AuditLog, AuditRecord, ChainCheck

from .conftest import wait_for


def chain_line(html: str) -> dict[str, str]:
    """The attributes of the page's ``#chain`` paragraph, and its text."""
    m = re.search(r'<p id="chain"([^>]*)>(.*?)</p>', html, re.S)
    assert m, html[:2000]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1)))
    return attrs | {"text": " ".join(m.group(2).split())}


def records(n: int, start: int = 0) -> list[AuditRecord]:
    return [
        AuditRecord("clerk", "card_issuer", "web-branch", AuditAction.LOOKUP, f"C{i}", "test", "success")
        for i in range(start, start + n)
    ]


@pytest.mark.slow
def test_the_page_checks_only_what_was_added_since_the_last_view(web_branch):
    """ATTACK (pentest point 7): every view of /audit walked the whole chain again (seconds at a million
    entries, under the writers' lock).  Now a view reads only the entries added since the last one."""
    web = web_branch()
    web.branch.audit.append_many(records(3000))
    auditor = web.client("auditor1")
    assert wait_for(lambda: chain_line(auditor.get("/audit").text)["data-ok"] == "true", timeout=30)
    first = chain_line(auditor.get("/audit").text)
    total = int(first["data-checked"])
    assert total > 3000 and first["text"].startswith(f"Chain verified: all {total} entries are intact.")
    web.branch.audit.append_many(records(7, start=3000))
    again = chain_line(auditor.get("/audit").text)
    assert again["data-ok"] == "true" and int(again["data-checked"]) == total + 8  # 7, and that view
    assert int(again["data-walked"]) == 8, again  # not the whole chain again
    assert "(8 just now)" in again["text"]


@pytest.mark.slow
def test_the_entry_verified_last_is_checked_again_at_each_view(web_branch):
    """An edit of the newest verified entry, even with its hash left alone, shows at the next view."""
    web = web_branch()
    auditor = web.client("auditor1")
    assert wait_for(lambda: chain_line(auditor.get("/audit").text)["data-ok"] == "true", timeout=30)
    newest = list(web.branch.audit.entries())[-1]
    with closing(sqlite3.connect(web.branch.audit.path, isolation_level=None)) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET reason = 'nothing to see' WHERE seq = ?", (newest.seq,))
    page = auditor.get("/audit").text
    line = chain_line(page)
    assert (
        line["data-ok"] == "false"
        and f"entry {newest.seq} changed or vanished after it was verified" in line["text"]
    )


@pytest.mark.slow
def test_a_long_first_walk_shows_its_progress_then_the_result(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite3", synchronous="OFF")
    for start in range(0, 40_000, 10_000):
        log.append_many(records(10_000, start))
    check = ChainCheck(log.path, log.keys)
    state = check.look(0.0)
    assert not state.done and state.entries in (0, 40_000) and state.checking < 40_000
    state = check.look(60.0)
    assert state.done and state.result.ok and state.result.checked == 40_000 == state.walked
    log.close()


def test_older_entries_are_walked_again_in_full_on_schedule(tmp_path):
    """Honest limit: between full walks, an edit deep in the chain (hash left alone) is not seen by the
    incremental check; the next full walk (hourly on the page, and every ``vipsense audit verify``)
    names it."""
    log = AuditLog(tmp_path / "audit.sqlite3")
    log.append_many(records(50))
    check = ChainCheck(log.path, log.keys, full_every=3600.0)
    assert check.look(30.0).result.ok
    with closing(sqlite3.connect(log.path, isolation_level=None)) as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 5")
    log.append_many(records(2, 50))
    state = check.look(30.0)
    assert state.result.ok and state.walked == 2  # incremental: entry 5 not read again
    check.full_every = 0.0
    state = check.look(30.0)
    assert (state.result.ok, state.result.first_broken, state.walked) == (False, 5, 4)
    assert not log.verify().ok
    log.close()
