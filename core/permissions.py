"""Who may do what: the one table from staff roles to the card and customer operations.

Least privilege (``privacy-security.md`` §4 item 4): the card-issuing station changes cards, the branch
manager may do everything at the branch, head office sees and exports but does not change cards, and
the staff at the door may look customers up (masked) and report a card lost, nothing more.  Unmasking
an ID or mobile number is for the branch manager and head office only, always with a reason.

Who is acting is the ``--as STAFF_ID`` the command line was given (or ``VIPSENSE_STAFF``), a member of
the profile's ``staff:``.  The command line trusts the operating-system account that runs it to say who
it is; the account is recorded as the audit source (``cli:user@host``).  Password logins, lockout and
sessions come with the web interface.

| permission          |card_issuer|branch_manager|head_office|client_manager|lobby_manager|admin|auditor|
|---------------------|:---------:|:------------:|:---------:|:------------:|:-----------:|:---:|:-----:|
| cards.issue         |     x     |      x       |           |              |             |     |       |
| cards.lost          |     x     |      x       |           |      x       |      x      |     |       |
| cards.restore       |     x     |      x       |           |              |             |     |       |
| cards.revoke        |     x     |      x       |           |              |             |     |       |
| cards.reissue       |     x     |      x       |           |              |             |     |       |
| cards.import        |     x     |      x       |           |              |             |     |       |
| cards.view          |     x     |      x       |     x     |              |             |     |       |
| cards.export        |           |      x       |     x     |              |             |     |       |
| customers.view      |     x     |      x       |     x     |      x       |      x      |     |       |
| customers.unmask    |           |      x       |     x     |              |             |     |       |
| customers.search_id |     x     |      x       |     x     |              |             |     |       |
| customers.import    |     x     |      x       |     x     |              |             |     |       |
| visits.view         |           |      x       |     x     |              |             |     |       |
| visits.purge        |           |      x       |     x     |              |             |     |       |
| status.view         |     x     |      x       |     x     |      x       |      x      |  x  |       |
| console.view        |           |      x       |           |      x       |      x      |     |       |
| visits.acknowledge  |           |      x       |           |      x       |      x      |     |       |
| audit.view          |           |              |           |              |             |     |   x   |
| users.manage        |           |              |           |              |             |  x  |       |

A client manager's ``customers.view`` and ``console.view`` reach their own customers only (the
customer's ``client_manager``); everyone else with the permission sees the whole branch.

Why these lines: a lost report must be quick and only ever makes a card *less* usable, so the staff a
customer calls may file it; making a lost card active again needs the issuing station.  Exports take
the card-to-customer map out of the system, so only the two roles that answer for the data may run
them.  The visit list with each member of staff's response times is the staff assessment: for the
branch manager and head office.  Head office never changes a card itself: that stays with a branch,
where the card holder is.  The console (the live arrivals, the current customer, today's list and
acknowledging) is for the staff who greet customers.  Searching by ID number
(``customers.search_id``) answers "is this person a customer here?" for a whole number, so next to a
masked ID number on a screen it confirms guesses at the hidden digits (pen test point 1): it is for
those who must find a customer by the ID card in front of them -- the card issuer at issuance, where
the separate consent is taken and the ID card checked (``privacy-security.md`` §2 Art. 26, §4 items 2
and 4) -- and for the two roles that answer for the data; never the lobby or client managers, who
find their customers by customer number.  The web also asks for a reason and limits how often.
Separation of duties: the administrator manages accounts and devices but sees no customer data, and
only the auditor reads the audit log, so the people whose actions it records cannot read (or learn
to hide in) it.
"""

from __future__ import annotations

import enum
from typing import Any

from .i18n import lazy_gettext
from .model import Role


class Permission(str, enum.Enum):
    CARD_ISSUE = "cards.issue"
    CARD_LOST = "cards.lost"
    CARD_RESTORE = "cards.restore"
    CARD_REVOKE = "cards.revoke"
    CARD_REISSUE = "cards.reissue"
    CARD_IMPORT = "cards.import"
    CARD_VIEW = "cards.view"  #: cards list, cards show
    CARD_EXPORT = "cards.export"
    CUSTOMER_VIEW = "customers.view"  #: customers show, customers search (masked)
    CUSTOMER_UNMASK = "customers.unmask"
    CUSTOMER_SEARCH_ID = "customers.search_id"  #: look a customer up by their whole ID number
    CUSTOMER_IMPORT = "customers.import"
    VISITS_VIEW = "visits.view"  #: visits list: today's visits and staff response times
    VISITS_PURGE = "visits.purge"
    STATUS_VIEW = "status.view"  #: the status page and /api/status: devices, PDAs, counts
    CONSOLE_VIEW = "console.view"  #: the client-manager console: arrivals, today's visits
    VISITS_ACK = "visits.acknowledge"  #: acknowledge a notification sent to oneself
    AUDIT_VIEW = "audit.view"
    USERS_MANAGE = "users.manage"  #: web accounts and third-party API tokens


