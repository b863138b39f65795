"""``vipsense customers``: import the bank's customer list, show one customer, and the manual look-up
for phone appointments and customers without their card.

Every look-up is audited (``view`` for show, ``lookup`` for search).  ID and mobile numbers are masked
by :mod:`vipsense.privacy`, and so is any ID- or phone-shaped number in the free text (a name, a
company); ``--unmask`` shows them in clear only to a role that may unmask, with a reason, and is
audited as ``unmask``.  A refused unmask is audited as ``denied``.  Every value is printed through
:func:`vipsense.privacy.printable`: a control character in the data is shown as an escape, so a
customer's name cannot clear the screen, retitle the terminal or forge a line of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import operator
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ..api import Customer, IdentityStore, StoreUnsupported
from ..crypto import normalise_id_number
from ..i18n import _, format_number
from ..identity.idnumber import valid_id_number
from ..identity.records import CONSENT_COLUMNS, CUSTOMER_COLUMNS, CsvTable, ImportResult, estimate_csv_rows
from ..permissions import Permission
from ..privacy import mask_id_number, mask_mobile, printable, shown
from ..progress import ProgressBar
from ..storage.audit import AuditAction, AuditResult
from ..web.settings import IdLookup
from . import help_of
from .common import (
    EXIT_FAILED,
    EXIT_OK,
    PROGRESS_EVERY,
    Act,
    CliError,
    Denied,
    Session,
    add_common,
    audit_summary,
    batches,
    join_reason,
    labelled,
    report_import,
)

FIELDS = (*CUSTOMER_COLUMNS, *CONSENT_COLUMNS)
_CUSTOMER_FIELDS = tuple(f.name for f in attrs.fields(Customer))
_customer_values = operator.attrgetter(*_CUSTOMER_FIELDS)


# -- import ----------------------------------------------------------------------------------------


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    with (
        Session(args) as s,
        s.act(Permission.CUSTOMER_IMPORT, AuditAction.IMPORT, path.name, args.reason) as act,
    ):
        registry = s.store(args.store)
        result = _import_customers(s, registry, path)
        act.object = f"{path.name}: {audit_summary(result, 'customers')}"
    return report_import(result, "customers")


def _import_customers(s: Session, registry: Any, path: Path) -> ImportResult:
    """Customers through ``upsert_customers``, a batch at a time: a bad row is rejected with its line
    and reason, every good one is kept.  Columns the file lacks (often the consent) keep what is
    stored, and so does an empty consent cell."""
    total = estimate_csv_rows(path)
    bar = ProgressBar(sys.stderr, unit=_("customers"))
    tiers = set(s.profile.tiers)
    try:
        with CsvTable(path, kind="customers") as file:
            # Nothing stored yet (a branch's first load) and no consent column: nothing to keep, so
            # no row needs a look-up.  (A customer listed twice gets the same defaults either way.)
            look_up = "consent" in file.columns or not _empty(registry)

            def changed() -> Iterator[Customer]:
                """The good rows that change something; the unchanged are only counted."""
                for line, values in file.rows():
                    if file.result.rows % PROGRESS_EVERY == 0:
                        bar(file.result.rows, max(total, file.result.rows))
                    fields = dict(zip(file.columns, values, strict=True))
                    if fields.get("tier") is not None and fields["tier"] not in tiers:
                        file.result.reject(line, _("tier: unknown tier {tier!r}").format(tier=fields["tier"]))
                        continue
                    customer = _merge(registry, fields) if look_up else Customer(**fields)
                    if customer is None:
                        file.result.unchanged += 1
                    else:
                        yield customer

            for batch in batches(changed()):
                file.result.upserted += registry.upsert_customers(batch)
        bar(file.result.rows, file.result.rows)
    finally:
        bar.close()
    return file.result


def _empty(registry: Any) -> bool:
    """Whether the store holds no customer at all; False when it cannot tell."""
    try:
        customers = registry.iter_customers()
    except StoreUnsupported:
        return False
    with contextlib.closing(customers) if hasattr(customers, "close") else contextlib.nullcontext():
        return next(iter(customers), None) is None


def _merge(registry: IdentityStore, fields: dict[str, Any]) -> Customer | None:
    """The customer a row makes: the row's fields over what is stored (looked up only when the row
    does not give every field), or None when that is what is stored already.  A daily refresh of the
    bank's list changes few customers, so it writes few."""
    if fields.get("consent") is None:
        fields.pop("consent", None)  # an empty cell: keep what is stored
        if fields.get("consent_date") is None:
            fields.pop("consent_date", None)
    stored = registry.find_customer(fields["customer_no"]) if len(fields) < len(FIELDS) else None
    if stored is None:
        return Customer(**fields)
    merged = dict(zip(_CUSTOMER_FIELDS, _customer_values(stored), strict=True))
    merged.update(fields)
    customer = Customer(**merged)  # attrs.evolve does the same, at twice the cost (a million rows)
    return None if customer == stored else customer


