"""The translation catalogue, kept by one tool: ``python -m tests.catalogue update`` finds every marked
message in the code, templates and scripts (Babel's extractors), adds the new ones to the Chinese
catalogue, drops the ones no longer used and compiles the catalogue the program loads.

    python -m tests.catalogue update            # after changing messages: then translate the new ones
    python -m tests.catalogue missing [PATH...] # messages (under PATH...) still without a translation
    python -m tests.catalogue merge FILE.json   # add translations {"message": "译文", ...}

``tests/test_catalogue.py`` runs the same checks: every message translated, the same ``{fields}``
in the message and its translation, and the compiled catalogue up to date with its source.
"""

from __future__ import annotations

import contextlib
import fcntl
import gettext
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po

import vipsense
from vipsense import i18n

REPO = Path(__file__).resolve().parent.parent
PO = i18n.CATALOGUES / "zh_CN" / "LC_MESSAGES" / f"{i18n.DOMAIN}.po"
MO = PO.with_suffix(".mo")
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "lazy_gettext": None}
#: where messages are: the core and the built-in plugins (one distribution, one catalogue), the
#: web's templates and its scripts
SOURCES = (
    (
        REPO / "core",
        [
            ("**.py", "python"),
            ("web/templates/**.html", "jinja2"),
            ("web/static/**.js", "javascript"),
            ("centreweb/templates/**.html", "jinja2"),
            ("centreweb/static/**.js", "javascript"),
        ],
    ),
    (REPO / "plugins", [("**.py", "python")]),
)
OPTIONS = {
    "web/templates/**.html": {"extensions": "jinja2.ext.do"},
    "centreweb/templates/**.html": {"extensions": "jinja2.ext.do"},
}
FIELD = re.compile(r"(?<!\{)\{([^{}]*)\}(?!\})")
#: a %-style field, as argparse's messages have them: ``%(prog)s``, ``%s``, ``%r``
PERCENT = re.compile(r"%(?:\((\w+)\))?[#0 +-]?\d*(?:\.\d+)?([srdifgxX])")


def extract() -> Catalog:
    """Every message marked in the sources, with where it is."""
    template = Catalog(project="vipsense", domain=i18n.DOMAIN)
    for folder, method_map in SOURCES:
        for filename, lineno, message, comments, context in extract_from_dir(
            str(folder), method_map, options_map=OPTIONS, keywords=KEYWORDS, strip_comment_tags=True
        ):
            where = (str((folder / filename).relative_to(REPO)), lineno)
            template.add(message, None, [where], auto_comments=comments, context=context)
    return template


def new_catalog() -> Catalog:
    return Catalog(
        locale="zh_CN",
        domain=i18n.DOMAIN,
        project="vipsense",
        version=vipsense.__version__,
        copyright_holder="the vipsense authors",
        msgid_bugs_address="https://github.com/vipsense/vipsense/issues",
        last_translator="the vipsense authors",
        language_team="vipsense <zh_CN>",
        fuzzy=False,
    )


def read() -> Catalog:
    with PO.open("rb") as f:
        return read_po(f, locale="zh_CN", domain=i18n.DOMAIN)


def write(catalog: Catalog) -> None:
    PO.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    write_po(buffer, catalog, width=100, omit_header=False, sort_output=True, ignore_obsolete=True)
    PO.write_bytes(buffer.getvalue())
    MO.write_bytes(compiled(catalog))


def messages_of_mo(data: bytes) -> dict[object, str]:
    """What a compiled catalogue translates, as gettext reads it, less its header: the header names
    the Babel version that compiled it, which is no part of the translations."""
    translations = gettext.GNUTranslations(io.BytesIO(data))
    return {k: v for k, v in translations._catalog.items() if k != ""}  # type: ignore[attr-defined]


def stale(mo: Path, catalog: Catalog) -> bool:
    """Whether the compiled catalogue ``mo`` translates otherwise than its source ``catalog`` does."""
    return messages_of_mo(mo.read_bytes()) != messages_of_mo(compiled(catalog))


