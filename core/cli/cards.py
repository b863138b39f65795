"""``vipsense cards``: issue, list, show, report lost, find, revoke, reissue, import and export cards.

Every change goes to a :class:`vipsense.api.CardRegistry` (``--store``, default the profile's first),
is kept in the card's history, and is one entry in the branch's audit log.  Customer data is never
changed here, except the consent recorded with ``--consent-given``.
"""

from __future__ import annotations

import argparse
import datetime as dt

import attrs

from ..api import Card, CardEvent, CardRegistry, CardStatus, Customer, Duration
from ..config.profile import Profile
from ..i18n import _, format_number, ngettext
from ..identity.issuing import ReadError, read_card
from ..identity.lifecycle import TransitionError, check
from ..identity.records import (
    check_validity,
    parse_date,
    parse_hex,
    parse_status,
)
from ..model import CardAction
from ..output import display_width, pad
from ..permissions import Permission
from ..privacy import printable, shown
from ..storage.audit import AuditAction, AuditResult
from . import cardfiles, help_of
from .common import (
    EXIT_OK,
    Act,
    CliError,
    Denied,
    Session,
    add_common,
    checked,
    labelled,
    now,
    table,
    when,
)

# -- shared by issue and reissue -------------------------------------------------------------------


@attrs.frozen
class CardTerms:
    """What a new card carries besides its EPC, as the command line gave it (None: not given)."""

    tid: str | None
    tier: str | None
    valid_from: dt.date | None
    valid_until: dt.date | None
    branches: tuple[str, ...] | None


def _terms(args: argparse.Namespace, tiers: tuple[str, ...]) -> CardTerms:
    if args.tier is not None and args.tier not in tiers:
        raise CliError(
            _("--tier: unknown tier {tier!r} (tiers: {tiers})").format(tier=args.tier, tiers=", ".join(tiers))
        )
    return CardTerms(
        tid=checked(parse_hex, "--tid", args.tid) if args.tid else None,
        tier=args.tier,
        valid_from=checked(parse_date, "--valid-from", args.valid_from) if args.valid_from else None,
        valid_until=checked(parse_date, "--valid-until", args.valid_until) if args.valid_until else None,
        branches=tuple(args.branch) if args.branch else None,
    )


def _new_epc(args: argparse.Namespace) -> str | None:
    return checked(parse_hex, "--epc", args.epc) if args.epc else None


def _epc_and_tid(
    s: Session, args: argparse.Namespace, act: Act, epc: str | None, tid: str | None
) -> tuple[str, str | None]:
    """The new card's EPC and TID: as given, else those of the card on the issuing reader (a TID
    given on the command line wins over the one read)."""
    if epc is not None:
        return epc, tid
    try:
        read = read_card(s.profile, s.host, args.from_reader, float(args.wait))
    except ReadError as exc:
        raise CliError(str(exc)) from None
    act.object = read.epc
    return read.epc, tid or read.tid


def _consent(s: Session, registry: CardRegistry, customer: Customer, given: bool) -> Customer | None:
    """The customer with consent to record now (``--consent-given``), or None when nothing needs
    recording; :class:`Denied` when consent is required and missing."""
    if customer.consent:
        return None
    if given:
        return attrs.evolve(customer, consent=True, consent_date=dt.date.today())
    if s.profile.privacy.consent_required:
        raise Denied(
            _(
                "customer {customer} has not given separate consent to recognition at the door"
                " (privacy.consent_required); record it with --consent-given once they have signed"
            ).format(customer=customer.customer_no)
        )
    return None


def _record_consent(s: Session, registry: CardRegistry, customer: Customer | None) -> None:
    if customer is not None:
        registry.upsert_customers([customer])
        s.record(AuditAction.CONSENT, customer.customer_no, AuditResult.SUCCESS, "given at card issue")


def _customer(registry: CardRegistry, customer_no: str) -> Customer:
    customer = registry.find_customer(customer_no)
    if customer is None:
        raise CliError(_("unknown customer {customer}").format(customer=printable(customer_no)))
    return customer


def _card(registry: CardRegistry, epc: str) -> Card:
    card = registry.find_card(epc)
    if card is None:
        raise CliError(_("no card has EPC {epc}").format(epc=epc))
    return card


