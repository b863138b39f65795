"""Checking card and customer fields that come from people and files: EPCs, dates, statuses, consent,
customer numbers, text, and whole CSV files of them.

One definition of each rule, so ``vipsense cards issue``, ``vipsense cards import``, seed files and the
SQLite bulk importer accept and refuse exactly the same values.  A CSV file is streamed: each row is
checked on its own, and a bad row is rejected with its line and reason instead of stopping the file.

Text is stored clean (:func:`vipsense.privacy.clean_text`: no control characters, no NUL), every field
has a maximum length (:data:`MAX_LENGTH`, documented in docs/cards.md), and a customer number is one
plain token (:func:`parse_customer_no`).
"""

from __future__ import annotations

import csv
import datetime as dt
import operator
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import attrs

from ..i18n import _
from ..model import Card, CardStatus, Customer
from ..privacy import UNSAFE as _UNSAFE_ANY
from ..privacy import UnsafeText, clean_text

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

#: The longest value of each column, in characters (docs/cards.md has the table).  Generous for real
#: data, and small enough that one row cannot fill a screen, a text message or the store.
MAX_LENGTH: dict[str, int] = {
    "customer_no": 64,
    "name": 200,
    "company": 200,
    "id_number": 32,
    "mobile": 32,
    "usual_business": 1_000,
    "tier": 32,
    "client_manager": 64,
    "consent": 8,
    "consent_date": 10,
    "epc": 124,  #: 496 bits, the most an EPC can have
    "tid": 128,
    "status": 16,
    "valid_from": 10,
    "valid_until": 10,
    "allowed_branches": 2_000,
}
#: Python's csv module refuses a field over 131,072 characters with an error that would end the import;
#: fields up to this many are read, so the row they are in is rejected by length and the file goes on.
CSV_FIELD_LIMIT = 16 * 1024 * 1024
#: Not a customer number: a wildcard, or anything a directory filter or a shell would read as one.
_NOT_IN_CUSTOMER_NO = frozenset("*?")
#: Anything :func:`parse_customer_no` refuses: white space at either end, a wildcard, a control character.
_ODD_CUSTOMER_NO = re.compile(r"^\s|\s$|[*?]|" + _UNSAFE_ANY.pattern)

_HEX = re.compile(r"[0-9A-Fa-f]+")
_TRUE, _FALSE = frozenset({"1", "true", "yes", "y"}), frozenset({"0", "false", "no", "n"})


class FieldError(ValueError):
    """One value is not acceptable; the message names the field."""


def parse_hex(name: str, text: str) -> str:
    """An EPC or TID: hexadecimal, returned upper-case (how readers report them)."""
    if not _HEX.fullmatch(text):
        raise FieldError(
            _("{name}: must be hexadecimal, got {value}").format(name=name, value=repr(_clip(text)))
        )
    return text.upper()


def _clip(text: str, n: int = 40) -> str:
    """A bad value as an error message quotes it: at most ``n`` characters (quoted with ``!r``, which
    shows control characters as escapes)."""
    return text if len(text) <= n else f"{text[:n]}..."


def check_length(name: str, text: str) -> None:
    limit = MAX_LENGTH.get(name)
    if limit is not None and len(text) > limit:
        raise FieldError(
            _("{name}: {length} characters, at most {limit} are allowed").format(
                name=name, length=f"{len(text):,}", limit=f"{limit:,}"
            )
        )


def parse_text(name: str, text: str) -> str:
    """A text field fit to store: not too long, line breaks and tabs as spaces, other control
    characters removed; a NUL character refuses the value."""
    check_length(name, text)
    try:
        return clean_text(text)
    except UnsafeText:
        raise FieldError(_("{name}: contains a NUL character").format(name=name)) from None


def parse_customer_no(text: str, name: str = "customer_no") -> str:
    """A customer number as stored and looked up: one plain token.  Surrounding white space, a
    wildcard (``*``, ``?``) or a control character would make it match, or print as, something else."""
    if text and len(text) <= MAX_LENGTH["customer_no"] and not _ODD_CUSTOMER_NO.search(text):
        return text  # nearly every row: one search
    check_length(name, text)
    if not text:
        raise FieldError(_("{name}: required").format(name=name))
    if text != text.strip():
        raise FieldError(
            _("{name}: {value} has white space around it").format(name=name, value=repr(_clip(text)))
        )
    if any(ch in _NOT_IN_CUSTOMER_NO for ch in text):
        raise FieldError(
            _("{name}: {value} holds a wildcard (* or ?)").format(name=name, value=repr(_clip(text)))
        )
    try:
        cleaned = clean_text(text)
    except UnsafeText:
        raise FieldError(_("{name}: contains a NUL character").format(name=name)) from None
    if cleaned != text:
        raise FieldError(
            _("{name}: {value} holds control characters").format(name=name, value=repr(_clip(text)))
        )
    return text


