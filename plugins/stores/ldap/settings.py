"""Settings of the LDAP store: pure attrs classes, importable without python-ldap.

Every attribute name is a setting, so a bank maps vipsense onto its own directory layout.  The
defaults are an ``inetOrgPerson`` customer with the project's ``vipsenseCustomer`` auxiliary class,
and a ``vipsenseCard`` entry per card (``vipsense.schema`` beside this file).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from vipsense.api import Duration, Secret
from vipsense.i18n import _


def _positive(instance: Any, attribute: attrs.Attribute, value: float) -> None:
    # A timeout of 0 or "infinite" would let a dead server block the arrival path (ldap.md §3).
    if not value > 0:
        raise ValueError(
            _("{key}: must be more than 0, got {value!r}").format(key=attribute.name, value=value)
        )


def _not_negative(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or value < 0:
        raise ValueError(_("{key}: must be 0 or more, got {value!r}").format(key=attribute.name, value=value))


def _at_least_one(instance: Any, attribute: attrs.Attribute, value: int) -> None:
    if isinstance(value, bool) or value < 1:
        raise ValueError(_("{key}: must be 1 or more, got {value!r}").format(key=attribute.name, value=value))


def _filter(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    """A filter from the profile is trusted text, but must be one parenthesised RFC 4515 filter so
    it can be ANDed with the escaped lookup term."""
    depth = 0
    for i, ch in enumerate(value):
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0 or (depth == 0 and i != len(value) - 1):
            break
    else:
        if value.startswith("(") and depth == 0:
            return
    message = _("{key}: expected one filter in parentheses, e.g. (objectClass=inetOrgPerson)")
    raise ValueError(message.format(key=attribute.name))


def _uri(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    schemes = ("ldap://", "ldaps://", "ldapi://")
    uris = value.split()
    if not uris or any(not u.lower().startswith(schemes) for u in uris):
        raise ValueError(
            _("uri: expected ldap://, ldaps:// or ldapi:// URIs (space-separated), got {value!r}").format(
                value=value
            )
        )


def _dn(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if "=" not in value:
        raise ValueError(
            _("{key}: expected a DN such as ou=customers,dc=bank,dc=example").format(key=attribute.name)
        )


@attrs.frozen
class TlsSettings:
    """TLS for ``ldaps://`` URIs, or for ``ldap://`` with ``start_tls``.  The server certificate is
    always verified (``OPT_X_TLS_DEMAND``); there is deliberately no setting to turn that off."""

    start_tls: bool = False  #: upgrade an ``ldap://`` connection with StartTLS before binding
    ca_file: str | None = None  #: PEM CA bundle; default: the system's trusted CAs
    cert_file: str | None = None  #: client certificate (PEM), for directories that require one
    key_file: str | None = None  #: its private key (PEM)

    def __attrs_post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError(_("tls: cert_file and key_file go together"))


@attrs.frozen
class CustomerAttributes:
    """Which directory attribute holds each customer field; ``null`` leaves a field unmapped."""

    customer_no: str = "employeeNumber"
    name: str = "displayName"  #: falls back to ``cn`` when an entry has none
    tier: str | None = "employeeType"
    company: str | None = "o"
    id_number: str | None = "vipsenseIdNumber"
    mobile: str | None = "mobile"
    usual_business: str | None = "vipsenseUsualBusiness"
    client_manager: str | None = "vipsenseClientManager"
    photo: str | None = "jpegPhoto"
    consent: str | None = "vipsenseConsent"
    consent_date: str | None = "vipsenseConsentDate"


@attrs.frozen
class CardAttributes:
    """Which directory attribute holds each card field; ``null`` leaves a field unmapped."""

    epc: str = "vipsenseEpc"  #: also the RDN of cards that ``issue_card`` adds
    customer_no: str = "vipsenseCustomerNo"
    status: str | None = "vipsenseCardStatus"
    tier: str | None = "vipsenseTier"
    tid: str | None = "vipsenseTid"
    valid_from: str | None = "vipsenseValidFrom"
    valid_until: str | None = "vipsenseValidUntil"
    allowed_branches: str | None = "vipsenseAllowedBranch"  #: multi-valued
    history: str | None = "vipsenseCardEvent"  #: multi-valued, one JSON event per value
    history_count: str | None = "vipsenseCardEventCount"  #: optimistic lock for history appends
    last_seen_branch: str | None = "vipsenseLastSeenBranch"
    last_seen_at: str | None = "vipsenseLastSeenAt"


@attrs.frozen
class CustomerSettings:
    base: str = attrs.field(validator=_dn)
    filter: str = attrs.field(default="(objectClass=inetOrgPerson)", validator=_filter)
    scope: Literal["one", "sub"] = "sub"
    attributes: CustomerAttributes = CustomerAttributes()


@attrs.frozen
class CardSettings:
    base: str = attrs.field(validator=_dn)
    filter: str = attrs.field(default="(objectClass=vipsenseCard)", validator=_filter)
    scope: Literal["one", "sub"] = "sub"
    #: the objectClass values of entries that ``issue_card`` adds
    object_classes: tuple[str, ...] = ("vipsenseCard",)
    attributes: CardAttributes = CardAttributes()


@attrs.frozen
class CacheSettings:
    """In-memory cache.  Card status is security-relevant (a revocation must reach the door fast,
    privacy-security.md §5 countermeasure 5), so cards live shorter than customers."""

    customers: Duration = Duration(300)
    cards: Duration = Duration(30)
    negative: Duration = Duration(10)  #: how long "no such card / customer" is remembered
    max_entries: int = attrs.field(default=10_000, validator=_not_negative)  #: per cache; 0: off


@attrs.frozen
class LdapSettings:
    """A store item of ``type: ldap``.  There is no ``timeout`` field: the core owns that key.

    Keep ``connect_timeout + operation_timeout`` below the store's ``timeout`` (default 500 ms):
    that sum bounds the longest lookup, however dead the directory is.
    """

    uri: str = attrs.field(validator=_uri)  #: ``ldap://``, ``ldaps://`` (space-separated for failover)
    customers: CustomerSettings
    cards: CardSettings
    bind_dn: str | None = None  #: ``null``: anonymous
    password: Secret | None = None  #: from ``!secret``; never logged or shown
    tls: TlsSettings = TlsSettings()
    connect_timeout: Duration = attrs.field(default=Duration(0.25), validator=_positive)
    operation_timeout: Duration = attrs.field(default=Duration(0.25), validator=_positive)
    cache: CacheSettings = CacheSettings()
    page_size: int = attrs.field(default=500, validator=_at_least_one)  #: paged listing (RFC 2696)
    #: longest wait for one page of a listing (sync, export); listings never run on the arrival path
    list_timeout: Duration = attrs.field(default=Duration(10), validator=_positive)
    record_sightings: bool = False  #: ``card_seen`` writes last-seen branch and time on the card
    #: send a password over plain ``ldap://`` to a host other than loopback (never do this in a bank)
    allow_plaintext_bind: bool = False

    def __attrs_post_init__(self) -> None:
        if self.password is not None and self.bind_dn is None:
            raise ValueError(_("password: needs bind_dn"))
        if self.tls.start_tls and any(u.lower().startswith("ldaps://") for u in self.uri.split()):
            raise ValueError(_("tls.start_tls: not with ldaps:// (already TLS)"))