def _unused(registry: CardRegistry, epc: str) -> None:
    if registry.find_card(epc) is not None:
        raise CliError(_("card {epc} is already issued; reissue or revoke it instead").format(epc=epc))


# -- issue, reissue --------------------------------------------------------------------------------


def cmd_issue(args: argparse.Namespace) -> int:
    epc = _new_epc(args)
    with Session(args) as s:
        terms = _terms(args, s.profile.tiers)
        check_dates(terms.valid_from, terms.valid_until)
        with s.act(
            Permission.CARD_ISSUE, AuditAction.CARD_ISSUE, epc or f"reader:{args.from_reader}", args.reason
        ) as act:
            registry = s.store(args.store)
            customer = _customer(registry, args.customer)
            consent = _consent(s, registry, customer, args.consent_given)
            epc, tid = _epc_and_tid(s, args, act, epc, terms.tid)
            _unused(registry, epc)
            card = Card(
                epc=epc,
                customer_no=customer.customer_no,
                tier=terms.tier,
                valid_from=terms.valid_from,
                valid_until=terms.valid_until,
                allowed_branches=terms.branches or (),
                tid=tid,
            )
            _record_consent(s, registry, consent)
            registry.issue_card(card, CardEvent(epc, CardAction.ISSUED, now(), s.actor, args.reason))
    print(
        _("issued card {epc} to customer {customer}{terms}").format(
            epc=epc, customer=printable(customer.customer_no), terms=_describe_terms(card, s.profile)
        )
    )
    return EXIT_OK


def cmd_reissue(args: argparse.Namespace) -> int:
    old_epc, new_epc = checked(parse_hex, "OLD_EPC", args.old_epc), _new_epc(args)
    with Session(args) as s:
        terms = _terms(args, s.profile.tiers)
        with s.act(Permission.CARD_REISSUE, AuditAction.CARD_REISSUE, old_epc, args.reason) as act:
            registry = s.store(args.store)
            old = _card(registry, old_epc)
            _check(old, CardAction.REVOKED, _("reissue"))
            customer = _customer(registry, old.customer_no)
            consent = _consent(s, registry, customer, args.consent_given)
            new_epc, tid = _epc_and_tid(s, args, act, new_epc, terms.tid)
            act.object = f"{old_epc} -> {new_epc}"
            _unused(registry, new_epc)
            card = Card(
                epc=new_epc,
                customer_no=old.customer_no,
                tier=terms.tier if terms.tier is not None else old.tier,
                valid_from=terms.valid_from or old.valid_from,
                valid_until=terms.valid_until or old.valid_until,
                allowed_branches=terms.branches if terms.branches is not None else old.allowed_branches,
                tid=tid,  # a new card has a TID of its own: never the old card's
            )
            check_dates(card.valid_from, card.valid_until)
            _record_consent(s, registry, consent)
            at = now()
            registry.reissue_card(
                old_epc,
                card,
                CardEvent(
                    old_epc, CardAction.REVOKED, at, s.actor, args.reason, detail=f"replaced by {new_epc}"
                ),
                CardEvent(
                    new_epc, CardAction.REISSUED, at, s.actor, args.reason, detail=f"replaces {old_epc}"
                ),
            )
    customer_no = printable(card.customer_no)
    print(
        _("card {old} revoked; card {new} issued to customer {customer} in its place").format(
            old=old_epc, new=new_epc, customer=customer_no
        )
    )
    return EXIT_OK


def check_dates(valid_from: dt.date | None, valid_until: dt.date | None) -> None:
    checked(check_validity, valid_from, valid_until, ("--valid-from", "--valid-until"))


def _check(card: Card, action: CardAction, verb: str = "") -> None:
    """``verb``: what was asked, in words (already in the language in force)."""
    try:
        check(card, action)
    except TransitionError as exc:
        raise CliError(
            _("cannot {verb}: {error}").format(verb=verb, error=exc) if verb else str(exc)
        ) from None


