"""The PDA agent: the program a member of staff's handheld runs to be told of arrivals.

::

    vipsense pda --name 李娜的PDA --role lobby --staff-id lobby1 --branch sh-001 \\
        --key-file /etc/vipsense/branch.key --interface 192.168.10.23 --data-dir ~/.vipsense-pda

(or ``python -m vipsense.plugins.notifiers.pda.agent`` with the same arguments).  It advertises itself
as ``_vipsense-pda._tcp.local.`` on the one interface given, serves signed pushes on
``/v1/push``, shows each new one as a framed block, and posts a signed acknowledgement to the hub when
Enter (or ``a``) is pressed, retrying until the hub takes it.

The branch key comes from ``--key-file`` or ``VIPSENSE_PDA_KEY``, never from the command line (anyone
can read that in ``ps``), and is never printed or logged.

The agent takes pushes from one hub instance at a time (:mod:`.binding`): the first push binds it, and
it follows its branch's hub when that restarts.  ``--hub-instance`` pins it to one instance and
``--parent-pid`` stops it with the process that started it: both are for the demo's emulated PDAs.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, TypeVar

from vipsense import i18n
from vipsense.backoff import doubled
from vipsense.i18n import _
from vipsense.output import Output
from vipsense.shutdown import Shutdown
from vipsense.signing import BadSignature, verify
from vipsense.texts import error_text

from . import display
from .binding import HubBinding
from .protocol import (
    ACK_PATH,
    HUB_TYPE,
    MISDIRECTED,
    PDA_TYPE,
    PUSH_PATH,
    ROLES,
    BadMessage,
    ack_body,
    check_instance,
    encode,
    instance_name,
    parse_hub_txt,
    parse_push,
    pda_txt,
    role_name,
)
from .state import AgentState
from .transport import JsonHandler, Server, Unreachable, hub_instance_at, post_signed

KEY_ENV = "VIPSENSE_PDA_KEY"
ACK_TIMEOUT = 3.0  #: seconds for one acknowledgement post
ACK_FIRST, ACK_MAX = 0.5, 10.0  #: acknowledgement retry backoff, doubling
PROBE_TIMEOUT = 1.0  #: seconds to ask whether a hub instance still answers (under the hub's push_timeout)
KEEP_ACK_URLS = 8  #: hub instances whose last acknowledgement URL is remembered, for that question
PARENT_POLL = 0.2  #: seconds between checks that the process given by --parent-pid is still there
PR_SET_PDEATHSIG = 1  #: linux/prctl.h
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


T = TypeVar("T")


def _role_word(role: str) -> str:
    """The agent's ``--role`` (``lobby``) as staff read it (大堂经理 / lobby manager)."""
    return str(ROLES[role].label) if role in ROLES else role


class KeyMissing(Exception):
    pass


def in_its_language(method: Callable[..., T]) -> Callable[..., T]:
    """Run an agent's method in the agent's language (:attr:`Agent.locale`): each of its threads
    (pushes, zeroconf, acknowledgements, the keyboard) makes the lines it shows."""

    @functools.wraps(method)
    def speaking(self: Agent, *args: Any, **kwargs: Any) -> T:
        with i18n.using(self.locale or i18n.current()):
            return method(self, *args, **kwargs)

    return speaking