ID_LOOKUP_PREFIX = "id_number "  #: the audit object of a look-up by ID number, before its masked number


# -- show and search -------------------------------------------------------------------------------


def _authorize_unmask(s: Session, object: str, reason: str) -> None:
    act = Act(object, reason)
    if not reason.strip():
        problem = _("--unmask needs --reason: why the numbers must be seen in clear")
        s.record(AuditAction.UNMASK, object, AuditResult.DENIED, f"denied: {problem}")
        raise Denied(problem)
    s.authorize(Permission.CUSTOMER_UNMASK, AuditAction.UNMASK, act)


def describe(c: Customer, s: Session, store: IdentityStore, unmask: bool) -> list[str]:
    """A customer for the screen: ID and mobile numbers masked unless ``unmask``."""
    staff = {p.id: p.name for p in s.profile.staff}
    cm = f"{c.client_manager} ({staff[c.client_manager]})" if c.client_manager in staff else c.client_manager
    if c.consent:
        consent = _("given {date}").format(date=c.consent_date or _("(date not recorded)"))
    else:
        consent = _("not given")
    photo = _("none")
    if c.photo:
        photo = _("{mime}, {size} bytes").format(mime=c.photo.mime, size=format_number(len(c.photo.data)))
    lines = [
        _("customer {customer}  {name}").format(customer=printable(c.customer_no), name=shown(c.name, unmask))
    ]
    fields = [
        (_("tier"), printable(s.profile.tier_name(c.tier)) if c.tier else ""),
        (_("company"), shown(c.company, unmask)),
        (_("ID number"), printable(c.id_number if unmask else mask_id_number(c.id_number))),
        (_("mobile"), printable(c.mobile if unmask else mask_mobile(c.mobile))),
        (_("business"), shown(c.usual_business, unmask)),
        (_("client mgr"), shown(cm, unmask)),
        (_("consent"), consent),
        (_("photo"), printable(photo)),
    ]
    list_cards = getattr(store, "list_cards", None)
    if list_cards is not None:
        cards = ", ".join(f"{card.epc} {card.status.label}" for card in list_cards(customer_no=c.customer_no))
        fields.append((_("cards"), printable(cards) or _("none")))
    # already printable (and masked): labelled() would escape nothing more
    lines += labelled(((name, value or "-") for name, value in fields), 12)
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    with Session(args) as s:
        if args.unmask:
            _authorize_unmask(s, args.customer_no, args.reason)
        with s.act(Permission.CUSTOMER_VIEW, AuditAction.VIEW, args.customer_no, args.reason):
            store = s.store(args.store, registry=False)
            customer = store.find_customer(args.customer_no)
            if customer is None:
                raise CliError(_("unknown customer {customer}").format(customer=printable(args.customer_no)))
            lines = describe(customer, s, store, args.unmask)
        print("\n".join(lines))
        if args.unmask:
            s.record(AuditAction.UNMASK, customer.customer_no, AuditResult.SUCCESS, args.reason)
    return EXIT_OK