def compiled(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    return buffer.getvalue()


@contextlib.contextmanager
def locked() -> Iterator[Catalog]:
    """The catalogue, read and written under a lock, so two people merging at once lose nothing."""
    PO.parent.mkdir(parents=True, exist_ok=True)
    with PO.open("ab") as lock:  # the catalogue itself is the lock: nothing to clean up
        fcntl.flock(lock, fcntl.LOCK_EX)
        catalog = read() if PO.stat().st_size else new_catalog()
        yield catalog
        catalog.fuzzy = False
        write(catalog)


def update() -> int:
    """Add new messages, drop unused ones, keep every translation; the number of new messages."""
    template = extract()
    with locked() as catalog:
        before = {m.id for m in catalog if m.id}
        template.creation_date = catalog.creation_date  # the header changes only when messages do
        catalog.update(template, no_fuzzy_matching=True)
        for m in catalog:  # a message that became plural keeps its one Chinese form for every form
            if m.id and m.pluralizable and isinstance(m.string, tuple) and m.string[0] and not all(m.string):
                m.string = (m.string[0],) * catalog.num_plurals
                m.flags.discard("fuzzy")
        return len({m.id for m in catalog if m.id} - before)


def merge(translations: dict[str, str]) -> int:
    """Add or replace translations, keyed by the message (a plural message by its singular; Chinese
    has one form, so the translation fills every form).  A message not yet in the sources is added
    as it is (``update`` later gives it its place in the sources, or drops it if none uses it)."""
    plurals = {m.id[0]: m.id for m in extract() if isinstance(m.id, tuple)}
    with locked() as catalog:
        for message, translation in translations.items():
            msgid = plurals.get(message, message)
            string: str | tuple[str, ...] = (
                (translation,) * catalog.num_plurals if isinstance(msgid, tuple) else translation
            )
            entry = catalog.get(message)
            if entry is not None and entry.id != msgid:  # was added as a singular before its source
                catalog.delete(message)
                entry = None
            if entry is None:
                catalog.add(msgid, string)
            else:
                entry.string = string
                entry.flags.discard("fuzzy")
    return len(translations)


def fields(text: str) -> set[str]:
    """``{name}`` and ``{count:,}`` fields by name, and %-style ones (``%(prog)s`` by name, ``%s`` by
    place): the translation must fill the same ones."""
    braces = {f.split(":")[0].split("!")[0] for f in FIELD.findall(text)}
    percents = [(name, conversion) for name, conversion in PERCENT.findall(text)]
    unnamed = [c for name, c in percents if not name]
    return (
        braces
        | {f"%({name}){c}" for name, c in percents if name}
        | {f"%{place}{c}" for place, c in enumerate(unnamed)}
    )


def missing(under: tuple[str, ...] = ()) -> list[str]:
    """Messages the sources use (those under the given paths, when some are given) that have no
    Chinese translation."""
    catalog = read() if PO.exists() else Catalog(locale="zh_CN")
    found = []
    for m in extract():
        if not m.id or (under and not any(f.startswith(under) for f, _ in m.locations)):
            continue
        entry = catalog.get(m.id)
        if entry is None or not _translated(entry.string):
            found.append(m.id if isinstance(m.id, str) else m.id[0])
    return found


def _translated(string: object) -> bool:
    if isinstance(string, tuple):
        return all(string)
    return bool(string)


def field_mismatches() -> list[str]:
    wrong = []
    for m in read():
        if not m.id or not _translated(m.string):
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        strings = m.string if isinstance(m.string, tuple) else (m.string,)
        want = set().union(*(fields(i) for i in ids))
        for s in strings:
            if fields(s) != want:
                wrong.append(f"{ids[0]!r}: fields {sorted(want)}, translation has {sorted(fields(s))}")
    return wrong


def main(argv: list[str]) -> int:
    if argv[:1] == ["update"]:
        print(f"{update()} new message(s); {len(missing())} without a translation")
        return 0
    if argv[:1] == ["missing"]:
        for message in missing(tuple(argv[1:])):
            print(json.dumps(message, ensure_ascii=False))
        return 0
    if argv[:1] == ["merge"] and len(argv) == 2:
        data = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
        print(f"{merge(data)} translation(s) merged")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
