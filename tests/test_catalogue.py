"""The Chinese catalogue is complete and well formed: every message the code, templates and scripts
mark is translated, each translation fills the fields its message has, the compiled catalogue the
program loads is the one its source gives, and no template shows text that bypasses the catalogue."""

from __future__ import annotations

import re

from . import catalogue
from .catalogue import REPO

TEMPLATES = REPO / "core" / "web" / "templates"
#: what a page may show as written, in every language: names, codes and units
PROPER = {"vipsense", "VIP", "EPC", "ID", "API", "PDA", "SMS", "RSSI", "dBm", "ms", "TLS", "OK", "UTC", "TID"}


def test_every_message_is_translated():
    untranslated = catalogue.missing()
    assert untranslated == [], (
        f"{len(untranslated)} message(s) without a Chinese translation (python -m tests.catalogue "
        f"missing; add them with python -m tests.catalogue merge FILE.json): {untranslated[:20]}"
    )


def test_fields_are_read_in_both_styles():
    assert catalogue.fields("{name} at {time:%H:%M} ({count:,})") == {"name", "time", "count"}
    assert catalogue.fields("%(prog)s: error: %(message)s") == {"%(prog)s", "%(message)s"}
    assert catalogue.fields("not allowed with argument %s, got %r") == {"%0s", "%1r"}
    assert catalogue.fields("不允许与参数 %s 同用") != catalogue.fields(
        "not allowed with argument %s, got %r"
    )
    assert catalogue.fields("{{literal}} 95% of reads") == set()


def test_each_translation_fills_the_fields_of_its_message():
    assert catalogue.field_mismatches() == []


def test_the_compiled_catalogue_is_its_source_compiled():
    stale = catalogue.stale(catalogue.MO, catalogue.read())
    assert not stale, "the .mo is stale: python -m tests.catalogue update"


def literal_text(template: str) -> list[str]:
    """Words in a template that no ``{{ _(...) }}`` or ``{% trans %}`` marks: what is left once the
    Jinja tags, comments, scripts, styles and HTML tags are taken out, and the text of attributes
    people read (``title``, ``placeholder``, ``aria-label``, ``alt``)."""
    text = re.sub(r"\{#.*?#\}", " ", template, flags=re.S)
    text = re.sub(r"\{%\s*trans\b.*?\{%\s*endtrans\s*%\}", " ", text, flags=re.S)
    readable = re.findall(r"""\b(?:title|placeholder|aria-label|alt)\s*=\s*"([^"{]*)\"""", text)
    text = re.sub(r"\{%.*?%\}|\{\{.*?\}\}", " ", text, flags=re.S)
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", text, flags=re.S | re.I)
    text = re.sub(r"<[^>]*>", " ", text, flags=re.S)
    text = re.sub(r"&[a-z]+;|&#\d+;", " ", text)
    words = re.findall(r"[A-Za-z][A-Za-z'’-]*|[\u4e00-\u9fff]+", " ".join([text, *readable]))
    return [w for w in words if w not in PROPER]


def test_the_literal_text_check_sees_text_outside_the_catalogue():
    page = '<p title="Refresh">Hello {{ _("kept") }} {% trans %}also kept{% endtrans %} 贵宾</p>'
    assert literal_text(page) == ["Hello", "贵宾", "Refresh"]


def test_templates_show_no_text_outside_the_catalogue():
    found = {
        p.name: words
        for p in sorted(TEMPLATES.glob("*.html"))
        if (words := literal_text(p.read_text(encoding="utf-8")))
    }
    assert found == {}