_ISSUER, _MANAGER, _HEAD = Role.CARD_ISSUER, Role.BRANCH_MANAGER, Role.HEAD_OFFICE
_CLIENT, _LOBBY = Role.CLIENT_MANAGER, Role.LOBBY_MANAGER
_ADMIN, _AUDITOR = Role.ADMIN, Role.AUDITOR
#: those who serve customers: their web account is named after their member of the profile's staff:
STAFF_ROLES = _STAFF = frozenset({_ISSUER, _MANAGER, _HEAD, _CLIENT, _LOBBY})

#: The table in the module docstring, as data.  A test checks the two agree.
GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.CARD_ISSUE: frozenset({_ISSUER, _MANAGER}),
    Permission.CARD_LOST: frozenset({_ISSUER, _MANAGER, _CLIENT, _LOBBY}),
    Permission.CARD_RESTORE: frozenset({_ISSUER, _MANAGER}),
    Permission.CARD_REVOKE: frozenset({_ISSUER, _MANAGER}),
    Permission.CARD_REISSUE: frozenset({_ISSUER, _MANAGER}),
    Permission.CARD_IMPORT: frozenset({_ISSUER, _MANAGER}),
    Permission.CARD_VIEW: frozenset({_ISSUER, _MANAGER, _HEAD}),
    Permission.CARD_EXPORT: frozenset({_MANAGER, _HEAD}),
    Permission.CUSTOMER_VIEW: _STAFF,
    Permission.CUSTOMER_UNMASK: frozenset({_MANAGER, _HEAD}),
    Permission.CUSTOMER_SEARCH_ID: frozenset({_ISSUER, _MANAGER, _HEAD}),
    Permission.CUSTOMER_IMPORT: frozenset({_ISSUER, _MANAGER, _HEAD}),
    Permission.VISITS_VIEW: frozenset({_MANAGER, _HEAD}),
    Permission.VISITS_PURGE: frozenset({_MANAGER, _HEAD}),
    Permission.STATUS_VIEW: _STAFF | {_ADMIN},
    Permission.CONSOLE_VIEW: frozenset({_MANAGER, _CLIENT, _LOBBY}),
    Permission.VISITS_ACK: frozenset({_MANAGER, _CLIENT, _LOBBY}),
    Permission.AUDIT_VIEW: frozenset({_AUDITOR}),
    Permission.USERS_MANAGE: frozenset({_ADMIN}),
}


#: What each permission lets one do, for messages ("lobby (lobby_manager) may not issue cards"): a
#: verb phrase, translated each time it is shown (``str()``, a format field).
DOES: dict[Permission, Any] = {
    Permission.CARD_ISSUE: lazy_gettext("issue cards"),
    Permission.CARD_LOST: lazy_gettext("report cards lost"),
    Permission.CARD_RESTORE: lazy_gettext("restore lost cards"),
    Permission.CARD_REVOKE: lazy_gettext("revoke cards"),
    Permission.CARD_REISSUE: lazy_gettext("reissue cards"),
    Permission.CARD_IMPORT: lazy_gettext("import cards"),
    Permission.CARD_VIEW: lazy_gettext("view cards"),
    Permission.CARD_EXPORT: lazy_gettext("export cards"),
    Permission.CUSTOMER_VIEW: lazy_gettext("look customers up"),
    Permission.CUSTOMER_UNMASK: lazy_gettext("unmask ID and mobile numbers"),
    Permission.CUSTOMER_SEARCH_ID: lazy_gettext("search customers by ID number"),
    Permission.CUSTOMER_IMPORT: lazy_gettext("import customers"),
    Permission.VISITS_VIEW: lazy_gettext("view visits and response times"),
    Permission.VISITS_PURGE: lazy_gettext("purge visits"),
    Permission.STATUS_VIEW: lazy_gettext("see the branch status"),
    Permission.CONSOLE_VIEW: lazy_gettext("use the arrivals console"),
    Permission.VISITS_ACK: lazy_gettext("acknowledge arrivals"),
    Permission.AUDIT_VIEW: lazy_gettext("read the audit log"),
    Permission.USERS_MANAGE: lazy_gettext("manage accounts and API tokens"),
}


def does(permission: Permission) -> str:
    """What ``permission`` lets one do, in the language in force (``发卡`` / ``issue cards``)."""
    return str(DOES[permission])


def allowed(role: Role, permission: Permission) -> bool:
    return role in GRANTS[permission]


def roles_for(permission: Permission) -> list[str]:
    """The roles holding ``permission``, in a stable order, for messages ("needs card_issuer or ...")."""
    return [r.value for r in Role if r in GRANTS[permission]]