def load_key(key_file: str | None) -> bytes:
    """The branch key from the file, else from the environment.  The error never shows a key."""
    if key_file:
        try:
            text = Path(key_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            message = _("cannot read the key file {path}: {error}")
            raise KeyMissing(message.format(path=key_file, error=exc.strerror or exc)) from None
        if not text:
            raise KeyMissing(_("the key file {path} is empty").format(path=key_file))
        return text.encode("utf-8")
    text = os.environ.get(KEY_ENV, "").strip()
    if not text:
        raise KeyMissing(_("no branch key: pass --key-file FILE or set {variable}").format(variable=KEY_ENV))
    return text.encode("utf-8")


class Agent:
    """One PDA: push server, advertisement, hub browser, acknowledgements.  ``start`` then ``close``."""

    def __init__(
        self,
        *,
        name: str,
        role: str,
        staff: str,
        branch: str,
        key: bytes,
        interface: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        auto_ack: float | None = None,
        hub_instance: str | None = None,
        out: TextIO | None = None,
        locale: str | None = None,
    ) -> None:
        self.name, self.role, self.staff, self.branch = name, role_name(role), staff, branch
        self.interface, self.port = interface, port
        #: the language of the screen: ``locale`` when given (``--locale``), else the hub's once a push
        #: has said it, else the process's (which ``vipsense pda`` takes from LANG)
        self.locale = locale
        self._chosen = locale is not None  #: the person chose a language: pushes do not change it
        self._key = key
        self.auto_ack = auto_ack
        self.out = Output(out or sys.stdout, live=False)
        self._screen_gone = False
        self.binding = HubBinding(hub_instance, still_there=self._still_there, table=self._hub_table)
        self._ack_urls: dict[str, str] = {}  #: hub instance -> the ack URL of its last push, newest last
        self._ack_urls_lock = threading.Lock()
        self.state = AgentState(data_dir)
        self.server: Server | None = None
        self.zc: Any = None
        self.advert: Any = None
        self.hubs: Any = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._timers: list[threading.Timer] = []
        self._backoff: dict[str, tuple[float, int]] = {}  #: ack key -> (due on monotonic, failures)
        self._acker = threading.Thread(target=self._ack_loop, name="pda-acks", daemon=True)

    def say(self, text: str) -> None:
        """Print to the PDA's screen, every line made printable first (:func:`.display.screen`): much
        of what is shown came from the network.  A screen that is gone (the pipe of a parent killed
        with ``kill -9``) must not stop the agent from withdrawing its advertisement: it is silenced."""
        if self._screen_gone:
            return
        try:
            self.out.write(display.screen(text))
        except (BrokenPipeError, ConnectionResetError):
            self._screen_gone = True
            with contextlib.suppress(OSError, ValueError):  # so the flush at exit does not fail too
                null = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(null, self.out.stream.fileno())
                finally:
                    os.close(null)

    # -- lifecycle --------------------------------------------------------------------------------

    @in_its_language
    def start(self) -> None:
        from .discovery import Advertisement, Directory, check_interfaces, host_name, open_zeroconf

        [self.interface] = check_interfaces([self.interface])
        self.server = Server(self.interface, self.port, self._handler()).start()
        self.say(
            _("PDA {name} · staff {staff} ({role}) · branch {branch}").format(
                name=self.name, staff=self.staff, role=_role_word(self.role), branch=self.branch
            )
            + "\n"
            + _("push server: {url}").format(url=f"http://{self.interface}:{self.server.port}{PUSH_PATH}")
        )
        for w in self.state.waiting():
            key = display.clean(w["key"])
            text = _("still to acknowledge (from before a restart): {label} [{key}]")
            self.say(text.format(label=w.get("label", ""), key=key))
        self._acker.start()
        self.zc = open_zeroconf([self.interface])
        txt = pda_txt(
            staff=self.staff,
            role=self.role,
            branch=self.branch,
            port=self.server.port,
            name=self.name,
            hub=self.binding.pinned,
        )
        self.advert = Advertisement(
            self.zc,
            PDA_TYPE,
            instance_name(self.name),
            self.server.port,
            txt,
            [self.interface],
            host_name(f"pda-{self.staff}"),
        )
        self.hubs = Directory(self.zc, HUB_TYPE, parse_hub_txt, on_change=self._hub_changed)
        registered = self.advert.register()  # probing and announcing: about 1.5 s
        text = _("advertised as {name!r} ({service}) on {interface}")
        self.say(text.format(name=registered, service=PDA_TYPE, interface=self.interface))
        if self.binding.pinned is not None:
            self.say(_("takes pushes from hub instance {instance} only").format(instance=self.binding.pinned))

    @in_its_language
    def close(self) -> None:
        """Withdraw the advertisement (so the hub sees this PDA go), then stop everything."""
        self._stop.set()
        self._wake.set()
        for timer in self._timers:
            timer.cancel()
        if self.advert is not None:
            self.advert.unregister()
        if self.hubs is not None:
            self.hubs.close()
        if self.zc is not None:
            self.zc.close()
        if self.server is not None:
            self.server.close()
        if self._acker.is_alive():
            self._acker.join(ACK_TIMEOUT + 1)
        left = len(self.state.pending_acks())
        self.state.close()
        if left:
            if self.state.path:
                text = _("{n} acknowledgement(s) not yet taken by the hub: kept for the next start")
            else:
                text = _("{n} acknowledgement(s) not yet taken by the hub: lost (no --data-dir)")
            self.say(text.format(n=left))
        self.say(_("PDA {name} stopped").format(name=self.name))

    @in_its_language
    def _hub_changed(self, peer: Any) -> None:  # zeroconf's thread: print and return
        hub = peer.parsed
        if hub.branch == self.branch and peer.state != "gone":
            old = self.binding.announced(peer.name, hub.instance)
            # asking whether the old instance still answers takes up to a second, and zeroconf's
            # handlers must never block (zeroconf.md §1): ask on a thread of its own
            if old is not None:
                threading.Thread(
                    target=self._follow, args=(old, hub.instance, peer.name), name="pda-follow", daemon=True
                ).start()
        bound = self.binding.bound
        if hub.branch != self.branch:
            note = " " + _("(another branch: ignored)")
        elif bound is not None and hub.instance != bound:
            note = " " + _("(hub instance {instance}, not {bound}: ignored)").format(
                instance=hub.instance, bound=bound
            )
        else:
            note = ""
        branch = display.clean(hub.branch)  # anyone on the LAN can announce a hub: keep to one line
        where = f"{peer.address}:{peer.port}"
        if peer.state == "gone":
            self.say(_("hub gone: {branch} at {address}").format(branch=branch, address=where) + note)
        elif peer.state == "appeared":
            self.say(_("hub found: {branch} at {address}").format(branch=branch, address=where) + note)

    @in_its_language
    def _follow(self, old: str, new: str, service_name: str) -> None:
        moved = self.binding.follow(old, new, service_name)
        if moved:
            self.say(moved)

    def _hub_table(self) -> list[tuple[str, str]]:
        """The hub announcements of this branch present now, as (service name, instance)."""
        peers = self.hubs.peers() if self.hubs is not None else []
        return [(p.name, p.parsed.instance) for p in peers if p.parsed.branch == self.branch]

    def _still_there(self, instance: str) -> bool:
        """Whether hub ``instance`` still answers as itself where it announces itself or where its last
        push said to acknowledge: a hub that stopped, crashed or was replaced does not."""
        urls = [
            f"http://{p.address}:{p.port}{p.parsed.ack_path}"
            for p in (self.hubs.peers() if self.hubs is not None else [])
            if p.parsed.instance == instance
        ]
        with self._ack_urls_lock:
            if instance in self._ack_urls:
                urls.append(self._ack_urls[instance])
        deadline = time.monotonic() + PROBE_TIMEOUT  # one second in all: the push waiting is timed too
        for url in dict.fromkeys(urls):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                if hub_instance_at(url, left) == instance:
                    return True
            except (Unreachable, ValueError):
                continue
        return False

    # -- pushes -----------------------------------------------------------------------------------

    def _handler(self) -> type[JsonHandler]:
        agent = self

        class PushHandler(JsonHandler):
            def do_POST(self) -> None:
                if self.path.split("?")[0] != PUSH_PATH:
                    self.reply(404, {"error": f"POST {PUSH_PATH} only"})
                    return
                body = self.read_body()
                if body is not None:
                    self.reply(*agent.handle_push(self.headers, body))

        return PushHandler

    def handle_push(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        """Verify, check, de-duplicate and show one push; the HTTP status and answer.  The push's
        ``locale``, when it names one this agent knows, becomes the agent's language."""
        with i18n.using(self.locale or i18n.current()):
            return self._handle_push(headers, body)

    def _handle_push(self, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            verify(self._key, headers, body)  # before anything looks inside the body
        except BadSignature as exc:
            self.say(_("push refused ({status}): {reason}").format(status=401, reason=error_text(exc)))
            return 401, {"error": str(exc)}
        try:
            doc = parse_push(body)
        except BadMessage as exc:
            self.say(_("push refused ({status}): {reason}").format(status=400, reason=exc))
            return 400, {"error": str(exc)}
        if doc["recipient"] != self.staff:
            text = _("push refused ({status}): for staff {recipient}, not {staff}")
            self.say(text.format(status=409, recipient=display.clean(doc["recipient"]), staff=self.staff))
            return 409, {"error": f"this PDA belongs to staff {self.staff}"}
        if doc["branch"] != self.branch:
            text = _("push refused ({status}): for branch {other}, not {branch}")
            self.say(text.format(status=403, other=display.clean(doc["branch"]), branch=self.branch))
            return 403, {"error": f"this PDA belongs to branch {self.branch}"}
        locale = None if self._chosen else i18n.normalise(str(doc.get("locale") or ""))
        with i18n.using(locale or self.locale or i18n.current()):  # what is said of this push: its language
            verdict = self.binding.admit(doc["hub"])
        if verdict.say:
            self.say(verdict.say)
        if not verdict.accept:
            return MISDIRECTED, {"error": verdict.error}
        if locale is not None:
            self.locale = locale  # the branch's language, from a signed push of the hub this PDA is bound to
        with i18n.using(self.locale or i18n.current()):
            return self._show(doc)

    def _show(self, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._ack_urls_lock:
            self._ack_urls.pop(doc["hub"], None)
            self._ack_urls[doc["hub"]] = doc["ack_url"]
            while len(self._ack_urls) > KEEP_ACK_URLS:
                del self._ack_urls[next(iter(self._ack_urls))]
        key = doc["key"]
        with self.state.lock:
            if not self.state.remember(key, doc.get("expires_at")):
                self.say(_("push {key} again: already shown").format(key=display.clean(key)))
                return 200, {"duplicate": True}
            entry = {"key": key, "ack_url": doc["ack_url"], "hub": doc["hub"], "label": display.label(doc)}
            self.state.add_waiting(entry)
            self.say(display.render(doc))  # under the lock: two pushes never interleave
        if self.auto_ack is not None:
            timer = threading.Timer(self.auto_ack, self.acknowledge, args=(key,))
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
            timer.start()
        return 200, {"shown": True}

    # -- acknowledgements -------------------------------------------------------------------------

    @in_its_language
    def acknowledge_oldest(self) -> bool:
        """What one key press does: acknowledge the oldest arrival still waiting."""
        key = self.state.oldest_waiting()
        if key is None:
            self.say(_("nothing to acknowledge"))
            return False
        return self.acknowledge(key)

    def acknowledge(self, key: str) -> bool:
        """Queue the acknowledgement of ``key`` (if it still waits); the sender thread posts it."""
        doc = ack_body(key, self.staff, time.time(), self.name)
        if not self.state.acknowledge(key, {"key": key, "doc": doc}):
            return False
        self._wake.set()
        return True

    def _ack_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a wake-up from here on is not lost
            now = time.monotonic()
            pending = self.state.pending_acks()
            due = [a for a in pending if self._backoff.get(a["key"], (0.0, 0))[0] <= now]
            for ack in due:
                if self._stop.is_set():
                    return
                self._post_ack(ack)
            if not due:
                waits = [self._backoff.get(a["key"], (now, 0))[0] - now for a in pending]
                self._wake.wait(max(0.0, min([1.0, *waits])))

    @in_its_language
    def _post_ack(self, ack: dict[str, Any]) -> None:
        key = display.clean(ack["key"])
        try:
            reply = post_signed(ack["url"], self._key, encode(ack["doc"]), ACK_TIMEOUT)
        except (Unreachable, ValueError) as exc:
            self._ack_failed(ack, str(exc), moved=True)
            return
        if 200 <= reply.status < 300:
            self._ack_done(ack)
            text = _("ack sent: {key} (hub answered {status} in {ms} ms)")
            self.say(text.format(key=key, status=reply.status, ms=f"{reply.elapsed * 1000:.0f}"))
        elif reply.status in (400, 404):
            why = (reply.doc or {}).get("error", "")
            self._ack_done(ack)
            text = _("ack dropped: {key}: hub answered {status} {reason}")
            self.say(text.format(key=key, status=reply.status, reason=display.clean(why)).rstrip())
        elif reply.status == 401:
            self._ack_failed(ack, _("hub rejected the signature (check the branch key and the clock)"))
        else:
            self._ack_failed(ack, _("hub answered {status}").format(status=reply.status))

    def _ack_done(self, ack: dict[str, Any]) -> None:
        self._backoff.pop(ack["key"], None)
        self.state.ack_done(ack["key"])

    def _ack_failed(self, ack: dict[str, Any], why: str, moved: bool = False) -> None:
        failures = self._backoff.get(ack["key"], (0.0, 0))[1] + 1
        delay = doubled(ACK_FIRST, ACK_MAX, failures)
        self._backoff[ack["key"]] = (time.monotonic() + delay, failures)
        text = _("ack not sent: {key}: {reason}; retrying in {seconds} s")
        self.say(text.format(key=display.clean(ack["key"]), reason=display.clean(why), seconds=f"{delay:g}"))
        if moved:
            self._follow_hub(ack)

    def _follow_hub(self, ack: dict[str, Any]) -> None:
        """The hub is not where the push said (it restarted on another port?): try where the hub
        instance this PDA is bound to announces itself, and never another instance (another hub of
        the same branch id would not know the notification).  An impostor could only swallow
        acknowledgements, which are signed."""
        target = self.binding.bound or ack.get("hub")
        if self.hubs is None or not target:
            return
        for peer in self.hubs.peers():
            if peer.parsed.branch == self.branch and peer.parsed.instance == target:
                url = f"http://{peer.address}:{peer.port}{peer.parsed.ack_path or ACK_PATH}"
                if url != ack["url"]:
                    self.state.redirect_ack(ack["key"], url)
                    text = _("ack: hub instance {instance} now announces itself at {address}")
                    self.say(text.format(instance=target, address=f"{peer.address}:{peer.port}"))
                return

    # -- the keyboard -----------------------------------------------------------------------------

    def read_keys(self, stream: TextIO | None) -> None:
        """Enter or ``a`` acknowledges the oldest arrival: single keys on a terminal (cbreak mode,
        set by :func:`run`), lines otherwise (an empty line or ``a``).  Returns at end of input."""
        if stream is None or stream.closed:
            return
        try:
            fd = stream.fileno()
        except (OSError, ValueError):
            fd = -1
        if fd >= 0 and os.isatty(fd):
            while not self._stop.is_set():
                ready, _, _ = select.select([fd], [], [], 0.5)
                if not ready:
                    continue
                char = os.read(fd, 1)
                if not char:
                    return
                if char in (b"\n", b"\r", b"a", b"A", b" "):
                    self.acknowledge_oldest()
            return
        for line in stream:
            if self._stop.is_set():
                return
            if line.strip().lower() in ("", "a"):
                self.acknowledge_oldest()


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 <= seconds < 3600:
        raise argparse.ArgumentTypeError(_("expected seconds from 0 to 3600"))
    return seconds


def _instance(value: str) -> str:
    try:
        return check_instance(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _locale(value: str) -> str:
    locale = i18n.normalise(value)
    if locale is None:
        raise argparse.ArgumentTypeError(_("{value!r}: one of zh_CN, en").format(value=value))
    return locale


def _role(value: str) -> str:
    try:
        return role_name(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure(parser: argparse.ArgumentParser) -> None:
    """The agent's arguments (shared by ``vipsense pda`` and ``python -m ...agent``)."""
    parser.add_argument("--name", required=True, help=_("display name of this PDA (Chinese is fine)"))
    parser.add_argument(
        "--role", required=True, type=_role, help=_("lobby (lobby manager), manager (client manager), branch")
    )
    parser.add_argument("--staff-id", required=True, help=_("the staff id of the person who carries it"))
    parser.add_argument("--branch", required=True, help=_("the branch id (as in the branch profile)"))
    parser.add_argument(
        "--key-file",
        help=_("file holding the branch key (default: the {variable} environment variable)").format(
            variable=KEY_ENV
        ),
    )
    parser.add_argument(
        "--interface",
        default="127.0.0.1",
        help=_("this PDA's IPv4 address on the branch LAN; the only one used (default 127.0.0.1, a demo)"),
    )
    parser.add_argument("--port", type=int, default=0, help=_("push port (default 0: any free port)"))
    parser.add_argument(
        "--data-dir", type=Path, help=_("keep shown keys and pending acks here across restarts")
    )
    parser.add_argument(
        "--auto-ack",
        type=_seconds,
        metavar="SECONDS",
        help=_("acknowledge each arrival after this delay (demos)"),
    )
    parser.add_argument(
        "--hub-instance",
        type=_instance,
        metavar="ID",
        help=_(
            "take pushes from this hub instance only (the demo's emulated PDAs; a handheld follows its "
            "branch's hub instead)"
        ),
    )
    parser.add_argument(
        "--parent-pid",
        type=int,
        metavar="PID",
        help=_("stop when this process is gone, even after kill -9 (the demo's emulated PDAs)"),
    )
    parser.add_argument(
        "--locale",
        type=_locale,
        help=_("language of the screen: zh_CN or en (default: the hub's, else LANG)"),
    )
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vipsense pda", description=_("The PDA agent: shows VIP arrivals pushed by the branch hub.")
    )
    configure(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the agent until Ctrl-C or SIGTERM; the exit code."""
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    try:
        key = load_key(args.key_file)
    except KeyMissing as exc:
        print(f"vipsense pda: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if _parent_gone(args.parent_pid):  # a wrong pid, or the parent died before we could ask
        text = _("process {pid} is not (or no longer) this agent's parent").format(pid=args.parent_pid)
        print(f"vipsense pda: {text}", file=sys.stderr)
        return EXIT_USAGE
    try:
        agent = Agent(
            name=args.name,
            role=args.role,
            staff=args.staff_id,
            branch=args.branch,
            key=key,
            interface=args.interface,
            port=args.port,
            data_dir=args.data_dir.expanduser() if args.data_dir else None,
            auto_ack=args.auto_ack,
            hub_instance=args.hub_instance,
            locale=args.locale,
        )
    except ValueError as exc:
        print(f"vipsense pda: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shutdown = Shutdown()  # the handlers only flip a flag: two SIGTERMs in a row must not deadlock
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, shutdown.request)
    if args.parent_pid is not None:
        exit_with_parent()  # after the handlers: the SIGTERM it sends must withdraw the advertisement
    terminal = _cbreak(sys.stdin)
    try:
        try:
            agent.start()
        except (OSError, ValueError) as exc:
            text = _("cannot start on {interface}: {error}").format(interface=args.interface, error=exc)
            print(f"vipsense pda: {text}", file=sys.stderr)
            return EXIT_FAILED
        with i18n.using(agent.locale or i18n.current()):
            if args.auto_ack is None:
                hint = _("press Enter (or a) to acknowledge the oldest arrival; Ctrl-C to stop")
            else:
                hint = _("acknowledging each arrival after {seconds} s").format(seconds=f"{args.auto_ack:g}")
        agent.say(hint)
        threading.Thread(target=agent.read_keys, args=(sys.stdin,), name="pda-keys", daemon=True).start()
        while not shutdown.wait(PARENT_POLL):
            if _parent_gone(args.parent_pid):
                with i18n.using(agent.locale or i18n.current()):
                    text = _("process {pid}, which started this PDA, is gone: stopping")
                agent.say(text.format(pid=args.parent_pid))
                break
        return EXIT_OK
    finally:
        agent.close()
        if terminal is not None:
            terminal()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def exit_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies, even by ``kill -9`` (``PR_SET_PDEATHSIG``).  The
    parent is the thread that started us (:mod:`.emulated` keeps that one alive as long as we run).
    Elsewhere, and should ``prctl`` fail, :func:`_parent_gone` polled by :func:`run` still stops us."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _parent_gone(parent_pid: int | None) -> bool:
    """True when ``parent_pid`` is given and is no longer our parent (we were handed to init)."""
    return parent_pid is not None and os.getppid() != parent_pid


def _cbreak(stream: TextIO | None) -> Any:
    """Put a terminal into cbreak mode (single keys, Ctrl-C still works); a function restoring it."""
    try:
        import termios
        import tty

        fd = stream.fileno() if stream is not None else -1
        if fd < 0 or not os.isatty(fd):
            return None
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
    except (ImportError, OSError, ValueError):
        return None
    return lambda: termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    i18n.set_default(i18n.from_environment())  # as ``vipsense pda`` does: LANG until a hub says otherwise
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