def parse_date(name: str, text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise FieldError(
            _("{name}: not a date (YYYY-MM-DD), got {value}").format(name=name, value=repr(_clip(text)))
        ) from None


def check_validity(
    valid_from: dt.date | None,
    valid_until: dt.date | None,
    names: tuple[str, str] = ("valid_from", "valid_until"),
) -> None:
    """A card valid until a day before it becomes valid would never be valid: a typing mistake."""
    if valid_from and valid_until and valid_until < valid_from:
        raise FieldError(
            _("{until_name}: {until} is before {from_name} {from_}").format(
                until_name=names[1], until=valid_until, from_name=names[0], from_=valid_from
            )
        )


def parse_status(text: str) -> CardStatus:
    if text not in CARD_STATUSES:
        raise FieldError(
            _("status: must be one of {statuses}").format(statuses=", ".join(sorted(CARD_STATUSES)))
        )
    return CardStatus(text)


def parse_consent(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FieldError(_("consent: must be yes or no (1/0, true/false)"))


#: A customer's text fields, cleaned by :func:`clean_customer` (the customer number is checked apart).
CUSTOMER_TEXT = ("name", "company", "id_number", "mobile", "usual_business", "tier", "client_manager")


def clean_customer(c: Customer) -> Customer:
    """A customer from another store (a sync from the directory) checked as an import checks a row:
    a plain customer number, text within its length and without control characters.  Raises
    :class:`FieldError`, whose message never holds the value."""
    parse_customer_no(c.customer_no)
    changes: dict[str, Any] = {}
    for name in CUSTOMER_TEXT:
        value = getattr(c, name)
        if value is not None and (cleaned := parse_text(name, value)) != value:
            changes[name] = cleaned
    return attrs.evolve(c, **changes) if changes else c


def clean_card(card: Card) -> Card:
    """A card from another store checked like a cards import row (its customer number, tier and
    branches); the EPC and TID are the core's to normalise."""
    parse_customer_no(card.customer_no)
    changes: dict[str, Any] = {}
    if card.tier is not None and (tier := parse_text("tier", card.tier)) != card.tier:
        changes["tier"] = tier
    branches = tuple(parse_text("allowed_branches", b) for b in card.allowed_branches)
    if branches != tuple(card.allowed_branches):
        changes["allowed_branches"] = branches
    return attrs.evolve(card, **changes) if changes else card


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
    """Non-blank CSV records with the physical line each starts on.  A field longer than
    :data:`CSV_FIELD_LIMIT` ends the file with :class:`CsvFileError` naming its line."""
    if csv.field_size_limit() < CSV_FIELD_LIMIT:
        csv.field_size_limit(CSV_FIELD_LIMIT)  # process-wide; only ever raised, never lowered
    reader = _Guarded(csv.reader(fh), fh)
    line = reader.line_num
    for record in reader:
        if record:
            yield line + 1, record
        line = reader.line_num


class _Guarded:
    """A csv reader whose own error (a field beyond any sane size) is a clear :class:`CsvFileError`."""

    def __init__(self, reader: Any, fh: TextIO) -> None:
        self.reader = reader
        self.name = getattr(fh, "name", "the file")

    @property
    def line_num(self) -> int:
        return self.reader.line_num

    def __iter__(self) -> _Guarded:
        return self

    def __next__(self) -> list[str]:
        try:
            return next(self.reader)
        except csv.Error as exc:
            raise CsvFileError(
                _(
                    "{file}:{line}: cannot read on ({error}); the rows before it were read, none after it"
                ).format(file=self.name, line=self.reader.line_num, error=exc)
            ) from None


def count_csv_rows(path: Path) -> int:
    """Data rows in a CSV file (records after the header, blank lines skipped): one quick pass."""
    with open_csv(path) as fh:
        return max(0, sum(1 for _record in records(fh)) - 1)


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
    a tuple (written ``SZ001;SZ002`` in the file), text cleaned (:func:`parse_text`)."""
    idx = {c: i for i, c in enumerate(columns)}
    epc_i, status_i, tid_i = idx["epc"], idx.get("status"), idx.get("tid")
    from_i, until_i, branches_i = idx.get("valid_from"), idx.get("valid_until"), idx.get("allowed_branches")
    customer_i, tier_i = idx["customer_no"], idx.get("tier")
    limits = [MAX_LENGTH[c] for c in columns]

    def convert(row: list[str]) -> tuple[Any, ...]:
        if any(map(operator.gt, map(len, row), limits)):
            for name, value in zip(columns, row, strict=True):
                check_length(name, value)
        out: list[Any] = [v or None for v in row]
        out[epc_i] = parse_hex("epc", row[epc_i])
        out[customer_i] = parse_customer_no(row[customer_i])
        if tid_i is not None and row[tid_i]:
            out[tid_i] = parse_hex("tid", row[tid_i])
        if tier_i is not None and row[tier_i]:
            out[tier_i] = parse_text("tier", row[tier_i])
        if status_i is not None:
            out[status_i] = parse_status(row[status_i] or CardStatus.ACTIVE.value).value
        for i, name in ((from_i, "valid_from"), (until_i, "valid_until")):
            if i is not None and row[i]:
                out[i] = parse_date(name, row[i])
        if from_i is not None and until_i is not None:
            check_validity(out[from_i], out[until_i])
        if branches_i is not None:
            out[branches_i] = tuple(
                b for b in parse_text("allowed_branches", row[branches_i]).split(";") if b
            )
        return tuple(out)

    return convert


def _customer_converter(columns: tuple[str, ...]) -> Converter:
    """Customers are text throughout (tier, ID number and mobile too: leading zeros matter), cleaned
    by :func:`parse_text`; only the consent columns, when present, are typed.  A row of plain text
    within every length (nearly every row) costs one search and one comparison per field."""
    consent_i = columns.index("consent") if "consent" in columns else None
    date_i = columns.index("consent_date") if "consent_date" in columns else None
    customer_i = columns.index("customer_no")
    name_i = columns.index("name") if "name" in columns else None
    text = [(i, c) for i, c in enumerate(columns) if c not in CONSENT_COLUMNS and c != "customer_no"]
    limits = [MAX_LENGTH[c] for c in columns]

    def convert(row: list[str]) -> tuple[Any, ...]:
        if any(map(operator.gt, map(len, row), limits)):
            for name, value in zip(columns, row, strict=True):
                check_length(name, value)
        out: list[Any] = [v or None for v in row]
        out[customer_i] = parse_customer_no(row[customer_i])
        if _UNSAFE_ANY.search("".join(row)):
            for i, name in text:
                if row[i]:
                    out[i] = parse_text(name, row[i]) or None
            if name_i is not None and not (out[name_i] or "").strip():
                raise FieldError(_("{name}: required").format(name="name"))
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
                raise CsvFileError(_("{file}: empty file: a header row is needed").format(file=self.path))
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
        problems = [_("unknown column {column}").format(column=repr(n)) for n in names if n not in known]
        problems += [
            _("column {column} appears twice").format(column=repr(n))
            for n in sorted({n for n in names if names.count(n) > 1})
        ]
        problems += [_("missing column {column}").format(column=repr(n)) for n in required if n not in names]
        if problems:
            known_columns = ", ".join(known)
            raise CsvFileError(
                (
                    _("{file}:1: {problems} (known cards columns: {columns})")
                    if kind == "cards"
                    else _("{file}:1: {problems} (known customers columns: {columns})")
                ).format(file=self.path, problems=_("; ").join(problems), columns=known_columns)
            )
        return kind, required, tuple(names)

    def rows(self) -> Iterator[tuple[int, tuple[Any, ...]]]:
        result, width = self.result, len(self.columns)
        convert = (_card_converter if self.kind == "cards" else _customer_converter)(self.columns)
        required_idx = [(self.columns.index(c), c) for c in self.required]
        for line, row in self._records:
            result.rows += 1
            if len(row) != width:
                result.reject(
                    line, _("{fields} fields, the header has {width}").format(fields=len(row), width=width)
                )
                continue
            blank = next((c for i, c in required_idx if not row[i].strip()), None)
            if blank is not None:
                result.reject(line, _("{name}: required").format(name=blank))
                continue
            try:
                "".join(row).encode("utf-8")
            except UnicodeEncodeError:
                result.reject(line, _("not valid UTF-8"))
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