def _describe_terms(card: Card, profile: Profile) -> str:
    """The card's terms for people, its tier by the name staff use (金卡 for ``gold``)."""
    parts = []
    if card.tier:
        parts.append(_("tier {tier}").format(tier=profile.tier_name(card.tier)))
    if card.valid_from or card.valid_until:
        parts.append(
            _("valid {start} to {end}").format(start=card.valid_from or "…", end=card.valid_until or "…")
        )
    if card.allowed_branches:
        parts.append(_("only at {branches}").format(branches=", ".join(card.allowed_branches)))
    if card.tid:
        parts.append(_("bound to TID {tid}").format(tid=card.tid))
    return printable(_(" ({terms})").format(terms=_("; ").join(parts))) if parts else ""


# -- lost, found, revoke ---------------------------------------------------------------------------

_CHANGES = {
    "lost": (Permission.CARD_LOST, AuditAction.CARD_LOST, CardAction.LOST),
    "found": (Permission.CARD_RESTORE, AuditAction.CARD_RESTORE, CardAction.RESTORED),
    "revoke": (Permission.CARD_REVOKE, AuditAction.CARD_REVOKE, CardAction.REVOKED),
}


def cmd_change(args: argparse.Namespace) -> int:
    permission, action, card_action = _CHANGES[args.cards_command]
    epc = checked(parse_hex, "EPC", args.epc)
    with Session(args) as s, s.act(permission, action, epc, args.reason):
        registry = s.store(args.store)
        card = _card(registry, epc)
        status = check(card, card_action)
        card = registry.set_card_status(epc, status, CardEvent(epc, card_action, now(), s.actor, args.reason))
    print(
        _("card {epc} of customer {customer} is now {status}").format(
            epc=epc, customer=printable(card.customer_no), status=card.status.label
        )
    )
    return EXIT_OK


# -- list, show ------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    status = checked(parse_status, args.status) if args.status else None
    what = " ".join(f"{k}={v}" for k, v in (("customer", args.customer), ("status", args.status)) if v)
    with Session(args) as s, s.act(Permission.CARD_VIEW, AuditAction.VIEW, f"cards {what or 'all'}"):
        cards = s.store(args.store).list_cards(customer_no=args.customer, status=status)
    rows = [
        (
            c.epc,
            c.customer_no,
            c.status.label,
            s.profile.tier_name(c.tier) if c.tier else "-",
            f"{c.valid_from or '…'}..{c.valid_until or '…'}" if c.valid_from or c.valid_until else "-",
            ",".join(c.allowed_branches) or "-",
            f"{c.last_seen_branch} {when(c.last_seen_at, s.profile.tz)}" if c.last_seen_at else "-",
        )
        for c in cards
    ]
    head = (_("EPC"), _("CUSTOMER"), _("STATUS"), _("TIER"), _("VALID"), _("BRANCHES"), _("LAST SEEN"))
    for line in table(head, rows):
        print(line)
    print(ngettext("{n} card", "{n} cards", len(cards)).format(n=format_number(len(cards))))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    epc = checked(parse_hex, "EPC", args.epc)
    with Session(args) as s, s.act(Permission.CARD_VIEW, AuditAction.VIEW, epc):
        registry = s.store(args.store)
        card = _card(registry, epc)
        history = registry.card_history(epc)
        tz = s.profile.tz
    seen = "-"
    if card.last_seen_at:
        seen = _("{branch} at {time}").format(branch=card.last_seen_branch, time=when(card.last_seen_at, tz))
    print(_("card {epc}").format(epc=card.epc))
    fields = (
        (_("customer"), card.customer_no),
        (_("status"), card.status.label),
        (_("tier"), s.profile.tier_name(card.tier) if card.tier else "-"),
        (_("valid from"), card.valid_from or "-"),
        (_("valid until"), card.valid_until or "-"),
        (_("branches"), ", ".join(card.allowed_branches) or _("all")),
        ("TID", card.tid or _("- (not bound)")),
        (_("last seen"), seen),
    )
    print("\n".join(labelled(fields, 13)))
    print(_("history:"))
    width = max((display_width(e.action.label) for e in history), default=0)  # the actions aligned
    for e in history:
        extra = "; ".join(shown(x) for x in (e.reason, e.detail) if x)  # free text: numbers masked
        tail = f": {extra}" if extra else ""
        action = pad(e.action.label, width)
        print(
            f"  {when(e.at, tz)}  "
            + _("{action} by {actor}").format(action=action, actor=printable(e.actor))
            + tail
        )
    if not history:
        print("  " + _("(none: the card came from a seed file or predates card histories)"))
    return EXIT_OK