def _check_id_lookup(s: Session, key: str, object_: str, reason: str) -> None:
    """The console's rule for a look-up by ID number, at the command line too (pen test point 1): the
    right to search by ID number, a reason, a whole checksum-valid number, and ``web.id_lookup``'s
    limits for this member of staff, counted from the audit log (a command has no other memory).
    Every refusal is audited; the ``alert_after``-th in a day is also a security alert."""
    s.authorize(Permission.CUSTOMER_SEARCH_ID, AuditAction.LOOKUP, Act(object_, reason))
    limits = s.profile.web.id_lookup if s.profile.web is not None else IdLookup()
    now = time.time()
    earlier = [
        e
        for e in s.audit.entries(since=now - 86400, actor=s.actor, action=AuditAction.LOOKUP)
        if e.object.startswith(ID_LOOKUP_PREFIX)
    ]
    problem = ""
    if not reason.strip():
        problem = _("a search by ID number needs --reason (e.g. 'phone appointment')")
    elif not valid_id_number(normalise_id_number(key)):
        problem = _("not a whole ID number: 18 characters, a real birth date and the right check character")
    elif sum(e.at >= now - 60 for e in earlier) >= limits.per_minute:
        problem = _("more than {n} look-ups by ID number a minute; wait a minute").format(n=limits.per_minute)
    elif len(earlier) >= limits.per_day:
        problem = _("more than {n} look-ups by ID number today; ask the branch manager").format(
            n=limits.per_day
        )
    if not problem:
        return
    s.record(AuditAction.LOOKUP, object_, AuditResult.DENIED, f"denied: {problem}")
    refused = sum(e.result is AuditResult.DENIED for e in earlier) + 1
    if refused == limits.alert_after:
        detail = f"{refused} refused look-ups by ID number in 24 h at the command line"
        s.record(AuditAction.LOOKUP, "security alert: id_lookup_limit", AuditResult.DENIED, detail)
        s.host.hook.vipsense_security_alert(
            kind="id_lookup_limit", actor=s.actor, source=s.source, detail=detail
        )
    raise Denied(problem)


def cmd_search(args: argparse.Namespace) -> int:
    by_id = args.id_number is not None
    key = args.id_number.strip() if by_id else args.customer_no
    object_ = f"{ID_LOOKUP_PREFIX}{mask_id_number(key)}" if by_id else key
    with Session(args) as s:
        if by_id:
            _check_id_lookup(s, key, object_, args.reason)
        if args.unmask:
            _authorize_unmask(s, object_, args.reason)
        permission = Permission.CUSTOMER_SEARCH_ID if by_id else Permission.CUSTOMER_VIEW
        with s.act(permission, AuditAction.LOOKUP, object_, args.reason) as act:
            store = s.store(args.store, registry=False)
            if by_id:
                found = store.find_customers_by_id_number(key)
            else:
                found = [c for c in (store.find_customer(key),) if c is not None]
            if found:
                act.object = ",".join(c.customer_no for c in found)
            else:
                act.reason = join_reason(args.reason, "no match")
            lines = [line for c in found for line in describe(c, s, store, args.unmask)]
        if not found:
            if by_id:
                message = _("no customer has that ID number")
            else:
                message = _("no customer has customer number {customer}").format(customer=printable(key))
            print(f"vipsense: {message}", file=sys.stderr)
            return EXIT_FAILED
        print("\n".join(lines))
        if args.unmask:
            s.record(AuditAction.UNMASK, act.object, AuditResult.SUCCESS, args.reason)
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    customers = sub.add_parser("customers", help=help_of("customers"))
    customers_sub = customers.add_subparsers(dest="customers_command", required=True, metavar="ACTION")

    imp = customers_sub.add_parser("import", help=_("add or update customers from a CSV file, with progress"))
    add_common(imp)
    imp.add_argument("file", metavar="FILE.csv", help=_("the CSV file to read"))
    imp.add_argument("--reason", default="", help=_("why (recorded in the audit log)"))
    imp.set_defaults(func=cmd_import)

    show = customers_sub.add_parser("show", help=_("one customer, masked"))
    add_common(show)
    show.add_argument("customer_no", metavar="CUSTOMER_NO", help=_("the customer's number"))
    _unmask_args(show)
    show.set_defaults(func=cmd_show)

    search = customers_sub.add_parser("search", help=_("find a customer without their card"))
    add_common(search)
    key = search.add_mutually_exclusive_group(required=True)
    key.add_argument("--customer-no", metavar="X", help=_("by customer number"))
    key.add_argument("--id-number", metavar="Y", help=_("by ID number (needs --reason)"))
    _unmask_args(search)
    search.set_defaults(func=cmd_search)


def _unmask_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default="", help=_("why you look (required with --id-number and --unmask)"))
    p.add_argument(
        "--unmask",
        action="store_true",
        help=_("show ID and mobile numbers in clear (audited; needs --reason)"),
    )
