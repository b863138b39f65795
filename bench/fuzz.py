"""Fuzz the reader protocol parsers: a million random frames per target, no exception may escape.

    python bench/fuzz.py                          # every target, 1,000,000 frames each
    python bench/fuzz.py --frames 100000 --seed 7 --target thingmagic.FrameParser

A target is ``f(rng, n) -> FuzzResult``, registered in :data:`TARGETS` under a name; it makes ``n``
inputs the way a noisy or corrupted link would (valid frames, frames with flipped bits, cut short, with
a wrong LEN, bytes inserted or lost, random garbage between them, pure random bytes) and feeds them to
one parser or decoder.  Parsers may not raise at all; decoders only their protocol's error class.
Mercury4 RQL lines and LLRP messages are targets too; :func:`counting_target` adapts a function that
returns ``(inputs fed, exceptions escaped)``.

Prints per target: inputs fed, valid inputs among them, valid frames/records recovered, inputs rejected
(dropped bytes or protocol errors), escaped exceptions (must be 0), time and rate.  Exit status 1 when
any exception escaped or a parser's byte counters did not add up.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vipsense.plugins.readers.llrp.reports import LLRPProtocolError, decode_message, split_messages
from vipsense.plugins.readers.mercury4.emulator import parse_statement
from vipsense.plugins.readers.mercury4.protocol import ResponseParser, RqlError, parse_row, select_statement
from vipsense.plugins.readers.thingmagic import protocol as tm
from vipsense.plugins.readers.thingmagic.protocol import (
    CommandParser,
    Frame,
    FrameParser,
    ProtocolError,
    TagRecord,
)


@dataclass
class FuzzResult:
    fed: int = 0  #: inputs generated and fed (frames, records, lines)
    valid_in: int = 0  #: of which intact and valid
    recovered: int = 0  #: valid frames/records the target returned
    rejected: int = 0  #: protocol errors raised, or bytes dropped by a parser
    escaped: int = 0  #: exceptions that must not happen
    inconsistent: int = 0  #: parser counters that did not add up
    note: str = ""  #: extra target-specific figures
    first_escape: str = ""  #: traceback of the first escaped exception

    def escape(self) -> None:
        self.escaped += 1
        if not self.first_escape:
            self.first_escape = traceback.format_exc()


Target = Callable[[random.Random, int], FuzzResult]
TARGETS: dict[str, Target] = {}


def register(name: str) -> Callable[[Target], Target]:
    def add(target: Target) -> Target:
        TARGETS[name] = target
        return target

    return add


def counting_target(fn: Callable[[random.Random, int], tuple[int, int]]) -> Target:
    """Adapt a fuzz function returning ``(inputs fed, exceptions escaped)`` to a :data:`Target`."""

    def target(rng: random.Random, n: int) -> FuzzResult:
        fed, escaped = fn(rng, n)
        return FuzzResult(fed=fed, escaped=escaped)

    return target


# -- ThingMagic inputs ----------------------------------------------------------------------------------
_EPC_LENGTHS = (2, 4, 8, 12, 12, 12, 12, 16, 32, 62)
_FLAG_CHOICES = (tm.META_DEFAULT, tm.META_DEFAULT, 0x01FF, 0x0000, tm.META_ALL)


def random_flags(rng: random.Random) -> int:
    return rng.choice(_FLAG_CHOICES) if rng.random() < 0.7 else rng.getrandbits(12)


def random_record(rng: random.Random) -> TagRecord:
    epc = rng.randbytes(rng.choice(_EPC_LENGTHS) if rng.random() < 0.8 else rng.randint(2, 62))
    pc = rng.getrandbits(16) & ~0x0200
    xpc_w1 = xpc_w2 = None
    if rng.random() < 0.1:
        pc |= 0x0200
        xpc_w1 = rng.getrandbits(16)
        if xpc_w1 & 0x8000:
            xpc_w2 = rng.getrandbits(16)
    return TagRecord(
        epc=epc.hex().upper(),
        pc=pc,
        read_count=rng.getrandbits(8),
        rssi=rng.randint(-128, 127),
        antenna=rng.randint(1, 16),
        frequency_khz=rng.getrandbits(24),
        timestamp_ms=rng.getrandbits(32),
        phase=rng.getrandbits(16),
        protocol=5,
        data=rng.randbytes(rng.choice((0, 0, 0, 2, 8))),
        gpio=rng.getrandbits(8),
        gen2_q=rng.getrandbits(4),
        gen2_link_frequency=rng.choice((0, 2, 4)),
        gen2_target=rng.getrandbits(1),
        xpc_w1=xpc_w1,
        xpc_w2=xpc_w2,
    )


def stream_tag_frame(rng: random.Random) -> bytes:
    while True:
        record, flags = random_record(rng), random_flags(rng)
        body = tm.encode_tag_record(record, flags)
        if len(body) + 6 <= tm.MAX_DATA_LENGTH:
            return tm.encode_stream_tag(record, flags)


def tag_buffer_reply(rng: random.Random) -> bytes:
    flags = random_flags(rng)
    body = b""
    count = 0
    for _ in range(rng.randint(1, 4)):
        wire = tm.encode_tag_record(random_record(rng), flags)
        if 4 + len(body) + len(wire) > tm.MAX_DATA_LENGTH:
            break
        body += wire
        count += 1
    return tm.encode_response(tm.GET_TAG_BUFFER, 0, flags.to_bytes(2, "big") + bytes((0, count)) + body)


def valid_response(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.6:
        return stream_tag_frame(rng)
    if kind < 0.7:
        return tm.encode_response(rng.choice((0x22, 0x2F)), tm.NO_TAGS_FOUND)
    if kind < 0.75:
        return tm.encode_response(tm.MULTI_PROTOCOL, 0, rng.choice((b"\x01\x22\x00\x00", b"\x02")))
    if kind < 0.85:
        return tag_buffer_reply(rng)
    if kind < 0.9:
        return tm.encode_response(
            tm.READ_TAG_MULTIPLE, 0, b"\x10\x00\x13" + rng.getrandbits(32).to_bytes(4, "big")
        )
    if kind < 0.93:
        return tm.encode_response(rng.choice((0x03, 0x04)), 0, tm.encode_version_data(rng.getrandbits(8)))
    return tm.encode_response(rng.getrandbits(8), rng.getrandbits(16), rng.randbytes(rng.randint(0, 64)))


def valid_command(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    if kind == 0:
        return tm.read_tag_multiple(rng.getrandbits(16), random_flags(rng))
    if kind == 1:
        return tm.start_continuous(random_flags(rng), rng.getrandbits(16))
    if kind == 2:
        return tm.set_antenna_search_list([rng.randint(1, 16) for _ in range(rng.randint(1, 8))])
    if kind == 3:
        return tm.get_tag_buffer(random_flags(rng))
    if kind == 4:
        return tm.set_region(rng.choice(tuple(tm.REGIONS.values())))
    if kind == 5:
        return tm.set_read_power(rng.randint(0, 3000))
    if kind == 6:
        return rng.choice(
            (tm.get_version(), tm.boot_firmware(), tm.get_current_program(), tm.stop_continuous())
        )
    return tm.encode_command(rng.getrandbits(8), rng.randbytes(rng.randint(0, 64)))


def corrupt(rng: random.Random, frame: bytes) -> bytes:
    """One of the ways a serial line damages a frame."""
    b = bytearray(frame)
    how = rng.random()
    if how < 0.35:  # flipped bits
        for _ in range(rng.randint(1, 3)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    elif how < 0.55:  # cut short
        del b[rng.randrange(1, len(b)) :]
    elif how < 0.7:  # wrong LEN
        b[1] = rng.choice(
            (rng.getrandbits(8), (b[1] + rng.randint(1, 8)) & 0xFF, max(0, b[1] - rng.randint(1, 8)))
        )
    elif how < 0.8:  # bytes inserted
        at = rng.randrange(len(b) + 1)
        b[at:at] = rng.randbytes(rng.randint(1, 4))
    elif how < 0.9:  # a byte lost
        del b[rng.randrange(len(b))]
    else:  # a burst of FF (a line break or wake-up preamble)
        at = rng.randrange(len(b))
        b[at : at + rng.randint(1, 6)] = b"\xff" * rng.randint(1, 6)
    return bytes(b)


def make_stream(
    rng: random.Random, n: int, valid: Callable[[random.Random], bytes]
) -> tuple[bytes, list[bytes]]:
    """``n`` inputs in one byte stream: intact frames (returned too, in order), damaged ones, garbage."""
    parts: list[bytes] = []
    intact: list[bytes] = []
    for _ in range(n):
        if rng.random() < 0.2:  # garbage between frames, sometimes with FF in it
            parts.append(rng.randbytes(rng.randint(1, 16)))
        kind = rng.random()
        if kind < 0.5:
            frame = valid(rng)
            intact.append(frame)
            parts.append(frame)
        elif kind < 0.9:
            parts.append(corrupt(rng, valid(rng)))
        else:
            parts.append(rng.randbytes(rng.randint(1, 64)))
    return b"".join(parts), intact


def _count_matches(got: list[tuple], expected: list[tuple]) -> int:
    """How many expected frames were returned (as a multiset: order is the unit tests' business)."""
    return sum((Counter(got) & Counter(expected)).values())


def _parser_target(parser_class: type, valid: Callable[[random.Random], bytes], overhead: int) -> Target:
    def run(rng: random.Random, n: int) -> FuzzResult:
        result = FuzzResult()
        lost = extra = crc_errors = 0
        batch = 2000
        done = 0
        while done < n:
            size = min(batch, n - done)
            stream, intact = make_stream(rng, size, valid)
            parser = parser_class()
            got = []
            pos = 0
            try:
                while pos < len(stream):
                    step = rng.choice((1, 7, 64, 512, 4096)) if rng.random() < 0.5 else rng.randint(1, 300)
                    got += parser.feed(stream[pos : pos + step])
                    pos += step
                    if parser.frames != len(got):
                        result.inconsistent += 1
                got += parser.flush()
            except Exception:
                result.escape()
            frame_bytes = sum(len(item.data) + overhead for item in got)
            if frame_bytes + parser.dropped_bytes + parser.buffered != len(stream) or parser.buffered:
                result.inconsistent += 1
            if overhead == 7:
                keys = [(f.opcode, f.status, f.data) for f in got]
                want = [(b[2], (b[3] << 8) | b[4], b[5:-2]) for b in intact]
            else:
                keys = [(c.opcode, c.data) for c in got]
                want = [(b[2], b[3:-2]) for b in intact]
            matched = _count_matches(keys, want)
            lost += len(want) - matched
            extra += len(keys) - matched
            crc_errors += parser.crc_errors
            result.fed += size
            result.valid_in += len(intact)
            result.recovered += len(got)
            result.rejected += parser.dropped_bytes
            done += size
        # "from damaged input": bytes added around an intact frame, or the CRC's blind spot (the same
        # bits flipped in the last two body bytes and in the CRC, see protocol.crc)
        result.note = (
            f"intact frames lost {lost}, frames from damaged input {extra}, CRC failures {crc_errors}"
        )
        return result

    return run


register("thingmagic.FrameParser")(_parser_target(FrameParser, valid_response, 7))
register("thingmagic.CommandParser")(_parser_target(CommandParser, valid_command, 5))


@register("thingmagic.decode_stream")
def fuzz_decode_stream(rng: random.Random, n: int) -> FuzzResult:
    result = FuzzResult()
    pool = [FrameParser().feed(valid_response(rng))[0] for _ in range(512)]
    kinds: dict[str, int] = {}
    for i in range(n):
        if i % 1024 == 0:  # keep the pool fresh
            pool[rng.randrange(len(pool))] = FrameParser().feed(stream_tag_frame(rng))[0]
        kind = rng.random()
        if kind < 0.5:
            frame = rng.choice(pool)
            result.valid_in += 1
        elif kind < 0.8:
            base = rng.choice(pool)
            data = (
                corrupt(rng, b"\xff\x00" + base.data)[2:] if base.data else rng.randbytes(rng.randint(0, 8))
            )
            frame = Frame(base.opcode, base.status, data)
        else:
            opcode = rng.choice((0x22, 0x22, 0x2F, rng.getrandbits(8)))
            status = rng.choice((0, 0, 0x0400, rng.getrandbits(16)))
            frame = Frame(opcode, status, rng.randbytes(rng.randint(0, 80)))
        result.fed += 1
        try:
            event = tm.decode_stream(frame)
        except ProtocolError:
            result.rejected += 1
            continue
        except Exception:
            result.escape()
            continue
        kinds[event.kind] = kinds.get(event.kind, 0) + 1
        if event.kind == "tag":
            result.recovered += 1
    result.note = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
    return result


@register("thingmagic.decode_tag_record")
def fuzz_decode_tag_record(rng: random.Random, n: int) -> FuzzResult:
    result = FuzzResult()
    pool = []
    for _ in range(512):
        flags = random_flags(rng)
        pool.append((tm.encode_tag_record(random_record(rng), flags), flags))
    for i in range(n):
        if i % 256 == 0:
            flags = random_flags(rng)
            pool[rng.randrange(len(pool))] = (tm.encode_tag_record(random_record(rng), flags), flags)
        kind = rng.random()
        offset = 0
        if kind < 0.5:
            buf, flags = rng.choice(pool)
            result.valid_in += 1
        elif kind < 0.8:
            wire, flags = rng.choice(pool)
            buf = corrupt(rng, b"\xff\x00" + wire)[2:] or b"\x00"
            if rng.random() < 0.2:
                flags ^= 1 << rng.randrange(16)  # flags that do not match the record
        else:
            buf = rng.randbytes(rng.randint(0, 120))
            flags = rng.getrandbits(16) if rng.random() < 0.3 else random_flags(rng)
            offset = rng.randint(-2, len(buf) + 2)
        result.fed += 1
        try:
            tm.decode_tag_record(buf, offset, flags)
        except ProtocolError:
            result.rejected += 1
            continue
        except Exception:
            result.escape()
            continue
        result.recovered += 1
    return result


# -- Mercury4 RQL lines ---------------------------------------------------------------------------------
# Lines as a confused or corrupted reader link would send them: good rows, rows with a character flipped,
# cut short or padded, Error lines, empty lines and random bytes.  Each goes through parse_row (only
# RqlError may come out) and, in randomly cut chunks, through ResponseParser (nothing may come out);
# every fourth line a mutated poll statement goes through the emulator's statement parser.

_STATEMENT = select_statement((1, 2), 250).rstrip().rstrip(";")
_ALPHABET = "0123456789abcdefABCDEFxX|;:=()' \t\r\x00\x7f\u00e9\u0661"


def _good_row(rng: random.Random) -> str:
    epc = rng.randbytes(rng.choice((12, 12, 16, 2, 62))).hex()
    epc = epc.upper() if rng.random() < 0.7 else epc
    return f"{rng.choice(('0x', '0X'))}{epc}|{rng.randint(1, 4)}|{rng.randint(1, 50)}"


def _mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(chars) + 1)
        if op == 0 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif op == 1:
            chars.insert(pos, rng.choice(_ALPHABET))
        elif op == 2 and chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(_ALPHABET)
        else:
            chars = chars[:pos]
    return "".join(chars)


