""":func:`import_csv`, the bulk path for a bank's full customer list (a million rows) and for CSV seed
files: it streams the file, checks each row with :mod:`vipsense.identity.records`, and upserts in batches, so
one bad row is reported, never fatal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vipsense.crypto import FieldCipher
from vipsense.identity.records import CsvFileError, CsvTable, ImportResult, count_csv_rows

from .schema import storage_converter, upsert_sql

IMPORT_BATCH = 10_000  #: rows per executemany and per transaction


class SeedError(Exception):
    pass


class CsvImportError(SeedError):
    """The whole file is refused (an unknown or missing column); nothing was written."""


def import_csv(
    db: sqlite3.Connection,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    *,
    batch: int = IMPORT_BATCH,
    cipher: FieldCipher | None = None,
) -> ImportResult:
    """Upsert a customers (or, with an ``epc`` column, cards) CSV file into ``db``, streaming.

    ID and mobile numbers are sealed with ``cipher``, by default the one of ``db`` when it is a
    :class:`SqliteStore`'s connection (``store.db``); a connection without one is refused, so nothing
    is ever written in clear.

    A bad row is rejected with its line and reason and the import goes on; an unknown, duplicated or
    missing required column refuses the whole file with :class:`CsvImportError` before anything is
    written.  ``progress(rows_done, rows_total)`` is called after each batch and once at the end.
    This is the seed path: a card that has a history keeps its status (the card registry owns it).

    Durability trade-off: while importing, this connection runs with ``synchronous=OFF`` (restored
    afterwards), so batches are not fsynced.  A crash of the process loses nothing committed; a power
    cut or OS crash mid-import can lose the latest batches or, at worst, damage the file.  The import is
    an idempotent upsert, so the remedy is to run it again (from a backup copy if the file is damaged).
    Normal operation never changes ``synchronous``.
    """
    path = Path(path)
    cipher = cipher or getattr(db, "cipher", None)
    if cipher is None:
        raise TypeError("import_csv needs the store's cipher: pass the store's connection or cipher=")
    total = count_csv_rows(path) if progress else 0
    try:
        table = CsvTable(path)
    except CsvFileError as exc:
        raise CsvImportError(str(exc)) from None
    result = table.result
    with table:
        columns, store = storage_converter(table.kind, table.columns, cipher)
        sql = upsert_sql(table.kind, columns, seed=True)
        saved_sync = db.execute("PRAGMA synchronous").fetchone()[0]
        db.execute("PRAGMA synchronous=OFF")
        try:
            pending: list[tuple[Any, ...]] = []
            for _line, values in table.rows():
                pending.append(store(values) if store else values)
                if len(pending) >= batch:
                    _write(db, sql, pending, result)
                    if progress:
                        progress(result.rows, max(total, result.rows))
            _write(db, sql, pending, result)
        finally:
            db.execute(f"PRAGMA synchronous={int(saved_sync)}")
    if progress:
        progress(result.rows, result.rows)
    return result


def _write(db: sqlite3.Connection, sql: str, pending: list[tuple[Any, ...]], result: ImportResult) -> None:
    """One transaction per batch: a failure loses at most this batch, and memory stays flat."""
    if pending:
        with db:
            db.executemany(sql, pending)
        result.upserted += len(pending)
        pending.clear()
