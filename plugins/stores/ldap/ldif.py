"""Seed files (YAML or CSV, the SQLite store's format) to LDIF for the LDAP store.

    python -m vipsense.plugins.stores.ldap.ldif profiles/demo/customers.yaml \\
        --base-customers ou=customers,dc=bank,dc=example --base-cards ou=cards,dc=bank,dc=example \\
        > demo.ldif
    python -m vipsense.plugins.stores.ldap.ldif profiles/demo/customers.yaml \\
        --profile profiles/demo-ldap.yaml --with-bases > demo.ldif    # bases and mapping from a profile

then ``ldapadd -f demo.ldif`` (online) or ``slapadd -l demo.ldif`` (offline).  Customers become
inetOrgPerson + vipsenseCustomer entries named by their customer number, cards vipsenseCard entries
named by their EPC, with the attribute names of the profile's mapping.  A photo file becomes
``jpegPhoto`` only when it is a JPEG; a seed without one gets no photo (the SQLite store draws a
portrait instead).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import attrs

from vipsense import i18n
from vipsense.i18n import _
from vipsense.identity.records import CsvFileError, CsvTable
from vipsense.identity.seed import SeedCard, SeedCustomer, SeedFileError, read_yaml_seed
from vipsense.model import Card, CardStatus, Customer, Photo

from .settings import CardSettings, CustomerSettings, LdapSettings

Record = tuple[str, dict[str, list[bytes]]]


class ConvertError(Exception):
    pass


# -- reading seeds ---------------------------------------------------------------------------------


def _photo(seed: SeedCustomer, folder: Path) -> Photo | None:
    if not seed.photo:
        return None
    data = (folder / seed.photo).read_bytes()
    if not data.startswith(b"\xff\xd8"):
        print(f"{folder / seed.photo}: not a JPEG, left out (jpegPhoto holds JPEG only)", file=sys.stderr)
        return None
    return Photo(data)


def _customer(s: SeedCustomer, folder: Path) -> Customer:
    return Customer(
        customer_no=s.customer_no,
        name=s.name,
        tier=s.tier,
        company=s.company,
        id_number=s.id_number,
        mobile=s.mobile,
        usual_business=s.usual_business,
        client_manager=s.client_manager,
        photo=_photo(s, folder),
        consent=bool(getattr(s, "consent", False)),
        consent_date=getattr(s, "consent_date", None),
    )


def _card(s: SeedCard) -> Card:
    return Card(
        epc=s.epc.upper(),
        customer_no=s.customer_no,
        status=CardStatus(s.status),
        tier=s.tier,
        valid_from=s.valid_from,
        valid_until=s.valid_until,
        allowed_branches=tuple(s.allowed_branches),
        tid=s.tid.upper() if s.tid else None,
    )


def read_yaml(path: Path) -> tuple[list[Customer], list[Card]]:
    try:
        seed, _loaded = read_yaml_seed(path)
    except SeedFileError as exc:
        raise ConvertError(str(exc) or _("{path}: empty seed file").format(path=path)) from None
    return [_customer(c, path.parent) for c in seed.customers], [_card(c) for c in seed.cards]


def read_csv(path: Path) -> tuple[list[Customer], list[Card]]:
    """A customers CSV, or a cards CSV when the header has ``epc``, read and checked exactly as the
    SQLite import reads it (:class:`vipsense.identity.records.CsvTable`)."""
    customers: list[Customer] = []
    cards: list[Card] = []
    try:
        table = CsvTable(path)
    except CsvFileError as exc:
        raise ConvertError(str(exc)) from None
    with table:
        for _line, values in table.rows():
            fields = {c: v for c, v in zip(table.columns, values, strict=True) if v is not None}
            if table.kind == "cards":
                fields["status"] = CardStatus(fields.get("status", CardStatus.ACTIVE.value))
                cards.append(Card(**fields))
            else:
                customers.append(Customer(**fields))
    if table.result.rejected:
        shown = "; ".join(f"{path}:{r.line}: {r.reason}" for r in table.result.reasons)
        message = _("{n} rows rejected, nothing was written: {rows}")
        raise ConvertError(message.format(n=table.result.rejected, rows=shown))
    return customers, cards


def read_seed(path: Path) -> tuple[list[Customer], list[Card]]:
    return read_csv(path) if path.suffix.lower() == ".csv" else read_yaml(path)


# -- writing LDIF ----------------------------------------------------------------------------------


def customer_record(customer: Customer, settings: CustomerSettings) -> Record:
    from .entries import CustomerMap, dn_for

    rdn_attr = settings.attributes.customer_no
    return dn_for(rdn_attr, customer.customer_no, settings.base), CustomerMap(settings.attributes).to_entry(
        customer
    )


def card_record(card: Card, settings: CardSettings) -> Record:
    from .entries import CardMap, dn_for

    entry = CardMap(settings.attributes, settings.object_classes).to_entry(card)
    return dn_for(settings.attributes.epc, card.epc.upper(), settings.base), entry


def base_records(*bases: str) -> Iterator[Record]:
    """``organizationalUnit`` entries for bases named ``ou=...`` (their parent must exist)."""
    for base in bases:
        rdn = base.split(",", 1)[0]
        attr, _sep, value = rdn.partition("=")
        if attr.strip().lower() != "ou":
            raise ConvertError(_("--with-bases makes ou=... entries only, not {rdn}").format(rdn=rdn))
        yield base, {"objectClass": [b"organizationalUnit"], "ou": [value.strip().encode()]}


def write_ldif(records: Iterable[Record], out: IO[str]) -> int:
    """Write records with python-ldap's LDIF writer (base64 for non-ASCII, line folding); returns how many."""
    import ldif  # python-ldap's module, not this one

    writer = ldif.LDIFWriter(out)
    n = 0
    for dn, entry in records:
        writer.unparse(dn, entry)
        n += 1
    return n


