"""Seed files: the YAML customers and cards a branch starts from, read once for every store.

The SQLite store upserts a seed each time it opens, and the LDAP store's converter
(``python -m vipsense.plugins.stores.ldap.ldif``) turns the same file into LDIF; both read it here, so
a seed means the same to either.  The schema is checked like a profile: every problem is reported, each
as ``file:line: key.path: message``.  What an entry becomes (a row, an LDAP entry) is the store's own
business.  A CSV seed is not read here: each store imports CSV through :mod:`vipsense.identity.records`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import attrs

from ..config.structure import INVALID, Structurer
from ..config.yamlload import LoadedYaml, load_profile_yaml
from ..model import CardStatus

__all__ = ["SeedCard", "SeedCustomer", "SeedFile", "SeedFileError", "read_yaml_seed"]


@attrs.frozen
class SeedCustomer:
    customer_no: str
    name: str
    company: str | None = None
    id_number: str | None = None
    mobile: str | None = None
    usual_business: str | None = None
    tier: str | None = None
    client_manager: str | None = None
    photo: str | None = None  #: an image file; default: a generated portrait
    consent: bool | None = None  #: separate consent to recognition at the door; unset keeps the stored one
    consent_date: dt.date | None = None


@attrs.frozen
class SeedCard:
    epc: str
    customer_no: str
    tid: str | None = None
    status: CardStatus = CardStatus.ACTIVE
    tier: str | None = None
    valid_from: dt.date | None = None
    valid_until: dt.date | None = None
    allowed_branches: tuple[str, ...] = ()


@attrs.frozen
class SeedFile:
    customers: tuple[SeedCustomer, ...] = ()
    cards: tuple[SeedCard, ...] = ()


class SeedFileError(ValueError):
    """The file cannot be read as a seed: every problem found, each ``file:line: key.path: message``.
    An empty file has none to name, so the message is empty: each caller words that case itself."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def read_yaml_seed(path: Path) -> tuple[SeedFile, LoadedYaml]:
    """The seed in a YAML file, with the file as loaded, for locating an entry's later problems
    (``loaded.error(("cards", 2), message)``).  Raises :class:`SeedFileError`."""
    loaded = load_profile_yaml(path)
    st = Structurer(loaded)
    st.errors.extend(loaded.errors)
    seed = st.structure_attrs(loaded.data, SeedFile, ()) if loaded.data is not None else INVALID
    if st.errors or seed is INVALID:
        raise SeedFileError([str(e) for e in st.errors])
    return seed, loaded
