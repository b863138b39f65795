"""Reader benchmarks: ThingMagic tag frames parsed per second, and the latency from the last byte of
a tag frame written to a pseudo-terminal at 115200 bit/s to the read entering the pipeline.

    python bench/readers.py [--check]

Targets (issue "Real reader drivers"): at least 200,000 frames/s parsed on one core; latency p99 of
2 ms or less.  The latency path is the real driver's stream loop (pyserial on the pty slave,
FrameParser, decode_stream, ReaderContext.read) with a context whose ``emit`` stands where
``Pipeline.submit`` is: it notes the time and hands the read on.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time
import tty

import attrs
from machine import cpu_model, peak_rss_mb  # bench/machine.py, beside this script

from vipsense.api import ReaderContext
from vipsense.clock import Clock
from vipsense.plugins.readers.thingmagic import protocol as tm
from vipsense.plugins.readers.thingmagic.driver import Session
from vipsense.stats import percentile

BAUD = 115200
BYTE_SECONDS = 10 / BAUD  # start bit, 8 data bits, stop bit


def tag_frame(n: int) -> bytes:
    epc = bytes.fromhex("E2801160600002084C1A") + n.to_bytes(2, "big")
    record = tm.TagRecord(
        epc=epc.hex().upper(), pc=tm.pc_for_epc(epc), read_count=1, rssi=-50, antenna=0x11, timestamp_ms=n
    )
    return tm.encode_stream_tag(record, tm.META_DEFAULT)


def parse_throughput(frames: int) -> tuple[float, int]:
    """Frames/s through FrameParser.feed plus decode_stream, fed in 4 KiB chunks as a port delivers."""
    stream = b"".join(tag_frame(i % 65536) for i in range(frames))
    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]
    parser = tm.FrameParser()
    decode = tm.decode_stream
    tags = 0
    t0 = time.perf_counter()
    for chunk in chunks:
        for frame in parser.feed(chunk):
            if decode(frame).kind == "tag":
                tags += 1
    elapsed = time.perf_counter() - t0
    return tags / elapsed, tags


@attrs.frozen
class _Settings:
    command_timeout: float = 1.0
    silence_timeout: float = 5.0
    antennas: tuple[int, ...] = (1,)


def latency(count: int, rate: float) -> list[float]:
    """Seconds from the last byte of each frame written to the pty to the read handed to the pipeline."""
    import serial

    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    port = serial.Serial(os.ttyname(slave), BAUD, timeout=0.05)
    written: dict[str, float] = {}
    samples: list[float] = []
    done = threading.Event()
    stop = threading.Event()

    def emit(read) -> None:
        at = time.perf_counter()
        sent = written.get(read.epc)
        if sent is not None:
            samples.append(at - sent)
        if len(samples) >= count:
            done.set()

    ctx = ReaderContext("bench", Clock(), emit, lambda state, reason: None, stop, None, {})
    session = Session(port, _Settings(), ctx)

    def stream() -> None:
        try:
            session.stream(stop)
        except Exception as exc:  # a benchmark reports, it does not crash
            print(f"  reader stopped: {exc}")

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    frames = [tag_frame(i) for i in range(count)]
    epcs = [tm.decode_stream(tm.FrameParser().feed(f)[0]).record.epc for f in frames]
    next_at = time.perf_counter()
    for frame, epc in zip(frames, epcs, strict=True):
        # The last byte of a frame arrives len(frame) byte-times after its first at 115200 bit/s.
        next_at += max(1 / rate, len(frame) * BYTE_SECONDS)
        while time.perf_counter() < next_at:
            time.sleep(min(0.0005, max(0.0, next_at - time.perf_counter())))
        written[epc] = time.perf_counter()  # noted first: the reader may see the frame at once
        os.write(master, frame)
    done.wait(5)
    stop.set()
    reader.join(2)
    port.close()
    os.close(master)
    os.close(slave)
    return sorted(samples)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300_000, help="frames for the parse throughput")
    ap.add_argument("--latency-frames", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0, help="tag frames per second on the pty")
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)

    print("vipsense reader benchmark")
    print(f"  machine  : {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rate, tags = parse_throughput(args.frames)
    lat = latency(args.latency_frames, args.rate)
    p50 = percentile(lat, 0.5) * 1000
    p99 = percentile(lat, 0.99) * 1000
    rss = peak_rss_mb()
    ok_rate, ok_p99 = rate >= 200_000, p99 <= 2.0
    verdict = {True: "PASS", False: "MISS"}
    print()
    print(f"  ThingMagic tag frames parsed     {rate:12,.0f} frames/s   >= 200,000  {verdict[ok_rate]}")
    print(f"  pty byte -> pipeline latency p50 {p50:12.3f} ms")
    print(f"  pty byte -> pipeline latency p99 {p99:12.3f} ms         <= 2 ms     {verdict[ok_p99]}")
    print()
    print(f"  parse    : {tags:,} tag frames (META_DEFAULT, 12-byte EPC) in 4 KiB chunks, one thread")
    paced = f"{len(lat)} frames at {args.rate:g}/s, paced as 115200 bit/s"
    print(f"  latency  : {paced}; max {lat[-1] * 1000:.3f} ms")
    print(f"  peak RSS : {rss:.1f} MB")
    return 1 if args.check and not (ok_rate and ok_p99) else 0


if __name__ == "__main__":
    raise SystemExit(main())
