"""The central identity store: customers, cards and card histories in the VIP service centre's
PostgreSQL database (issue 14, part 2), an identity store and card registry.

Issuing stations write to it (``vipsense cards ...`` with a profile whose registry is this store), and
each branch's ``sync:`` copies from it into its local SQLite replica, so a card revoked at the centre
is refused at every branch within one sync interval, and a branch whose link is down greets from its
replica.  The tables are the centre's (:mod:`vipsense.centre.schema`), migrated when the store opens.
"""

from __future__ import annotations

import vipsense
from vipsense.api import RegisterType
from vipsense.i18n import lazy_gettext

from .store import CentreUnreachable, PostgresqlSettings, PostgresqlStore

__all__ = ["CentreUnreachable", "PostgresqlSettings", "PostgresqlStore"]


@vipsense.hookimpl
def vipsense_register_store_types(register: RegisterType) -> None:
    register(
        "postgresql",
        PostgresqlSettings,
        PostgresqlStore,
        summary=lazy_gettext(
            "customers, cards and card histories in the VIP service centre's PostgreSQL database,"
            " shared by every branch and issuing station"
        ),
        requires=("psycopg", "sqlalchemy"),
        extra="postgresql",
    )
