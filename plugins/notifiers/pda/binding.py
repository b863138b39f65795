"""Which hub instance a PDA takes pushes from, and when it moves to another one.

Each start of a hub is a new instance with a random id (:func:`.protocol.new_instance_id`).  Two hubs
of one branch id can be on one network at once (two demos on one machine, a test hub left running), and
both hold a key the PDA accepts or not; the instance id keeps them apart.  The rules:

* **Pinned** (``--hub-instance ID``, the demo's emulated PDAs): that instance only, for good.
* Otherwise the **first verified push** binds the PDA to the instance that sent it.
* A bound PDA moves to a new instance of its branch's hub once the bound one is **gone**: its
  acknowledgement server no longer answers as that instance (refused, no answer within a second, or
  answered by another instance, which names itself in ``X-Vipsense-Hub``).  That is asked when

  - the hub's announcement under the bound instance's service name names another instance: the hub
    restarted and took its name back (zeroconf gives a name to one responder at a time, so a second
    hub running beside the first is announced under another name: ``allow_name_change``,
    ``zeroconf.md`` §1-3);
  - or a verified push comes from another instance.

  So a handheld keeps working when its hub restarts, while a second hub of the same branch id that
  runs at the same time never takes it over, nor does a spoofed announcement.

* Any other push from another instance is refused (HTTP 421), with one line per foreign instance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import attrs

from vipsense.i18n import _

from .protocol import MISDIRECTED, check_instance

MAX_REFUSED_NOTED = 64  #: foreign instances remembered so that each is reported once


@attrs.frozen
class Verdict:
    """What to do with a verified push from one hub instance."""

    accept: bool
    error: str = ""  #: the answer's ``error`` when refused
    say: str = ""  #: a line for the PDA's screen, or empty (a refusal is reported once per instance)


class HubBinding:
    """The hub instance this PDA is bound to.  Thread-safe: pushes and zeroconf call it at once.

    ``still_there(instance)`` answers whether that instance's acknowledgement server still answers as
    it (it may take a second: it is called without the lock held).  ``table()`` lists the hub
    announcements present now as ``(service name, instance)``.
    """

    def __init__(
        self,
        pinned: str | None = None,
        still_there: Callable[[str], bool] = lambda instance: True,
        table: Callable[[], Iterable[tuple[str, str]]] = tuple,
    ) -> None:
        self.pinned = check_instance(pinned) if pinned is not None else None
        self._bound: str | None = self.pinned
        self._bound_name: str | None = None  #: the service name the bound instance announced itself as
        self._still_there = still_there
        self._table = table
        self._refused: dict[str, None] = {}  #: foreign instances already reported, oldest first
        self._lock = threading.Lock()

    @property
    def bound(self) -> str | None:
        with self._lock:
            return self._bound

    def admit(self, instance: str) -> Verdict:
        """Whether to take a push (already verified, for this staff member and branch) from ``instance``."""
        with self._lock:
            bound = self._bound
            if bound is None:
                self._bind(instance)
                return Verdict(True, say=_("bound to hub instance {instance}").format(instance=instance))
            if instance == bound:
                return Verdict(True)
        if self.pinned is None and not self._still_there(bound):
            with self._lock:
                if self._bound == bound:
                    self._bind(instance)
                    say = _("bound to hub instance {instance}: instance {old} no longer answers")
                    return Verdict(True, say=say.format(instance=instance, old=bound))
                current = self._bound
            if instance == current:  # another push moved us there meanwhile
                return Verdict(True)
            bound = current or bound
        with self._lock:
            first = instance not in self._refused
            if first:
                self._refused[instance] = None
                while len(self._refused) > MAX_REFUSED_NOTED:
                    del self._refused[next(iter(self._refused))]
        kind = "pinned" if self.pinned is not None else "bound"
        if self.pinned is not None:
            say = _("push refused ({status}): from hub instance {instance}; this PDA is pinned to {bound}")
        else:
            say = _("push refused ({status}): from hub instance {instance}; this PDA is bound to {bound}")
        say = say.format(status=MISDIRECTED, instance=instance, bound=bound)
        return Verdict(False, error=f"this PDA is {kind} to hub instance {bound}", say=say if first else "")

    def announced(self, service_name: str, instance: str) -> str | None:
        """A hub of this branch announced itself (appeared or updated).  Quick, for zeroconf's thread:
        the instance this PDA is bound to when ``instance`` now holds that one's service name (the
        hub may have restarted: ask :meth:`follow`), else ``None``."""
        with self._lock:
            if self._bound is None:
                return None
            if instance == self._bound:
                self._bound_name = service_name
                return None
            if self.pinned is not None or service_name != self._bound_name:
                return None
            return self._bound

    def follow(self, old: str, new: str, service_name: str) -> str:
        """Move from ``old`` to ``new``, which took over ``old``'s service name, if ``old`` is gone
        (this may take a second: not on zeroconf's thread).  A line to show if it moved, else empty."""
        if self._still_there(old):
            return ""
        with self._lock:
            if self._bound != old:
                return ""
            self._bind(new)
            self._bound_name = service_name
        text = _("bound to hub instance {instance}: it now announces {name!r}, and {old} no longer answers")
        return text.format(instance=new, name=service_name, old=old)

    def _bind(self, instance: str) -> None:
        """Move to ``instance`` (lock held) and look up the name it announces itself as, if seen yet."""
        self._bound = instance
        self._bound_name = next((name for name, seen in self._table() if seen == instance), None)
        self._refused.pop(instance, None)
