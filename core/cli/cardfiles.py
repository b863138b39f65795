"""``vipsense cards import`` and ``cards export``: cards in and out as CSV files.

An import checks each row as ``cards issue`` would (a known customer who consented, an allowed
status change, never a card moved to another customer), keeps what the file leaves out, writes only
what changes, and names each rejected row by line.  An export is a file only its owner may read,
complete or not there at all, and it imports back unchanged.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ..api import Card, CardEvent, CardRegistry, CardStatus
from ..i18n import _, format_number, ngettext
from ..identity.lifecycle import TransitionError, check_change
from ..identity.records import (
    CARD_COLUMNS,
    CsvTable,
    FieldError,
    ImportResult,
    check_validity,
    estimate_csv_rows,
    parse_status,
)
from ..model import CardAction
from ..permissions import Permission
from ..progress import ProgressBar
from ..storage.audit import AuditAction
from .common import (
    EXIT_OK,
    PROGRESS_EVERY,
    CliError,
    Session,
    audit_summary,
    batches,
    checked,
    now,
    report_import,
)


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    with Session(args) as s, s.act(Permission.CARD_IMPORT, AuditAction.IMPORT, path.name, args.reason) as act:
        registry = s.store(args.store)
        result = _import_cards(s, registry, path, args.reason)
        act.object = f"{path.name}: {audit_summary(result, 'cards')}"
    return report_import(result, "cards")


def _import_cards(s: Session, registry: CardRegistry, path: Path, reason: str) -> ImportResult:
    """Cards from a CSV file through ``upsert_cards``: each row checked like ``cards issue`` would
    (a known customer, consent, an allowed status change), the columns the file lacks kept."""
    total = estimate_csv_rows(path)
    bar = ProgressBar(sys.stderr, unit=_("cards"))
    event = CardEvent("", CardAction.ISSUED, now(), s.actor, reason, detail=f"imported from {path.name}")
    try:
        with CsvTable(path, kind="cards") as file:

            def changed() -> Iterator[Card]:
                """The good rows that change something; the unchanged are only counted."""
                for line, values in file.rows():
                    if file.result.rows % PROGRESS_EVERY == 0:
                        bar(file.result.rows, max(total, file.result.rows))
                    try:
                        card = _import_row(s, registry, dict(zip(file.columns, values, strict=True)))
                    except FieldError as exc:
                        file.result.reject(line, str(exc))
                        continue
                    if card is None:
                        file.result.unchanged += 1
                    else:
                        yield card

            for batch in batches(changed()):
                file.result.upserted += registry.upsert_cards(batch, event)
        bar(file.result.rows, file.result.rows)
    finally:
        bar.close()
    return file.result


def _import_row(s: Session, registry: CardRegistry, values: dict[str, Any]) -> Card | None:
    """The card a row makes, None when it is stored like that already, or :class:`FieldError`."""
    customer = registry.find_customer(values["customer_no"])
    if customer is None:
        raise FieldError(_("customer_no: unknown customer {customer}").format(customer=values["customer_no"]))
    if s.profile.privacy.consent_required and not customer.consent:
        raise FieldError(
            _("customer_no: customer {customer} has not consented to recognition").format(
                customer=customer.customer_no
            )
        )
    if "status" in values:
        values["status"] = CardStatus(values["status"])
    stored = registry.find_card(values["epc"])
    if stored is None:
        return Card(**values)
    if stored.customer_no != customer.customer_no:
        raise FieldError(
            _(
                "customer_no: card {epc} belongs to customer {customer}; a card is never moved to another"
                " customer (revoke it and issue a new one)"
            ).format(epc=stored.epc, customer=stored.customer_no)
        )
    if "status" in values:
        try:
            check_change(stored, values["status"])
        except TransitionError as exc:
            raise FieldError(_("status: {error}").format(error=exc)) from None
    card = attrs.evolve(stored, **values)
    check_validity(card.valid_from, card.valid_until)
    return None if card == stored else card


def cmd_export(args: argparse.Namespace) -> int:
    path = Path(args.file)
    status = checked(parse_status, args.status) if args.status else None
    with Session(args) as s, s.act(Permission.CARD_EXPORT, AuditAction.EXPORT, path.name, args.reason) as act:
        if path.exists():
            raise CliError(_("{path} already exists; export to a new file").format(path=path))
        registry = s.store(args.store)
        filtered = args.customer is not None or status is not None
        cards = registry.list_cards(args.customer, status) if filtered else registry.iter_cards()
        n = _write_cards(path, cards)
        act.object = f"{path.name}: {n} cards"
    message = ngettext("exported {n} card to {path}", "exported {n} cards to {path}", n)
    print(message.format(n=format_number(n), path=path))
    return EXIT_OK


def _write_cards(path: Path, cards: Any) -> int:
    """Write the file readable by its owner only (it maps cards to customers), complete or not at all.
    The partial file is made new (``O_EXCL``, never through a link), so one left behind, or planted
    with other permissions, cannot make the export readable by others or send it elsewhere."""
    partial = path.with_name(path.name + ".partial")
    n = 0
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    try:
        with open(fd, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(CARD_COLUMNS)
            for c in cards:
                w.writerow(_csv_row(c))
                n += 1
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return n


def _iso(day: dt.date | None) -> str:
    return day.isoformat() if day else ""


def _csv_row(c: Card) -> tuple[Any, ...]:
    return (
        c.epc,
        c.customer_no,
        c.tid or "",
        c.status.value,
        c.tier or "",
        _iso(c.valid_from),
        _iso(c.valid_until),
        ";".join(c.allowed_branches),
    )
