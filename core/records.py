"""Checking card and customer fields that come from people and files: EPCs, dates, statuses, consent,
and whole CSV files of them.

One definition of each rule, so ``vipsense cards issue``, ``vipsense cards import``, seed files and the
SQLite bulk importer accept and refuse exactly the same values.  A CSV file is streamed: each row is
checked on its own, and a bad row is rejected with its line and reason instead of stopping the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import attrs

from .model import CardStatus

#: Customer columns a CSV file may have.  ``customer_no`` and ``name`` are required.
CUSTOMER_COLUMNS = (
    "customer_no",
    "name",
    "company",
    "id_number",
    "mobile",
    "usual_business",
    "tier",
    "client_manager",
)
#: Optional customer columns: the separate consent to recognition at the door, and its date.
CONSENT_COLUMNS = ("consent", "consent_date")
#: Card columns a CSV file may have (a file with an ``epc`` column holds cards).
CARD_COLUMNS = (
    "epc",
    "customer_no",
    "tid",
    "status",
    "tier",
    "valid_from",
    "valid_until",
    "allowed_branches",
)
CARD_STATUSES = frozenset(s.value for s in CardStatus)
MAX_REASONS = 20  #: rejected rows whose line and reason are kept; the rest are only counted

_HEX = re.compile(r"[0-9A-Fa-f]+")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "y"}), frozenset({"0", "false", "no", "n"})


class FieldError(ValueError):
    """One value is not acceptable; the message names the field."""


def parse_hex(name: str, text: str) -> str:
    """An EPC or TID: hexadecimal, returned upper-case (how readers report them)."""
    if not _HEX.fullmatch(text):
        raise FieldError(f"{name}: must be hexadecimal, got {text!r}")
    return text.upper()


def parse_date(name: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise FieldError(f"{name}: not a date (YYYY-MM-DD), got {text!r}") from None


def check_validity(
    valid_from: dt.date | None,
    valid_until: dt.date | None,
    names: tuple[str, str] = ("valid_from", "valid_until"),
) -> None:
    """A card valid until a day before it becomes valid would never be valid: a typing mistake."""
    if valid_from and valid_until and valid_until < valid_from:
        raise FieldError(f"{names[1]}: {valid_until} is before {names[0]} {valid_from}")


def parse_status(text: str) -> CardStatus:
    if text not in CARD_STATUSES:
        raise FieldError(f"status: must be one of {', '.join(sorted(CARD_STATUSES))}")
    return CardStatus(text)


def parse_consent(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FieldError("consent: must be yes or no (1/0, true/false)")


# -- CSV files ---------------------------------------------------------------------------------------


class CsvFileError(ValueError):
    """The whole file is refused (empty, or an unknown, duplicated or missing column)."""


@attrs.frozen
class RejectedRow:
    line: int  #: physical line where the row starts (the header is line 1)
    reason: str


@attrs.define
class ImportResult:
    kind: str = "customers"  #: ``customers`` or ``cards``, from the header
    rows: int = 0  #: data rows read (blank lines are not rows)
    upserted: int = 0  #: rows written
    unchanged: int = 0  #: good rows that were stored already as they are (not written again)
    rejected: int = 0
    reasons: list[RejectedRow] = attrs.Factory(list)  #: the first :data:`MAX_REASONS` rejections

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(RejectedRow(line, reason))


def open_csv(path: Path) -> TextIO:
    # surrogateescape: a row with bytes that are not UTF-8 is rejected on its own (see CsvTable.rows)
    # instead of a UnicodeDecodeError aborting the whole import halfway.
    return path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")


def records(fh: TextIO) -> Iterator[tuple[int, list[str]]]:
    """Non-blank CSV records with the physical line each starts on."""
    reader = csv.reader(fh)
    line = reader.line_num
    for record in reader:
        if record:
            yield line + 1, record
        line = reader.line_num


def count_csv_rows(path: Path) -> int:
    """Data rows in a CSV file (records after the header, blank lines skipped): one quick pass."""
    with open_csv(path) as fh:
        return max(0, sum(1 for _ in records(fh)) - 1)


def estimate_csv_rows(path: Path) -> int:
    """Data rows in a CSV file, estimated from its line breaks without parsing it: a progress bar's
    total (a quoted field spanning lines counts twice; blank lines count).  Reads ~1 GB/s."""
    lines, last = 0, b"\n"
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return max(0, lines + (last != b"\n") - 1)


Converter = Callable[[list[str]], tuple[Any, ...]]


def _card_converter(columns: tuple[str, ...]) -> Converter:
    """Typed card values: EPC and TID upper-case hex, a :class:`CardStatus` value, dates, branches as
    a tuple (written ``SZ001;SZ002`` in the file)."""
    idx = {c: i for i, c in enumerate(columns)}
    epc_i, status_i, tid_i = idx["epc"], idx.get("status"), idx.get("tid")
    from_i, until_i, branches_i = idx.get("valid_from"), idx.get("valid_until"), idx.get("allowed_branches")

    def convert(row: list[str]) -> tuple[Any, ...]:
        out: list[Any] = [v or None for v in row]
        out[epc_i] = parse_hex("epc", row[epc_i])
        if tid_i is not None and row[tid_i]:
            out[tid_i] = parse_hex("tid", row[tid_i])
        if status_i is not None:
            out[status_i] = parse_status(row[status_i] or CardStatus.ACTIVE.value).value
        for i, name in ((from_i, "valid_from"), (until_i, "valid_until")):
            if i is not None and row[i]:
                out[i] = parse_date(name, row[i])
        if from_i is not None and until_i is not None:
            check_validity(out[from_i], out[until_i])
        if branches_i is not None:
            out[branches_i] = tuple(b for b in row[branches_i].split(";") if b)
        return tuple(out)

    return convert


def _customer_converter(columns: tuple[str, ...]) -> Converter:
    """Customers are text throughout (tier, ID number and mobile too: leading zeros matter); only the
    consent columns, when present, are typed."""
    consent_i, date_i = columns.index("consent") if "consent" in columns else None, None
    if "consent_date" in columns:
        date_i = columns.index("consent_date")
    if consent_i is None and date_i is None:
        return lambda row: tuple(v or None for v in row)

    def convert(row: list[str]) -> tuple[Any, ...]:
        out: list[Any] = [v or None for v in row]
        if consent_i is not None:
            out[consent_i] = parse_consent(row[consent_i]) if row[consent_i] else None
        if date_i is not None and row[date_i]:
            out[date_i] = parse_date("consent_date", row[date_i])
        return tuple(out)

    return convert


class CsvTable:
    """One customers or cards CSV file, open for streaming.

    The header is checked when the file is opened (:class:`CsvFileError` before anything is read);
    :meth:`rows` then yields ``(line, values)`` for each good row, values typed and in the order of
    :attr:`columns`, and counts the rejected ones in :attr:`result`.
    """

    def __init__(self, path: Path, kind: str | None = None) -> None:
        self.path = Path(path)
        self.result = ImportResult()
        self._fh = open_csv(self.path)
        try:
            self._records = records(self._fh)
            first = next(self._records, None)
            if first is None:
                raise CsvFileError(f"{self.path}: empty file: a header row is needed")
            self.kind, self.required, self.columns = self._header(first[1], kind)
        except BaseException:
            self._fh.close()
            raise
        self.result.kind = self.kind

    def _header(self, header: list[str], kind: str | None) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
        names = [h.strip() for h in header]
        if kind is None:
            kind = "cards" if "epc" in names else "customers"
        known, required = (
            (CARD_COLUMNS, ("epc", "customer_no"))
            if kind == "cards"
            else ((*CUSTOMER_COLUMNS, *CONSENT_COLUMNS), ("customer_no", "name"))
        )
        problems = [f"unknown column {n!r}" for n in names if n not in known]
        problems += [f"column {n!r} appears twice" for n in sorted({n for n in names if names.count(n) > 1})]
        problems += [f"missing column {n!r}" for n in required if n not in names]
        if problems:
            raise CsvFileError(
                f"{self.path}:1: {'; '.join(problems)} (known {kind} columns: {', '.join(known)})"
            )
        return kind, required, tuple(names)

    def rows(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        result, width = self.result, len(self.columns)
        convert = (_card_converter if self.kind == "cards" else _customer_converter)(self.columns)
        required_idx = [(self.columns.index(c), c) for c in self.required]
        for line, row in self._records:
            result.rows += 1
            if len(row) != width:
                result.reject(line, f"{len(row)} fields, the header has {width}")
                continue
            blank = next((c for i, c in required_idx if not row[i].strip()), None)
            if blank is not None:
                result.reject(line, f"{blank}: required")
                continue
            try:
                "".join(row).encode("utf-8")
            except UnicodeEncodeError:
                result.reject(line, "not valid UTF-8")
                continue
            try:
                values = convert(row)
            except FieldError as exc:
                result.reject(line, str(exc))
                continue
            yield line, values

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CsvTable:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
