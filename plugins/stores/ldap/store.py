"""The LDAP identity store and card registry.  Imported only by the factory (python-ldap is an extra).

The directory is the bank's master data.  Lookups go through a TTL cache with negative entries; while
the directory is unreachable, cached entries keep answering (marked ``stale``) and uncached lookups
fail at once, so the core counts the store unavailable and asks the next one.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import attrs
import ldap
from ldap.controls import SimplePagedResultsControl
from ldap.filter import escape_filter_chars
from ldap.ldapobject import LDAPObject

from vipsense.api import (
    Card,
    CardEvent,
    CardExists,
    CardRegistry,
    CardStatus,
    Customer,
    PluginContext,
    StoreUnsupported,
    UnknownCard,
)
from vipsense.i18n import _
from vipsense.privacy import mask_id_number

from .cache import MISSING, TtlCache
from .connection import BACKOFF_CAP, DirectoryDown, DirectoryError, Link
from .entries import CardMap, CustomerMap, decode_events, dn_for, encode_event, lower_keys, time_value
from .settings import LdapSettings

T = TypeVar("T")
SCOPES = {"one": ldap.SCOPE_ONELEVEL, "sub": ldap.SCOPE_SUBTREE}
#: another writer changed the history counter between our read and our modify: read again
CONFLICTS = (ldap.NO_SUCH_ATTRIBUTE, ldap.CONSTRAINT_VIOLATION, ldap.TYPE_OR_VALUE_EXISTS)
WRITE_ATTEMPTS = 5
ID_NUMBER_LIMIT = 50  #: a manual look-up by ID number returns at most this many customers


class AmbiguousEntry(DirectoryError):
    """One key (an EPC, a customer number) matches two entries: the directory needs fixing."""


def term(attr: str, value: str) -> str:
    """``(attr=value)`` with the value escaped: ``escape_filter_chars`` in mode 0 only, which escapes
    UTF-8 text correctly; modes 1 and 2 break Chinese and mode 1 had CVE-2025-61911 (ldap.md §2)."""
    return f"({attr}={escape_filter_chars(value, escape_mode=0)})"


@attrs.frozen
class _CardEntry:
    card: Card
    dn: str
    history: tuple[bytes, ...] = ()
    count: int | None = None  #: the history counter as stored, None when absent


def _stale_card(hit: tuple[Card, str]) -> tuple[Card, str]:
    return attrs.evolve(hit[0], stale=True), hit[1]


def _stale_customer(hit: Customer) -> Customer:
    return attrs.evolve(hit, stale=True)


def _read_base(base: str, conn: LDAPObject, timeout: float) -> Any:
    """Read ``base`` itself (no attributes): fails with ``ldap.NO_SUCH_OBJECT`` when it is missing."""
    return conn.search_ext_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["1.1"], timeout=timeout)


class LdapStore(CardRegistry):
    """Customers and cards in an LDAP directory (OpenLDAP, 389-DS, Active Directory).

    :meth:`upsert_customers` and :meth:`replace_all` raise :class:`StoreUnsupported`: customer entries
    are the bank's master data, maintained by the bank's own tools, and this store never writes them.
    Cards are written (issue, status, reissue, bulk import) because the card registry owns them.
    """

    def __init__(self, settings: LdapSettings, ctx: PluginContext) -> None:
        self.settings = settings
        self.log = ctx.log
        self._degraded = ""
        self.link = Link(settings, ctx.log, ctx.resolve, self._link_changed)
        self.customer_map = CustomerMap(settings.customers.attributes)
        self.card_map = CardMap(settings.cards.attributes, settings.cards.object_classes)
        c = settings.cache
        # Cache ages run on the branch clock, so a simulation at --speed N keeps their meaning.
        self.cards: TtlCache[tuple[Card, str]] = TtlCache(c.cards, c.negative, c.max_entries, ctx.clock.mono)
        self.customers: TtlCache[Customer] = TtlCache(c.customers, c.negative, c.max_entries, ctx.clock.mono)
        self._customer_base = (settings.customers.base, SCOPES[settings.customers.scope])
        self._card_base = (settings.cards.base, SCOPES[settings.cards.scope])

    def __repr__(self) -> str:
        return f"LdapStore(uri={self.settings.uri!r}, bind_dn={self.settings.bind_dn!r})"

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Connect, bind and check that both bases exist, so a wrong profile fails at start-up."""
        self.link.reset()
        for name, (base, _scope) in (
            ("customers.base", self._customer_base),
            ("cards.base", self._card_base),
        ):
            try:
                self.link.run(functools.partial(_read_base, base), f"read {name}")
            except ldap.NO_SUCH_OBJECT:
                message = _("{key}: {base} is not in the directory {uri}")
                raise DirectoryError(message.format(key=name, base=base, uri=self.settings.uri)) from None

    def close(self) -> None:
        self.link.close()

    def degraded(self) -> str:
        """Called from the pipeline thread after every answer: a plain attribute, set on the
        worker thread when the directory goes down or comes back, so it never changes in between."""
        return self._degraded

    def _link_changed(self, reason: str) -> None:
        if not reason:
            self._degraded = ""
            return
        cached = len(self.cards) + len(self.customers)
        self._degraded = (
            f"directory unreachable ({reason}): serving {cached:,} cached entries, retrying with"
            f" backoff up to {BACKOFF_CAP:g} s"
        )

    # -- the cache in front of the directory ----------------------------------------------------

    def _cached(
        self, cache: TtlCache[T], key: str, fetch: Callable[[], T | None], stale: Callable[[T], T]
    ) -> T | None:
        """A fresh cache entry, else the directory's answer (cached), else a stale entry while the
        directory is down.  Raises :class:`DirectoryDown` when there is nothing to answer with."""
        hit = cache.get(key)
        link = self.link
        if hit is not None:
            value, fresh = hit
            if fresh and not link.down:
                return None if value is MISSING else value  # type: ignore[return-value]
            if fresh and not link.retry_due():
                return None if value is MISSING else stale(value)  # type: ignore[arg-type]
        elif link.down and not link.retry_due():
            raise DirectoryDown(link.reason)  # nothing cached: fail fast, no network
        try:
            answer = fetch()
        except DirectoryDown:
            if hit is None or (hit[0] is MISSING and not hit[1]):
                raise  # "not found" that has expired is no answer while the directory is down
            return None if hit[0] is MISSING else stale(hit[0])  # type: ignore[arg-type]
        cache.put(key, MISSING if answer is None else answer)
        return answer

    # -- lookups --------------------------------------------------------------------------------

    def find_card(self, epc: str) -> Card | None:
        key = epc.upper()
        hit = self._cached(self.cards, key, lambda: self._card_hit(key), _stale_card)
        return hit[0] if hit is not None else None

    def find_customer(self, customer_no: str) -> Customer | None:
        return self._cached(
            self.customers, customer_no, lambda: self._fetch_customer(customer_no), _stale_customer
        )

    def find_customers_by_id_number(self, id_number: str) -> list[Customer]:
        """Every customer with this ID number, straight from the directory (never from the cache: a
        manual look-up is rare and must be current)."""
        attr = self.settings.customers.attributes.id_number
        if attr is None:
            raise StoreUnsupported(_("customers.attributes.id_number is not mapped"))
        try:
            found = self._search(
                self._customer_base, term(attr, id_number), self.customer_map.attrlist, ID_NUMBER_LIMIT
            )
        except ldap.SIZELIMIT_EXCEEDED:
            raise DirectoryError(
                _("more than {n} customers have this ID number").format(n=ID_NUMBER_LIMIT)
            ) from None
        self.log.debug("customers by ID number %s: %d found", mask_id_number(id_number), len(found))
        return sorted((self.customer_map.to_customer(e) for _, e in found), key=lambda c: c.customer_no)

    def _search(
        self, where: tuple[str, int], flt: str, attrlist: list[str], sizelimit: int = 0
    ) -> list[tuple[str, dict[str, list[bytes]]]]:
        """Entries under ``where`` matching the class filter and ``flt``.  Raises
        ``ldap.SIZELIMIT_EXCEEDED`` when more than ``sizelimit`` match."""
        base, scope = where
        full = f"(&{self._class_filter(where)}{flt})"

        def op(conn: LDAPObject, timeout: float) -> Any:
            return conn.search_ext_s(base, scope, full, attrlist, timeout=timeout, sizelimit=sizelimit)

        rows = self.link.run(op, "search")
        return [(dn, e) for dn, e in rows if dn is not None]  # skip referrals

    def _search_one(
        self, where: tuple[str, int], flt: str, attrlist: list[str], what: str
    ) -> tuple[str, dict[str, list[bytes]]] | None:
        """The one matching entry, or None.  Two entries for one key are refused, never guessed
        between: for a card that could greet a revoked card's holder."""
        try:
            rows = self._search(where, flt, attrlist, sizelimit=2)
        except ldap.SIZELIMIT_EXCEEDED:
            rows = [("", {}), ("", {})]
        if len(rows) > 1:
            raise AmbiguousEntry(
                _("{what}: more than one entry under {base} matches").format(what=what, base=where[0])
            )
        return rows[0] if rows else None

    def _class_filter(self, where: tuple[str, int]) -> str:
        s = self.settings
        return s.customers.filter if where is self._customer_base else s.cards.filter

    def _fetch_customer(self, customer_no: str) -> Customer | None:
        a = self.settings.customers.attributes
        row = self._search_one(
            self._customer_base, term(a.customer_no, customer_no), self.customer_map.attrlist, "customer"
        )
        return self.customer_map.to_customer(row[1]) if row else None

    def _read_card(self, key: str, history: bool = False) -> _CardEntry | None:
        a = self.settings.cards.attributes
        attrlist = self.card_map.attrlist + (
            [x for x in (a.history, a.history_count) if x] if history else []
        )
        row = self._search_one(self._card_base, term(a.epc, key), attrlist, f"card {key}")
        if row is None:
            return None
        dn, entry = row
        e = lower_keys(entry)
        count = e.get(a.history_count.lower()) if a.history_count else None
        return _CardEntry(
            card=self.card_map.to_card(entry, self._warn),
            dn=dn,
            history=tuple(e.get(a.history.lower(), [])) if a.history else (),
            count=int(count[0]) if count else None,
        )

    def _card_hit(self, key: str) -> tuple[Card, str] | None:
        found = self._read_card(key)
        return (found.card, found.dn) if found else None

    def _warn(self, message: str) -> None:
        self.log.warning("directory %s: %s", self.settings.uri, message)

    # -- listings (paged, RFC 2696) -------------------------------------------------------------

    def _paged(
        self, where: tuple[str, int], flt: str, attrlist: list[str]
    ) -> Iterator[dict[str, list[bytes]]]:
        base, scope = where
        full = f"(&{self._class_filter(where)}{flt})"
        cookie = b""
        generation: int | None = None
        budget = float(self.settings.list_timeout)
        while True:
            control = SimplePagedResultsControl(True, size=self.settings.page_size, cookie=cookie)

            def page(
                conn: LDAPObject,
                timeout: float,
                control: SimplePagedResultsControl = control,
                expected: int | None = generation,
            ) -> Any:
                # A cookie belongs to one connection: a reconnect between pages cannot continue.
                if expected is not None and self.link.generation != expected:
                    raise DirectoryError(_("the connection was reset during a listing; start it again"))
                msgid = conn.search_ext(base, scope, full, attrlist, serverctrls=[control])
                _kind, rows, _msgid, controls = conn.result3(msgid, all=1, timeout=timeout)
                return rows, controls, self.link.generation

            rows, controls, generation = self.link.run(
                page, "paged search", retry=generation is None, budget=budget
            )
            for dn, entry in rows:
                if dn is not None:
                    yield entry
            cookie = next(
                (c.cookie for c in controls if c.controlType == SimplePagedResultsControl.controlType), b""
            )
            if not cookie:
                return

    def iter_cards(self) -> Iterator[Card]:
        for entry in self._paged(self._card_base, "", self.card_map.attrlist):
            yield self.card_map.to_card(entry, self._warn)

    def iter_customers(self) -> Iterator[Customer]:
        for entry in self._paged(self._customer_base, "", self.customer_map.attrlist):
            yield self.customer_map.to_customer(entry)

    def list_cards(self, customer_no: str | None = None, status: CardStatus | None = None) -> list[Card]:
        a = self.settings.cards.attributes
        flt = term(a.customer_no, customer_no) if customer_no is not None else ""
        if status is not None:
            if a.status is None:
                if status is not CardStatus.ACTIVE:
                    return []
            elif status is CardStatus.ACTIVE:  # no status attribute means active
                flt += f"(|{term(a.status, status.value)}(!({a.status}=*)))"
            else:
                flt += term(a.status, status.value)
        cards = (
            self.card_map.to_card(e, self._warn)
            for e in self._paged(self._card_base, flt, self.card_map.attrlist)
        )
        return sorted(cards, key=lambda c: c.epc)

    # -- sightings ------------------------------------------------------------------------------

    @property
    def records_sightings(self) -> bool:
        a = self.settings.cards.attributes
        return bool(self.settings.record_sightings and a.last_seen_branch and a.last_seen_at)

    def card_seen(self, epc: str, branch_id: str, at: float) -> None:
        """With ``record_sightings: true``, write the last-seen branch and time on the card entry."""
        a = self.settings.cards.attributes
        if not self.settings.record_sightings or not (a.last_seen_branch and a.last_seen_at):
            return
        key = epc.upper()
        hit = self.cards.get(key)
        card_dn = hit[0] if hit is not None and hit[0] is not MISSING else self._card_hit(key)
        if card_dn is None:
            return
        card, dn = card_dn  # type: ignore[misc]
        mods = [
            (ldap.MOD_REPLACE, a.last_seen_branch, [branch_id.encode()]),
            (ldap.MOD_REPLACE, a.last_seen_at, [time_value(at)]),
        ]
        try:
            self._write(lambda conn: conn.modify_ext_s(dn, mods), "record a sighting")
        except ldap.NO_SUCH_OBJECT:
            self.cards.pop(key)
            return
        # keep the entry's age: a sighting must not extend how long a card's status is trusted
        self.cards.replace(key, (attrs.evolve(card, last_seen_branch=branch_id, last_seen_at=at), dn))

    # -- card writes ----------------------------------------------------------------------------

    def _write(self, op: Callable[[LDAPObject], T], what: str) -> T:
        """A write on a connection checked just before (``whoami``, with one reconnect), then sent
        once: a write is never repeated blindly after a reset, which could apply it twice."""

        def probe(conn: LDAPObject, timeout: float) -> None:
            conn.timeout = timeout
            conn.whoami_s()

        def write(conn: LDAPObject, timeout: float) -> T:
            conn.timeout = timeout
            return op(conn)

        self.link.run(probe, what)
        return self.link.run(write, what, retry=False)

    def _history_mods(self, found: _CardEntry, event: CardEvent) -> list[tuple[int, str, list[bytes]]]:
        """Append ``event``.  The counter is deleted at its old value and added at the new one in the
        same modify, so two writers racing on one card cannot both succeed (an optimistic lock)."""
        a = self.settings.cards.attributes
        if a.history is None:
            return []
        count = found.count if found.count is not None else len(found.history)
        mods = [(ldap.MOD_ADD, a.history, [encode_event(event, count + 1)])]
        if a.history_count:
            if found.count is not None:
                mods.append((ldap.MOD_DELETE, a.history_count, [str(found.count).encode()]))
            mods.append((ldap.MOD_ADD, a.history_count, [str(count + 1).encode()]))
        return mods

    def _modify_card(self, key: str, change: Callable[[_CardEntry], tuple[Card, list[Any]]]) -> Card:
        """Read the card, build the modify with ``change``, write it; again on a history conflict."""
        for _attempt in range(WRITE_ATTEMPTS):
            found = self._read_card(key, history=True)
            if found is None:
                raise UnknownCard(key)
            card, mods = change(found)
            if mods:
                try:
                    self._write(operator.methodcaller("modify_ext_s", found.dn, mods), "change a card")
                except CONFLICTS:
                    continue
            self.cards.put(key, (card, found.dn))
            return card
        raise DirectoryError(
            _("card {epc}: its history kept changing during the update; try again").format(epc=key)
        )

    def _issue(self, card: Card, event: CardEvent) -> str:
        key = card.epc.upper()
        card = attrs.evolve(card, epc=key, stale=False)
        if self._read_card(key) is not None:
            raise CardExists(key)
        a = self.settings.cards.attributes
        entry = self.card_map.to_entry(card)
        if a.history:
            entry[a.history] = [encode_event(event, 1)]
            if a.history_count:
                entry[a.history_count] = [b"1"]
        dn = dn_for(a.epc, key, self.settings.cards.base)
        try:
            self._write(lambda conn: conn.add_ext_s(dn, list(entry.items())), "issue a card")
        except ldap.ALREADY_EXISTS:
            raise CardExists(key) from None
        self.cards.put(key, (card, dn))
        return dn

    def issue_card(self, card: Card, event: CardEvent) -> None:
        self._issue(card, attrs.evolve(event, epc=card.epc.upper()))

    def set_card_status(self, epc: str, status: CardStatus, event: CardEvent) -> Card:
        a = self.settings.cards.attributes
        if a.status is None:
            raise StoreUnsupported(_("cards.attributes.status is not mapped"))
        key = epc.upper()

        def change(found: _CardEntry) -> tuple[Card, list[Any]]:
            mods: list[Any] = [(ldap.MOD_REPLACE, a.status, [status.value.encode()])]
            return attrs.evolve(found.card, status=status), mods + self._history_mods(found, event)

        return self._modify_card(key, change)

    def reissue_card(self, old_epc: str, new_card: Card, revoke: CardEvent, issue: CardEvent) -> None:
        """Add the new card, then revoke the old one; if the revocation fails, the new card is deleted
        again, so either both happen or neither does."""
        old = old_epc.upper()
        if self._read_card(old) is None:
            raise UnknownCard(old)
        new_dn = self._issue(new_card, attrs.evolve(issue, epc=new_card.epc.upper()))
        try:
            self.set_card_status(old, CardStatus.REVOKED, revoke)
        except Exception as exc:
            self.cards.pop(new_card.epc.upper())
            try:
                self._write(lambda conn: conn.delete_ext_s(new_dn), "undo a reissue")
            except Exception as undo:
                self.log.error(
                    "reissue of %s: the new card %s was added, revoking the old one failed (%s) and"
                    " removing the new one failed too (%s): delete %s by hand",
                    old,
                    new_card.epc.upper(),
                    exc,
                    undo,
                    new_dn,
                )
                raise DirectoryError(
                    _("reissue half done: delete {dn} by hand ({error})").format(dn=new_dn, error=undo)
                ) from exc
            raise

    def card_history(self, epc: str) -> list[CardEvent]:
        key = epc.upper()
        found = self._read_card(key, history=True)
        if found is None:
            raise UnknownCard(key)
        return decode_events(key, found.history, self._warn)

    def upsert_cards(self, cards: Iterable[Card], event: CardEvent) -> int:
        """Add new cards and update changed ones; a new card, or one whose status changes, gets
        ``event`` (for that EPC) in its history.  Unchanged cards are not written."""
        n = 0
        for card in cards:
            key = card.epc.upper()
            card = attrs.evolve(card, epc=key, stale=False)
            ev = attrs.evolve(event, epc=key)
            if self._read_card(key) is None:
                self._issue(card, ev)
            else:
                self._modify_card(key, functools.partial(self._update, card=card, event=ev))
            n += 1
        return n

    def _update(self, found: _CardEntry, card: Card, event: CardEvent) -> tuple[Card, list[Any]]:
        before = self.card_map.to_entry(found.card)
        after = self.card_map.to_entry(card)
        mods: list[Any] = []
        for attr in sorted(set(before) | set(after)):
            if attr == "objectClass" or before.get(attr) == after.get(attr):
                continue
            mods.append(
                (ldap.MOD_REPLACE, attr, after[attr]) if attr in after else (ldap.MOD_DELETE, attr, None)
            )
        if mods and found.card.status is not card.status:
            mods += self._history_mods(found, event)
        kept = attrs.evolve(
            card, last_seen_branch=found.card.last_seen_branch, last_seen_at=found.card.last_seen_at
        )
        return kept, mods

    def upsert_customers(self, customers: Iterable[Customer]) -> int:
        raise StoreUnsupported(
            _(
                "the LDAP store does not write customers: the directory is the bank's master data,"
                " maintained by the bank's own tools"
            )
        )

    def replace_all(self, cards: Iterable[Card], customers: Iterable[Customer]) -> tuple[int, int]:
        raise StoreUnsupported(
            _("the LDAP store cannot be a replica: the directory is the bank's master data")
        )
