"""Seed files: YAML or CSV customers and cards upserted each time the store opens, so editing a seed
file and restarting the branch is enough.  A CSV seed is read as cards when its header has an ``epc``
column, else as customers.

A seed never undoes the card registry's work: a card that has a history (issued, reported lost,
revoked or reissued through the registry) keeps its status whatever the seed says, and consent recorded
at a card issue stays unless the seed itself says otherwise.

A YAML seed is read by :mod:`vipsense.identity.seed`, as the LDAP store's converter reads it.  Its values pass
the checks a CSV import's do (:mod:`vipsense.identity.records`: lengths, a plain customer number, text without
control characters), and its ID and mobile numbers are sealed like every other write
(:func:`.schema.seal_row`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vipsense.avatar import avatar_svg
from vipsense.crypto import FieldCipher
from vipsense.i18n import _
from vipsense.identity.records import (
    CARD_COLUMNS,
    CUSTOMER_COLUMNS,
    FieldError,
    check_length,
    parse_customer_no,
    parse_text,
)
from vipsense.identity.seed import SeedCard, SeedCustomer, SeedFileError, read_yaml_seed
from vipsense.model import Photo

from .importer import SeedError, import_csv
from .schema import CUSTOMER_STORED, seal_row, upsert_sql


def load_seed(db: sqlite3.Connection, path: Path, cipher: FieldCipher) -> tuple[int, int]:
    """Upsert one seed file; returns ``(customers, cards)``.  Raises :class:`SeedError` with every
    problem, each as ``file:line: key.path: message``.  A CSV seed goes through :func:`import_csv`
    (good rows are loaded, and the rejected ones are reported in the error)."""
    if path.suffix.lower() == ".csv":
        result = import_csv(db, path, cipher=cipher)
        if result.rejected:
            shown = "; ".join(f"{path}:{r.line}: {r.reason}" for r in result.reasons)
            message = _("{n} rows rejected, the others were loaded: {rows}")
            raise SeedError(message.format(n=result.rejected, rows=shown))
        return (result.upserted, 0) if result.kind == "customers" else (0, result.upserted)
    customers, cards = _read_yaml(path)
    with db:
        db.executemany(
            upsert_sql("customers", CUSTOMER_STORED, seed=True), [seal_row(c, cipher) for c in customers]
        )
        db.executemany(upsert_sql("cards", CARD_COLUMNS, seed=True), cards)
    return len(customers), len(cards)


def _text(c: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The seed entry's text fields checked as a CSV import checks them (:mod:`vipsense.identity.records`)."""
    out = {}
    for name in names:
        value = getattr(c, name)
        if name == "customer_no":
            out[name] = parse_customer_no(value)
        elif isinstance(value, str):
            out[name] = parse_text(name, value)
        else:
            out[name] = value
    return out


def _customer_row(c: SeedCustomer, base: Path) -> tuple[Any, ...]:
    """A row to upsert, in :data:`.schema.CUSTOMER_ROW` order; without a photo file a YAML seed gets a
    generated portrait."""
    fields = _text(c, CUSTOMER_COLUMNS)
    if c.photo:
        file = base / c.photo
        mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(file.suffix.lower(), "image/jpeg")
        photo = Photo(file.read_bytes(), mime)
    else:
        photo = avatar_svg(fields["name"])
    consent = None if c.consent is None else int(c.consent)
    date = c.consent_date.isoformat() if c.consent_date else None
    return (*fields.values(), photo.data, photo.mime, consent, date)


def _card_row(c: SeedCard) -> tuple[Any, ...]:
    fields = _text(c, ("customer_no", "tier"))
    branches = ",".join(parse_text("allowed_branches", b) for b in c.allowed_branches)
    check_length("allowed_branches", branches)
    for name in ("epc", "tid"):
        check_length(name, getattr(c, name) or "")
    return (
        c.epc.upper(),
        fields["customer_no"],
        c.tid,
        c.status.value,
        fields["tier"],
        c.valid_from.isoformat() if c.valid_from else None,
        c.valid_until.isoformat() if c.valid_until else None,
        branches,
    )


_Entry = TypeVar("_Entry", SeedCustomer, SeedCard)


def _read_yaml(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    try:
        seed, loaded = read_yaml_seed(path)
    except SeedFileError as exc:
        raise SeedError(str(exc)) from None
    problems: list[str] = []

    def rows(
        key: str, entries: Sequence[_Entry], row: Callable[[_Entry], tuple[Any, ...]]
    ) -> list[tuple[Any, ...]]:
        made = []
        for i, entry in enumerate(entries):
            try:
                made.append(row(entry))
            except FieldError as exc:
                problems.append(f"{loaded.error((key, i), str(exc))}")
            except OSError as exc:
                raise SeedError(
                    _("{path}: cannot read a photo: {error}").format(path=path, error=exc)
                ) from exc
        return made

    customers = rows("customers", seed.customers, lambda c: _customer_row(c, path.parent))
    cards = rows("cards", seed.cards, _card_row)
    if problems:
        raise SeedError("; ".join(problems))
    return customers, cards
