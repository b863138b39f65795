"""The embedded identity store: customers, cards and card histories in one SQLite file, seeded from YAML
or CSV, and a full :class:`vipsense.api.CardRegistry` (issue, lost, revoke, reissue, import, replica).

The modules: :mod:`.schema` (tables, migration of older files, rows to model objects), :mod:`.store`
(the store), :mod:`.seed` (loading seed files, which :mod:`vipsense.identity.seed` reads),
:mod:`.importer` (the bulk CSV path).  Everything tests and benchmarks use is importable from here.
"""

from __future__ import annotations

import vipsense
from vipsense.api import RegisterType
from vipsense.i18n import lazy_gettext
from vipsense.identity.records import (
    CARD_COLUMNS,
    CARD_STATUSES,
    CUSTOMER_COLUMNS,
    MAX_REASONS,
    ImportResult,
    RejectedRow,
)
from vipsense.identity.records import count_csv_rows as count_csv_rows
from vipsense.progress import ProgressBar

from .importer import IMPORT_BATCH, CsvImportError, SeedError, import_csv
from .schema import FIND_CARD_SQL, FIND_CUSTOMER_SQL, SCHEMA, SCHEMA_VERSION, migrate
from .seed import load_seed
from .store import SqliteSettings, SqliteStore

#: Extra per-connection PRAGMAs for lookups, applied by :meth:`SqliteStore.open`.  Empty on purpose:
#: measured with 1,000,000 customers (bench/stores.py), a 64 MiB cache plus 256 MiB mmap gave lookup p99
#: 0.028-0.037 ms against 0.037-0.040 ms without, both far under the 0.5 ms target, while the bench's
#: peak RSS rose from ~43 to ~363 MB (mapped pages count as RSS).
READ_PRAGMAS: tuple[str, ...] = ()

__all__ = [
    "CARD_COLUMNS",
    "CARD_STATUSES",
    "CUSTOMER_COLUMNS",
    "FIND_CARD_SQL",
    "FIND_CUSTOMER_SQL",
    "IMPORT_BATCH",
    "MAX_REASONS",
    "READ_PRAGMAS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "CsvImportError",
    "ImportResult",
    "ProgressBar",
    "RejectedRow",
    "SeedError",
    "SqliteSettings",
    "SqliteStore",
    "count_csv_rows",
    "import_csv",
    "load_seed",
    "migrate",
]


@vipsense.hookimpl
def vipsense_register_store_types(register: RegisterType) -> None:
    register(
        "sqlite",
        SqliteSettings,
        SqliteStore,
        summary=lazy_gettext(
            "customers, cards and card histories in a local SQLite file, seeded from YAML or CSV"
        ),
    )
