"""The states of the branch's devices, one enum for readers, stores and notifiers: what the runners
set, the status page shows and the CLI's status line counts."""

from __future__ import annotations

import enum

from .i18n import lazy_gettext


class DeviceState(str, enum.Enum):
    """The state of a reader, store or notifier, one list for all three (the status page reads it)."""

    STARTING = "starting"  #: opening; a store's arrivals wait for it during its start-up grace period
    CONNECTED = "connected"  #: a reader's device is open and reading
    DISCONNECTED = "disconnected"  #: a reader's link is lost: the core calls ``run`` again after a backoff
    FAILED = "failed"  #: the factory failed: the device cannot start until the profile changes
    FINISHED = "finished"  #: a reader's ``run`` returned by itself (a replay that reached its end)
    STOPPED = "stopped"
    READY = "ready"  #: a store or notifier answers
    DEGRADED = "degraded"  #: it answers, but not fully (a store from its cache, a notifier retrying)
    UNAVAILABLE = "unavailable"  #: a store cannot answer (cannot open, or its look-ups fail)
    STUCK = "stuck"  #: a store's call has not returned: look-ups skip it until it does

    def __str__(self) -> str:  # "connected" in messages and logs, as the plain strings were
        return self.value

    #: a state and its word are one key: a snapshot's ``"ready"`` finds ``DeviceState.READY``
    __hash__ = str.__hash__

    @property
    def label(self) -> str:
        """The state as staff read it, in the language in force (the value stays English: files,
        the API and logs use it)."""
        return label(self.value)


#: each state's word on screens: made at import, translated each time it is shown
LABELS = {
    DeviceState.STARTING: lazy_gettext("starting"),
    DeviceState.CONNECTED: lazy_gettext("connected"),
    DeviceState.DISCONNECTED: lazy_gettext("disconnected"),
    DeviceState.FAILED: lazy_gettext("failed"),
    DeviceState.FINISHED: lazy_gettext("finished"),
    DeviceState.STOPPED: lazy_gettext("stopped"),
    DeviceState.READY: lazy_gettext("ready"),
    DeviceState.DEGRADED: lazy_gettext("degraded"),
    DeviceState.UNAVAILABLE: lazy_gettext("unavailable"),
    DeviceState.STUCK: lazy_gettext("stuck"),
}


_VALUES = frozenset(s.value for s in DeviceState)


def label(state: str) -> str:
    """A state (``"ready"`` or ``DeviceState.READY``) as staff read it; a word that is no state
    (a snapshot's ``"unknown"``) as it is."""
    found = LABELS.get(DeviceState(state)) if state in _VALUES else None
    return str(found) if found is not None else str(state)


__all__ = ["LABELS", "DeviceState", "label"]
