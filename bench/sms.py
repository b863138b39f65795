"""SMS pager benchmarks: PDU encodes per second (a typical Chinese pager text and a 4-part one), the
emulator's decoding rate, and how long one ``send()`` takes through the real notifier over a
pseudo-terminal to the project's modem emulator (start-up checks already done).

    python bench/sms.py

No targets: a GSM network takes seconds per message, so these figures only show that neither the
encoder nor the AT layer is ever the bottleneck.
"""

from __future__ import annotations

import argparse
import io
import logging
import platform
import time
from pathlib import Path

from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

from vipsense.api import Duration, PluginContext
from vipsense.clock import Clock
from vipsense.model import Arrival, Customer, Notification, Role, Staff, Visit, VisitKind
from vipsense.output import Output
from vipsense.plugins.notifiers.sms_modem import GsmSettings, make_notifier
from vipsense.plugins.notifiers.sms_modem.emulator import ModemEmulator, ModemLink
from vipsense.plugins.notifiers.sms_modem.pdu import encode_message
from vipsense.plugins.notifiers.sms_modem.receiver import decode_submit
from vipsense.stats import percentile

NUMBER = "+8613800138001"
SHORT = "09:41 贵宾到店：张伟 Zhang Wei（金卡），door。客户经理：王芳 Wang Fang。"
LONG = ("贵宾张伟先生已到达陆家嘴支行大堂，请客户经理前往接待。𠮷 ") * 8  # 4 parts, not cut


def rate(fn, seconds: float = 1.0) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(100):
            fn()
        n += 100
    return n / (time.perf_counter() - t0)


def send_latency(sends: int) -> list[float]:
    link = ModemLink.on_pty(ModemEmulator()).start()
    here = Path(".")
    output = Output(io.StringIO(), live=False)
    ctx = PluginContext("sh", "Lujiazui", "sms", here, here, Clock(), output, logging.getLogger("bench.sms"))
    notifier = make_notifier(GsmSettings(port=link.url, command_timeout=Duration(2)), ctx)
    notifier.warming.join(5)
    customer = Customer("C1", "张伟 Zhang Wei", tier="gold")
    arrival = Arrival("E2000001", "door", 1, 0.0, 0.0, 3, -50.0)
    v = Visit("v1", "sh", VisitKind.GREETED, arrival, time.time(), customer=customer, tier="gold")
    person = Staff("lobby", "Lobby", Role.LOBBY_MANAGER, mobile=NUMBER)
    n = Notification("v1:lobby", v, person, "sms", time.time(), time.time() + 600)
    times = []
    try:
        for _ in range(sends):
            t0 = time.perf_counter()
            notifier.send(n)
            times.append(time.perf_counter() - t0)
    finally:
        notifier.close()
        link.stop()
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="length of each rate measurement")
    ap.add_argument("--sends", type=int, default=200, help="send() calls timed over the pty")
    args = ap.parse_args(argv)
    print(f"{cpu_model()}, Python {platform.python_version()}")
    short = rate(lambda: encode_message(NUMBER, SHORT), args.seconds)
    _, pdus = encode_message(NUMBER, LONG)
    long = rate(lambda: encode_message(NUMBER, LONG), args.seconds)
    raw = [(bytes.fromhex(p.hex), p.tpdu_length) for p in pdus]
    decode = rate(lambda: [decode_submit(b, n) for b, n in raw], args.seconds)
    print(f"encode, 1-part Chinese text:  {short:,.0f} messages/s")
    print(f"encode, {len(pdus)}-part Chinese text:  {long:,.0f} messages/s")
    print(f"decode (emulator), {len(pdus)} parts:   {decode:,.0f} messages/s")
    times = sorted(send_latency(args.sends))
    p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
    print(f"send() over a pty, 1 part: p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms")
    print(f"peak RSS {peak_rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
