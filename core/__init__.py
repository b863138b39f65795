"""vipsense: recognise a bank's VIP customers at the branch door from their UHF RFID card.

Plugins import :data:`hookimpl` from here to mark their hook implementations.
"""

import pluggy

__version__ = "0.1.0"

PROJECT = "vipsense"

#: Marker for hook implementations: ``@vipsense.hookimpl``.
hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "__version__", "hookimpl"]
