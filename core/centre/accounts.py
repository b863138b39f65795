"""Which branch a centre web account belongs to: the centre's ``staff`` table, one row per account.

A ``branch_manager`` sees only their own branch on the board and in search, so the account's branch
is kept in the database beside the branches (``staff.branch_id``, a foreign key: a branch that does
not exist cannot be named).  ``head_office`` accounts have a row with no branch; accounts of other
roles (``auditor``, ``admin``) have none.  The accounts themselves (passwords, sessions) are the
branch web's :class:`~vipsense.web.users.UserStore` in the centre's data directory.
"""

from __future__ import annotations

from sqlalchemy import select

from .database import Database
from .schema import branches, staff


def branch_of(database: Database, username: str) -> str | None:
    """The branch ``username``'s account belongs to, or None (head office, or no such row)."""
    with database.begin() as conn:
        found = conn.execute(select(staff.c.branch_id).where(staff.c.staff_id == username)).first()
    return None if found is None else found.branch_id


def branch_exists(database: Database, branch_id: str) -> bool:
    with database.begin() as conn:
        found = conn.execute(select(branches.c.branch_id).where(branches.c.branch_id == branch_id)).first()
    return found is not None


def set_account(database: Database, username: str, name: str, role: str, branch_id: str | None) -> None:
    """Record (or replace) the staff row of ``username``'s account."""
    with database.begin() as conn:
        conn.execute(staff.delete().where(staff.c.staff_id == username))
        conn.execute(
            staff.insert().values(staff_id=username, branch_id=branch_id, name=name, role=role, active=True)
        )


def remove(database: Database, username: str) -> None:
    with database.begin() as conn:
        conn.execute(staff.delete().where(staff.c.staff_id == username))


def set_active(database: Database, username: str, active: bool) -> None:
    with database.begin() as conn:
        conn.execute(staff.update().where(staff.c.staff_id == username).values(active=active))


__all__ = ["branch_exists", "branch_of", "remove", "set_account", "set_active"]