# -- command line ----------------------------------------------------------------------------------


def _settings_from_profile(path: Path, store_id: str | None) -> LdapSettings:
    from vipsense.config import ProfileError
    from vipsense.config.profile import load_profile
    from vipsense.pluginhost import load_host

    try:
        profile = load_profile(path, load_host())
    except ProfileError as exc:
        raise ConvertError("\n".join(str(e) for e in exc.errors)) from None
    stores = [s for s in profile.stores if s.type == "ldap" and store_id in (None, s.id)]
    if not stores:
        if store_id:
            raise ConvertError(_("{path}: no store of type ldap with id {id}").format(path=path, id=store_id))
        raise ConvertError(_("{path}: no store of type ldap").format(path=path))
    return stores[0].settings


def main(argv: list[str] | None = None, out: IO[str] | None = None) -> int:
    i18n.set_default(i18n.from_environment())  # a command line: LANG's language, as vipsense's
    ap = argparse.ArgumentParser(
        prog="python -m vipsense.plugins.stores.ldap.ldif",
        description=_("Convert vipsense seed files (YAML or CSV) to LDIF for the ldap store's directory."),
    )
    ap.add_argument("seeds", nargs="+", type=Path, help=_("YAML or CSV seed files"))
    ap.add_argument("--profile", type=Path, help=_("take the bases and attribute mapping from this profile"))
    ap.add_argument("--store", help=_("the id of the ldap store in --profile (default: the first one)"))
    ap.add_argument("--base-customers", help=_("DN under which customers go"))
    ap.add_argument("--base-cards", help=_("DN under which cards go"))
    ap.add_argument("--with-bases", action="store_true", help=_("also write the two ou=... base entries"))
    args = ap.parse_args(argv)
    out = out or sys.stdout
    try:
        import ldif  # noqa: F401  (python-ldap: the optional extra)
    except ImportError:
        print(_("this converter needs python-ldap: pip install 'vipsense[ldap]'"), file=sys.stderr)
        return 2
    try:
        if args.profile:
            settings = _settings_from_profile(args.profile, args.store)
            customers_s, cards_s = settings.customers, settings.cards
            if args.base_customers:
                customers_s = attrs.evolve(customers_s, base=args.base_customers)
            if args.base_cards:
                cards_s = attrs.evolve(cards_s, base=args.base_cards)
        elif args.base_customers and args.base_cards:
            customers_s, cards_s = (
                CustomerSettings(base=args.base_customers),
                CardSettings(base=args.base_cards),
            )
        else:
            ap.error(_("give --base-customers and --base-cards, or --profile"))
        customers: list[Customer] = []
        cards: list[Card] = []
        for seed in args.seeds:
            c, k = read_seed(seed)
            customers += c
            cards += k
        records: list[Record] = list(base_records(customers_s.base, cards_s.base)) if args.with_bases else []
        records += [customer_record(c, customers_s) for c in customers]
        records += [card_record(c, cards_s) for c in cards]
        write_ldif(records, out)
    except (ConvertError, OSError) as exc:
        print(_("error: {error}").format(error=exc), file=sys.stderr)
        return 1
    done = _("{customers} customers and {cards} cards written as LDIF")
    print(done.format(customers=len(customers), cards=len(cards)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