# -- the parser ------------------------------------------------------------------------------------


def _new_card_args(p: argparse.ArgumentParser, need_epc: bool) -> None:
    source = p.add_mutually_exclusive_group(required=need_epc)
    source.add_argument("--epc", help=_("the new card's EPC (hex)"))
    source.add_argument(
        "--from-reader", metavar="READER_ID", help=_("read the EPC (and TID) from this reader")
    )
    p.add_argument("--wait", type=Duration.parse, default=Duration(30), help=_("how long to wait for a card"))
    p.add_argument("--tid", help=_("bind the card to this TID (hex)"))
    p.add_argument("--tier", help=_("the card's tier (one of the profile's tiers)"))
    p.add_argument("--valid-from", metavar="YYYY-MM-DD", help=_("the first day the card is valid"))
    p.add_argument("--valid-until", metavar="YYYY-MM-DD", help=_("the last day the card is valid"))
    p.add_argument(
        "--branch", action="extend", nargs="+", metavar="BRANCH", help=_("valid only at these branches")
    )
    p.add_argument(
        "--consent-given", action="store_true", help=_("the customer gave separate consent today: record it")
    )


def _reason(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--reason``: recorded in the card's history and the audit log."""
    p.add_argument(
        "--reason",
        required=required,
        default=None if required else "",
        help=_("why (recorded in the card's history and the audit log)"),
    )


def register(sub: argparse._SubParsersAction) -> None:
    cards = sub.add_parser("cards", help=help_of("cards"))
    cards_sub = cards.add_subparsers(dest="cards_command", required=True, metavar="ACTION")

    issue = cards_sub.add_parser("issue", help=_("issue a new card to a customer"))
    add_common(issue)
    issue.add_argument("--customer", required=True, metavar="CUSTOMER_NO", help=_("the customer's number"))
    _new_card_args(issue, need_epc=True)
    _reason(issue)
    issue.set_defaults(func=cmd_issue)

    for name, help_text in (
        ("lost", _("report a card lost: it is refused at the door until found")),
        ("found", _("a lost card was found: make it active again")),
        ("revoke", _("revoke a card for good")),
    ):
        p = cards_sub.add_parser(name, help=help_text)
        add_common(p)
        p.add_argument("epc", metavar="EPC", help=_("the card's EPC (hex)"))
        _reason(p, required=True)
        p.set_defaults(func=cmd_change)

    reissue = cards_sub.add_parser(
        "reissue", help=_("replace a card: the old one is revoked in the same step")
    )
    add_common(reissue)
    reissue.add_argument("old_epc", metavar="OLD_EPC", help=_("the EPC of the card it replaces"))
    _new_card_args(reissue, need_epc=True)
    _reason(reissue, required=True)
    reissue.set_defaults(func=cmd_reissue)

    listing = cards_sub.add_parser("list", help=_("list cards"))
    add_common(listing)
    listing.add_argument("--customer", metavar="CUSTOMER_NO", help=_("only this customer's cards"))
    listing.add_argument(
        "--status", choices=[s.value for s in CardStatus], help=_("only cards in this status")
    )
    listing.set_defaults(func=cmd_list)

    show = cards_sub.add_parser("show", help=_("one card and its history"))
    add_common(show)
    show.add_argument("epc", metavar="EPC", help=_("the card's EPC (hex)"))
    show.set_defaults(func=cmd_show)

    imp = cards_sub.add_parser("import", help=_("add or update cards from a CSV file"))
    add_common(imp)
    imp.add_argument("file", metavar="FILE.csv", help=_("the CSV file to read"))
    _reason(imp)
    imp.set_defaults(func=cardfiles.cmd_import)

    exp = cards_sub.add_parser("export", help=_("write cards to a new CSV file (importable again)"))
    add_common(exp)
    exp.add_argument("file", metavar="FILE.csv", help=_("the new CSV file to write"))
    exp.add_argument("--customer", metavar="CUSTOMER_NO", help=_("only this customer's cards"))
    exp.add_argument("--status", choices=[s.value for s in CardStatus], help=_("only cards in this status"))
    _reason(exp)
    exp.set_defaults(func=cardfiles.cmd_export)
