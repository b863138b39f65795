"""The branch web's scripts in the viewer's language: ``/i18n/catalogue.js`` defines
``window.gettext(message)``, ``window.ngettext(singular, plural, n)`` and
``gettext.format(message, {field: value})`` over the translations of exactly the messages that
``static/*.js`` mark, in the request's language (:func:`vipsense.i18n.current`, which the app sets
per request).  One catalogue, the core's: the scripts need no build step and no second file to keep.

Caching: the script's language follows the request (the account's setting, read from the session
cookie, then the branch's, then ``Accept-Language``), so the same URL gives different bodies.  It is
served ``private, no-cache`` with ``Vary: Cookie, Accept-Language`` and an ETag naming the language
and the translations: a browser revalidates on each page (a cheap 304) and so picks up a changed
language setting at once, and no shared cache ever hands one viewer another's language.  A locale in
the URL would let the page choose a language the request did not, which is what we want to avoid.
"""

from __future__ import annotations

import gettext as gnu
import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.extract import extract_from_file
from babel.messages.plurals import get_plural
from flask import Blueprint, Response, request

from .. import i18n

bp = Blueprint("jscatalogue", __name__)

STATIC = Path(__file__).resolve().parent / "static"
#: the marking functions the scripts use, as Babel's JavaScript extractor is told of them
KEYWORDS: dict[str, Any] = {"gettext": None, "ngettext": (1, 2)}

Message = str | tuple[str, str]


@cache
def marked() -> tuple[Message, ...]:
    """The messages the static scripts mark, found once (the scripts change only with a release)."""
    found: dict[Message, None] = {}
    for path in sorted(STATIC.glob("*.js")):
        for _lineno, message, _comments, _context in extract_from_file(
            "javascript", str(path), keywords=KEYWORDS, strip_comment_tags=True
        ):
            if isinstance(message, tuple):
                found[(message[0], message[1])] = None
            elif message:
                found[message] = None
    return tuple(found)


def _plural_rule(locale: str) -> tuple[int, str]:
    """How many plural forms ``locale`` has and gettext's expression choosing one (``(n != 1)``):
    the same table the catalogue's own header comes from."""
    rule = get_plural(locale)
    return rule.num_plurals, rule.plural_expr


@cache
def translations(locale: str) -> dict[str, str | list[str]]:
    """Each marked message in ``locale``: a string, or a plural message's forms by index."""
    count, expression = _plural_rule(locale)
    choose = gnu.c2py(expression)
    witness: dict[int, int] = {}  # one number that takes each form, to ask gettext for that form
    for n in range(1000):
        witness.setdefault(choose(n), n)
    out: dict[str, str | list[str]] = {}
    with i18n.using(locale):
        for message in marked():
            if isinstance(message, tuple):
                singular, plural = message
                out[singular] = [i18n.ngettext(singular, plural, witness[i]) for i in range(count)]
            else:
                out[message] = i18n.gettext(message)
    return out


SCRIPT = """\
/* vipsense: the scripts' messages in this page's language ({locale}), from the core's catalogue. */
"use strict";
(function () {{
  const messages = {messages};
  const plural = (n) => Number({plural});
  function gettext(message) {{
    const t = messages[message];
    return typeof t === "string" && t ? t : message;
  }}
  function ngettext(singular, plural_, n) {{
    const forms = messages[singular];
    const t = Array.isArray(forms) ? forms[plural(n)] : undefined;
    return t || (n === 1 ? singular : plural_);
  }}
  /* str.format's named fields, as the Python side fills them: {{name}}, and {{{{ }}}} for braces */
  gettext.format = function (message, fields) {{
    return message.replace(/\\{{\\{{|\\}}\\}}|\\{{(\\w+)\\}}/g, (whole, name) => {{
      if (whole === "{{{{") return "{{";
      if (whole === "}}}}") return "}}";
      return fields && Object.prototype.hasOwnProperty.call(fields, name) ? String(fields[name]) : whole;
    }});
  }};
  window.gettext = gettext;
  window.ngettext = ngettext;
}})();
"""


def safe_json(value: object) -> str:
    """JSON that stays inside a script whatever a translation holds: no ``</script>``, no
    ``<!--``, no line separators that older parsers end a string at."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


@cache
def script(locale: str) -> tuple[str, str]:
    """The script for ``locale`` and its ETag."""
    _count, expression = _plural_rule(locale)
    body = SCRIPT.format(locale=locale, messages=safe_json(translations(locale)), plural=expression)
    tag = f"{locale}-{hashlib.sha256(body.encode()).hexdigest()[:16]}"
    return body, tag


@bp.route("/i18n/catalogue.js")
def catalogue() -> Response:
    body, tag = script(i18n.current())
    response = Response(body, content_type="text/javascript; charset=utf-8")
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "Cookie, Accept-Language"
    response.set_etag(tag)
    response.make_conditional(request)  # a 304 when the browser holds this language's script
    return response