def _line(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.35:
        return _good_row(rng).encode()
    if kind < 0.65:
        return _mutate(rng, _good_row(rng)).encode("utf-8", errors="replace")
    if kind < 0.72:
        return f"Error {rng.randint(0, 9999):04d}: {_mutate(rng, 'Syntax Error')}".encode()
    if kind < 0.82:
        return rng.choice((b"", b"\r", b" "))
    if kind < 0.97:
        return rng.randbytes(rng.randint(1, 80)).replace(b"\n", b"")
    return f"0x{'AB' * 12}|1|{'9' * rng.randint(4000, 9000)}".encode()  # overlong; too many digits for int()


def fuzz_rql(rng: random.Random, n: int) -> tuple[int, int]:
    """Feed ``n`` generated lines to the RQL parsers; return (lines fed, exceptions escaped)."""
    parser = ResponseParser()
    escaped = 0
    pending = b""
    for i in range(n):
        line = _line(rng)
        try:
            parse_row(line.decode("utf-8", errors="replace"))
        except RqlError:
            pass
        except Exception:
            escaped += 1
        pending += line + rng.choice((b"\n", b"\n", b"\r\n"))
        if rng.random() < 0.5:
            cut = rng.randint(0, len(pending))
            try:
                parser.feed(pending[:cut])
            except Exception:
                escaped += 1
            pending = pending[cut:]
        if i % 4 == 0:
            try:
                parse_statement(_mutate(rng, _STATEMENT))
            except RqlError:
                pass
            except Exception:
                escaped += 1
    try:
        parser.feed(pending + b"\n\n")
    except Exception:
        escaped += 1
    return n, escaped


register("mercury4.rql")(counting_target(fuzz_rql))


# -- LLRP messages --------------------------------------------------------------------------------------
# Real captured messages (tests/data/llrp), mutated like the serial frames, through the message splitter
# (nothing may come out) and sllurp's decoder behind decode_message (only LLRPProtocolError).

_LLRP_DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "llrp"


def _llrp_messages() -> list[bytes]:
    data = b"".join(bytes.fromhex("".join(p.read_text().split())) for p in sorted(_LLRP_DATA.glob("*.hex")))
    return split_messages(data).messages


@register("llrp.messages")
def fuzz_llrp(rng: random.Random, n: int) -> FuzzResult:
    result = FuzzResult()
    pool = _llrp_messages()
    logging.getLogger("sllurp").setLevel(logging.CRITICAL)  # it logs every message it cannot decode
    for _ in range(n):
        message = rng.choice(pool)
        kind = rng.random()
        if kind < 0.3:
            result.valid_in += 1
        elif kind < 0.9:
            message = corrupt(rng, message)
        else:
            message = rng.randbytes(rng.randint(1, 80))
        result.fed += 1
        try:
            parts = split_messages(rng.randbytes(rng.randint(0, 8)) + message)
        except Exception:
            result.escape()
            continue
        result.rejected += parts.skipped
        for part in parts.messages:
            try:
                decode_message(part)
                result.recovered += 1
            except LLRPProtocolError:
                result.rejected += 1
            except Exception:
                result.escape()
    return result


# -- running --------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000, help="inputs per target (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument(
        "--target", action="append", choices=sorted(TARGETS), help="run only this target (repeatable)"
    )
    args = ap.parse_args(argv)

    failed = False
    started = time.perf_counter()
    print(f"fuzzing with {args.frames:,} inputs per target, seed {args.seed}")
    columns = ("fed", "valid in", "recovered", "rejected")
    print(
        f"{'target':<30}" + "".join(f" {c:>10}" for c in columns) + f" {'escaped':>8} {'s':>6} {'rate/s':>9}"
    )
    for name in args.target or list(TARGETS):
        t0 = time.perf_counter()
        result = TARGETS[name](random.Random(f"{args.seed}:{name}"), args.frames)
        seconds = time.perf_counter() - t0
        rate = result.fed / seconds if seconds else 0.0
        print(
            f"{name:<30} {result.fed:>10,} {result.valid_in:>10,} {result.recovered:>10,}"
            f" {result.rejected:>10,} {result.escaped:>8,} {seconds:>6.1f} {rate:>9,.0f}"
        )
        if result.note:
            print(f"{'':<30} {result.note}")
        if result.inconsistent:
            print(f"{'':<30} PARSER COUNTERS DID NOT ADD UP {result.inconsistent} times")
        if result.first_escape:
            print(f"first escaped exception in {name}:\n{result.first_escape}")
        failed |= bool(result.escaped or result.inconsistent or result.fed < args.frames)
    print(f"total {time.perf_counter() - started:.1f} s: {'FAILED' if failed else 'no exception escaped'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
