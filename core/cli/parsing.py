"""argparse's own words ("usage:", "options", "the following arguments are required: ...") in the
language in force, from vipsense's catalogue.

argparse translates every word it prints with the ``_`` and ``ngettext`` it imported from
:mod:`gettext`, looked up in its module each time a message is made: the hook the standard library
gives for translating it.  :func:`install` points those two names at :mod:`vipsense.i18n`, so
argparse follows ``LANG`` (and ``C`` means Chinese) exactly as our own messages do, instead of
the process-wide ``gettext`` domain.  Its messages are listed in :func:`argparse_messages` so the
catalogue extractor finds them (they are not in our sources otherwise); ``tests/test_cli_i18n.py``
checks the list against the argparse that is running.
"""

from __future__ import annotations

import argparse

from .. import i18n


def install() -> None:
    """Route argparse's messages through vipsense's catalogue (idempotent; only this process)."""
    argparse._ = i18n.gettext  # type: ignore[attr-defined]
    argparse.ngettext = i18n.ngettext  # type: ignore[attr-defined]


def argparse_messages() -> list[str]:
    """Every message argparse (Python 3.11) translates, in the language in force: written out here,
    marked, so that the catalogue holds them."""
    _ = i18n.gettext
    ngettext = i18n.ngettext
    return [
        _("usage: "),
        _("argument %(argument_name)s: %(message)s"),
        _("conflicting subparser: %s"),
        _("conflicting subparser alias: %s"),
        _("unknown parser %(parser_name)r (choices: %(choices)s)"),
        _('argument "-" with mode %r'),
        _("can't open '%(filename)s': %(error)s"),
        _("mutually exclusive arguments must be optional"),
        _("positional arguments"),
        _("options"),
        _("show this help message and exit"),
        _("cannot have multiple subparser arguments"),
        _("unrecognized arguments: %s"),
        _("not allowed with argument %s"),
        _("ignored explicit argument %r"),
        _("the following arguments are required: %s"),
        _("one of the arguments %s is required"),
        _("expected one argument"),
        _("expected at most one argument"),
        _("expected at least one argument"),
        ngettext("expected %s argument", "expected %s arguments", 1),
        _("ambiguous option: %(option)s could match %(matches)s"),
        _("unexpected option string: %s"),
        _("%r is not callable"),
        _("invalid %(type)s value: %(value)r"),
        _("invalid choice: %(value)r (choose from %(choices)s)"),
        _("%(prog)s: error: %(message)s\n"),
    ]


def argparse_msgids() -> list[str]:
    """argparse's messages as written, in English (what its test compares with argparse's source)."""
    with i18n.using("en"):
        return argparse_messages()
