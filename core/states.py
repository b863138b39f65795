"""The states of the branch's devices, one enum for readers, stores and notifiers: what the runners
set, the status page shows and the CLI's status line counts."""

from __future__ import annotations

import enum


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


__all__ = ["DeviceState"]
