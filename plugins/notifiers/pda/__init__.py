"""Staff PDAs on the branch LAN: found with zeroconf, told of arrivals by signed pushes, and
acknowledging them back.  Two halves:

* the ``pda`` notifier type (the hub side, :mod:`.notifier`)::

      notifiers:
        - id: pda
          type: pda
          key: !secret pda_key            # the branch key the PDAs hold too (a demo whose
                                          # PDAs are all emulated leaves it out: one per run)
          interfaces: [192.168.10.5]      # the branch LAN address: never all interfaces

* the PDA agent (:mod:`.agent`), the program a handheld runs: ``vipsense pda --name ... --role lobby
  --staff-id ... --branch ...``, or ``python -m vipsense.plugins.notifiers.pda.agent``.

The wire protocol is in :mod:`.protocol`; ``docs/pda.md`` covers running it and the security notes.
zeroconf is imported only when a notifier is built or an agent runs.
"""

from __future__ import annotations

import argparse

import vipsense
from vipsense.api import Notifier, PluginContext, RegisterCommand, RegisterType
from vipsense.i18n import lazy_gettext

from .settings import EmulatedPda, PdaSettings

__all__ = ["EmulatedPda", "PdaSettings", "make_notifier"]


def make_notifier(settings: PdaSettings, ctx: PluginContext) -> Notifier:
    from .notifier import PdaNotifier

    return PdaNotifier(settings, ctx)


@vipsense.hookimpl
def vipsense_register_notifier_types(register: RegisterType) -> None:
    register(
        "pda",
        PdaSettings,
        make_notifier,
        summary=lazy_gettext(
            "pushes arrivals to staff PDAs found on the branch LAN with zeroconf (signed, acknowledged)"
        ),
    )


def _configure(parser: argparse.ArgumentParser) -> None:
    from .agent import configure  # only when 'vipsense pda' itself is run: every command loads plugins

    configure(parser)


@vipsense.hookimpl
def vipsense_register_commands(register: RegisterCommand) -> None:
    register("pda", _configure, help=lazy_gettext("run the PDA agent on a staff handheld"))
