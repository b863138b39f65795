"""Hook specifications: the whole contract between the vipsense core and its plugins.

There are two families of hooks, and no other kind:

* **Registration hooks** (``vipsense_register_*``) are called once, while plugins load.  Each receives a
  ``register`` callable through which the plugin contributes *types*: a type name, an attrs settings
  class and a factory.  A branch profile then names the type (``type: thingmagic``) and the core calls
  the factory with the structured settings.  All per-device work happens in methods of the object the
  factory returns (:class:`vipsense.api.Reader`, :class:`~vipsense.api.IdentityStore`,
  :class:`~vipsense.api.Notifier`), never through hooks.

* **Broadcast hooks** (every other hook) tell observing plugins what the pipeline did.  The core calls
  every implementation, one at a time, in pluggy's order: the last registered first, except that
  ``@vipsense.hookimpl(tryfirst=True)`` runs before and ``trylast=True`` after the others, and a
  ``wrapper=True`` implementation runs around them all.  An implementation that raises is logged with its
  plugin's name, counted in the branch status and skipped, and the others still run.  Broadcast hooks
  return nothing.  They run on the pipeline thread, so they must return quickly: hand slow work to a
  thread of your own.

No hook here uses ``firstresult``: registration collects from every plugin and broadcasts fan out.

Implement a hook by naming a function after it in a module listed under the ``vipsense`` entry-point
group, marked with ``@vipsense.hookimpl``::

    @vipsense.hookimpl
    def vipsense_register_reader_types(register):
        register("acme-door", AcmeSettings, AcmeReader, summary="ACME door reader over TCP")
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from . import PROJECT

if TYPE_CHECKING:
    from .api import ReaderStatus, RegisterCommand, RegisterType
    from .branch import Branch
    from .model import Acknowledgement, Arrival, DeliveryResult, Notification, Visit
    from .storage.auditanchors import Anchor

hookspec = pluggy.HookspecMarker(PROJECT)


# -------------------------------------------------------------------------------------------------
# Registration hooks: called once per plugin while plugins load.
# -------------------------------------------------------------------------------------------------


@hookspec
def vipsense_register_reader_types(register: RegisterType) -> None:
    """Contribute reader driver types.

    Called once per plugin, right after the plugin is loaded and before any profile is read.

    :param register: call ``register(name, settings_class, factory, summary="")`` once per type.

        - ``name``: the ``type:`` a profile uses, lower case letters, digits and ``-``.
        - ``settings_class``: a frozen attrs class.  The profile item's keys, minus ``id`` and
          ``type``, are structured into it; unknown keys are errors.
        - ``factory``: ``factory(settings, context) -> vipsense.api.Reader``, called when a branch
          starts (never by ``vipsense check``).  ``context`` is a :class:`vipsense.api.PluginContext`.
          Import vendor SDKs inside the factory, not at module level.
        - ``summary``: one line for ``vipsense plugins``.

    A name that another plugin already registered is refused and the plugin is marked failed.
    """


@hookspec
def vipsense_register_store_types(register: RegisterType) -> None:
    """Contribute identity store types (where cards and customers are looked up).

    Called once per plugin while plugins load, exactly like :func:`vipsense_register_reader_types`.
    Stores are tried in profile order and the first hit wins; the core enforces each store's
    ``timeout``, so a store need not.

    :param register: ``register(name, settings_class, factory, summary="")``, as for readers; the
        factory returns a :class:`vipsense.api.IdentityStore`.  A profile's store item may also set
        ``timeout`` (default 500 ms), which the core handles, so settings classes must not use it.
    """


@hookspec
def vipsense_register_notifier_types(register: RegisterType) -> None:
    """Contribute notifier types (how staff are told).

    Called once per plugin while plugins load, exactly like :func:`vipsense_register_reader_types`.

    :param register: ``register(name, settings_class, factory, summary="")``, as for readers; the
        factory returns a :class:`vipsense.api.Notifier`, whose ``send`` runs on a worker thread
        of its own.  A profile's notifier item may also set ``retry: {first: 1s, max: 15s}`` (the
        defaults), which the core handles: a failed ``send`` is tried again after ``first``, the
        wait doubling up to ``max``, until the notification expires.  Settings classes must not
        use ``retry``.  ``send`` may be called again for a notification it already delivered
        (after a crash): pass ``notification.key`` on so the receiver shows it once.
    """


@hookspec
def vipsense_register_uplink_types(register: RegisterType) -> None:
    """Contribute uplink types: how a branch carries its reports to the VIP service centre (the
    built-in ``https`` posts them to the centre's ingest API).  A bank replaces HTTPS with its own
    bus by registering a type and naming it in the profile: ``centre: {transport: acme-bus, ...}``.

    Called once per plugin while plugins load, exactly like :func:`vipsense_register_reader_types`.

    :param register: ``register(name, settings_class, factory, summary="")``, as for readers.  The
        settings class is structured from nothing yet (every field needs a default); the factory is
        called as ``factory(settings, context)`` with a :class:`vipsense.api.UplinkContext` (the
        centre's URL, the timeout, the CA file, the branch) when the branch starts, and returns an
        object with ``send(body: bytes, headers: dict[str, str]) -> tuple[int, bytes]`` (an
        HTTP-like status and the answer's body; the headers carry the branch id and the signature)
        and ``close()``.  ``send`` runs on the shipper's thread, one request at a time, and raises
        :class:`vipsense.api.UplinkUnavailable` when the centre cannot be reached (the shipper
        backs off and tries again; nothing is lost).
    """


@hookspec
def vipsense_register_commands(register: RegisterCommand) -> None:
    """Contribute ``vipsense`` subcommands: programs that belong with a plugin, such as the agent
    a PDA runs or a vendor's reader set-up tool.

    Called once per plugin while plugins load.

    :param register: call ``register(name, configure, help="")`` once per command.

        - ``name``: the subcommand, lower case letters, digits and ``-``; it may not shadow a
          built-in command or another plugin's.
        - ``configure(parser)``: adds the command's arguments to its ``argparse`` parser and calls
          ``parser.set_defaults(func=run)``, where ``run(args) -> int`` returns the exit code.
        - ``help``: one line for ``vipsense --help``.
    """


# -------------------------------------------------------------------------------------------------
# Broadcast hooks: the branch's lifecycle.
# -------------------------------------------------------------------------------------------------


@hookspec
def vipsense_branch_started(branch: Branch) -> None:
    """The branch is running: devices are open and reads flow.

    Called once, on the main thread, after every reader, store and notifier was built.  Observers keep
    ``branch`` to read ``branch.status`` (a live :class:`vipsense.status.BranchStatus`) later.

    :param branch: the running branch.
    """


@hookspec
def vipsense_branch_stopped(branch: Branch) -> None:
    """The branch has stopped: readers are closed and every recorded visit is flushed.

    Called once, on the main thread, as the last thing the branch does.

    :param branch: the stopped branch.
    """


# -------------------------------------------------------------------------------------------------
# Broadcast hooks: the arrival pipeline, in the order events happen.
# -------------------------------------------------------------------------------------------------


@hookspec
def vipsense_reader_status_changed(reader_id: str, status: ReaderStatus) -> None:
    """A reader's state changed: connecting, connected, disconnected (with a reason), finished.

    Called on the pipeline thread after the change, once per change.

    :param reader_id: the reader's ``id`` in the profile.
    :param status: the new :class:`vipsense.api.ReaderStatus`.
    """


@hookspec
def vipsense_arrival(visit: Visit) -> None:
    """A valid card arrived and staff are about to be told.

    Called on the pipeline thread after the visit is durably recorded, before notifiers are queued.
    Not called for re-entries inside the suppression window, rejected cards or unknown tags.  For an
    arrival that was unresolved at first, called when a store answered, with ``visit.unresolved``
    true and ``visit.resolved_at`` set.

    :param visit: the :class:`vipsense.model.Visit`, kind ``greeted``; ``visit.customer`` is ``None``
        when the card was found but every store failed to give its customer.
    """


@hookspec
def vipsense_card_rejected(visit: Visit) -> None:
    """A lost, revoked, expired or wrong-branch card was seen at the door.

    Called on the pipeline thread after the visit is recorded, instead of :func:`vipsense_arrival`.

    :param visit: the :class:`vipsense.model.Visit`, kind ``rejected``, with ``visit.reason`` set.
    """


@hookspec
def vipsense_card_suspect(visit: Visit) -> None:
    """A card that is probably cloned or misused was seen at the door: it was read with another TID
    than it was enrolled with, or it arrived at another branch too recently to have travelled here.
    Only the branch manager's role is told; the holder is never greeted.

    Called on the pipeline thread after the visit is recorded, instead of :func:`vipsense_arrival`.

    :param visit: the :class:`vipsense.model.Visit`, kind ``suspect``, with ``visit.reason``
        ``tid_mismatch`` or ``too_fast``.
    """


@hookspec
def vipsense_arrival_unresolved(visit: Visit) -> None:
    """A card arrived that no identity store could look up: every store failed, timed out, was
    stuck, or was still opening after its ``start_grace``.  Staff routed for the ``unresolved`` event
    are told a card was seen.  The card is judged again while it stays in the door zone; if a store
    then answers, the same visit is broadcast once more through :func:`vipsense_arrival` (or
    :func:`vipsense_card_rejected`, ...) with ``visit.unresolved`` true and ``visit.resolved_at`` set.

    Called on the pipeline thread after the visit is recorded, once per arrival.

    :param visit: the :class:`vipsense.model.Visit`, kind ``unresolved``; only ``visit.arrival`` is set.
    """


@hookspec
def vipsense_unknown_tag(visit: Visit) -> None:
    """A tag that is no card of any identity store arrived at the door.  Nobody is notified.

    Called on the pipeline thread after the visit is recorded.

    :param visit: the :class:`vipsense.model.Visit`, kind ``unknown``; only ``visit.arrival`` is set.
    """


@hookspec
def vipsense_departure(arrival: Arrival, departed_at: float) -> None:
    """A card that had arrived has been silent for ``presence.depart_after``: it left the door zone.

    Called on the pipeline thread.  Leaving the door zone is not leaving the branch.

    :param arrival: the arrival that is over.
    :param departed_at: wall-clock UNIX time of the departure decision.
    """


@hookspec
def vipsense_delivery_result(notification: Notification, result: DeliveryResult) -> None:
    """A notifier finished one attempt to deliver a notification, or gave it up.

    Called on that notifier's worker thread after each attempt, successful or not: ``retrying``
    (it will be tried again after the notifier's ``retry`` backoff), ``delivered``, ``failed`` (given up:
    ``DeliveryFailed(retry=False)``), or ``expired`` (its TTL passed before it could go out, so it
    was not sent; ``result.attempt`` is then the attempts made before).  Called again, on whatever
    thread the notifier uses, when it reports a later result such as a recipient's acknowledgement
    through ``context.report(notification, result)``.  A notification left pending by a crash is
    sent again after the restart, so an observer may see the same ``notification.key`` delivered
    twice.

    :param notification: what was sent.
    :param result: the outcome, with its :class:`vipsense.model.DeliveryState` and ``attempt``
        (1 for the first attempt, counted across restarts).
    """


@hookspec
def vipsense_acknowledged(ack: Acknowledgement) -> None:
    """A member of staff acknowledged a notification: they saw the customer's arrival.

    Called once per notification key, on the thread that received the acknowledgement (a notifier's
    server thread, later the web page's), after it is recorded in the outbox; the visit log records
    it on the visit moments later.  Repeated acknowledgements of the same key are not broadcast.

    :param ack: a :class:`vipsense.model.Acknowledgement`: key, visit id, staff id, wall time, and
        the notifier it came through.
    """


@hookspec
def vipsense_security_alert(kind: str, actor: str, source: str, detail: str) -> None:
    """Something that looks like an attack on personal data was refused, often enough that the branch
    manager should know at once, not when the audit log is next read.

    Called on the thread that refused it (a branch web request), after the refusal and the alert are
    in the audit log.  The branch web also shows the alert on the branch manager's console.  Routing
    to a notifier (e.g. the branch manager's PDA) is the observer's to do.

    :param kind: what it was: ``id_lookup_limit`` (look-ups by ID number past ``web.id_lookup``'s
        limits, ``alert_after`` times in 24 h by one user or from one address) or
        ``id_lookup_forbidden`` (as often, look-ups by ID number by an account without the right to
        search by ID number).
    :param actor: the account that was refused.
    :param source: where from, as in the audit log (``web:10.0.0.7``).
    :param detail: one line for people; it never holds an ID or a mobile number.
    """


# -------------------------------------------------------------------------------------------------
# Broadcast hooks: the audit log.
# -------------------------------------------------------------------------------------------------


@hookspec
def vipsense_audit_anchor(anchor: Anchor) -> None:
    """The audit log published an anchor: its length and the hash of its last entry, signed.

    Called after the anchor was appended to the branch's anchor file (``privacy.audit_anchors``), on
    the thread that wrote the entries it covers (the door's audit writer, a web request, a command):
    for a log's first entries, then once ``privacy.audit_anchor_every`` entries or
    ``privacy.audit_anchor_interval`` have passed since the last anchor, whichever comes first, and
    when the log closes.  Called even when the file could not be written, so a copy kept elsewhere
    still has it.  An uplink to the head office ships anchors to the centre, which the branch cannot
    rewrite, so entries cut off the end of the log show (``vipsense audit verify`` checks them).
    Return quickly: queue the anchor for a thread of your own.

    :param anchor: a :class:`vipsense.storage.auditanchors.Anchor`: ``branch``, ``count`` (entries),
        ``head`` (the hash of entry ``count``), ``at`` (wall time), ``key`` (the signing key's id,
        never the key) and ``mac`` (HMAC-SHA256 under the audit key).  ``anchor.line()`` is the JSON
        line the anchor file holds; ``anchor.as_dict()`` the same as a dict.
    """
