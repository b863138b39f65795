"""A reader that replays a scenario: who walks in when, how long they linger, at what read rate,
signal strength and antenna.  It needs no hardware, so the demo branch and the tests run anywhere.

The scenario lives in the profile, so its mistakes are reported with file and line like any other::

    readers:
      - id: door
        type: simulated
        visitors:
          - {card: E2801160600002084C1A0001, at: 5s, stay: 20s, rate: 10, rssi: -50}
          - {card: E2801160600002084C1A00FF, at: 40s, reads: 2, rssi: -79}   # a passer-by

The replay itself is :mod:`vipsense.replay`, shared with emulated hardware readers, which feed the
same scenario through a real reader protocol.
"""

from __future__ import annotations

import vipsense
from vipsense.api import RegisterType
from vipsense.i18n import lazy_gettext
from vipsense.replay import SimulatedReader, SimulatedSettings


@vipsense.hookimpl
def vipsense_register_reader_types(register: RegisterType) -> None:
    register(
        "simulated",
        SimulatedSettings,
        lambda settings, ctx: SimulatedReader(settings),
        summary=lazy_gettext("replays a scenario of visitors; no hardware needed"),
    )
