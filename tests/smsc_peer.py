"""A local SMS centre for the SMPP notifier's tests: the smpp34 SMSC on 127.0.0.1, behind a bind gate.

Run as a program (``python tests/smsc_peer.py --port 2775 --out texts.jsonl``).  It prints one JSON
line, ``{"event": "ready", "port": N}``, once it accepts connections, and then appends one JSON line
per event to ``--out``:

* ``bind``: a bind request, with ``ok``, ``system_id``, ``status`` (never the password);
* ``submit``: each ``submit_sm`` as received (addresses, TON/NPI, ``data_coding``, ``esm_class``,
  ``registered_delivery``, the concatenation reference, the part's own decoded ``text``) and the
  ``status`` it was answered with;
* ``message``: a whole message once all its parts are in, the parts' texts joined in order (each
  part decoded on its own, as a phone does, so a part cut inside a UTF-16 surrogate pair shows as
  U+FFFD);
* ``dlr``: a delivery report pushed back (``--dlr``), and ``unbound`` when a session ends.

Why a gate: smpp34's Python ``Server`` accepts every bind (its bind listener is not exposed), so the
credentials are checked here before the connection is handed to smpp34: a refused bind is answered
with a ``bind_*_resp`` carrying the error status, as an operator's SMSC does.  ``--refuse-binds``
refuses every bind; ``--reject STATUS [--reject-count N] [--reject-after M]`` answers N submits
(default: all) with that status, after accepting the first M.

smpp34 1.5.0 aborts at interpreter exit once its server has run, so this program always ends with
``os._exit(0)``: on SIGTERM, when its stdin closes (the test process went away) or after
``--lifetime`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from typing import Any

import smpp34

#: SMPP 3.4 command_status values by name (§5.1.3).
STATUS = {
    "ESME_ROK": 0x00,
    "ESME_RSYSERR": 0x08,
    "ESME_RINVSRCADR": 0x0A,
    "ESME_RINVDSTADR": 0x0B,
    "ESME_RBINDFAIL": 0x0D,
    "ESME_RINVPASWD": 0x0E,
    "ESME_RINVSYSID": 0x0F,
    "ESME_RMSGQFUL": 0x14,
    "ESME_RTHROTTLED": 0x58,
}
BIND_IDS = {0x01: "transmitter", 0x02: "receiver", 0x09: "transceiver"}
HEADER = struct.Struct(">IIII")  #: command_length, command_id, command_status, sequence_number

# The GSM 7-bit default alphabet (3GPP TS 23.038), for data_coding 0 as unpacked septets.
GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~", 0x3E: "]"}
GSM7_EXT.update({0x40: "|", 0x65: "€"})


def decode_gsm7(data: bytes) -> str:
    out, escape = [], False
    for b in data:
        if escape:
            out.append(GSM7_EXT.get(b, "\ufffd"))
            escape = False
        elif b == 0x1B:
            escape = True
        else:
            out.append(GSM7[b & 0x7F])
    return "".join(out)


def decode_text(data: bytes, data_coding: int) -> str:
    if data_coding == 8:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == 0:
        return decode_gsm7(data)
    if data_coding == 3:
        return data.decode("latin-1")
    return data.hex()


def split_udh(short_message: bytes, esm_class: int) -> tuple[tuple[int, int, int] | None, bytes]:
    """``((reference, total, seq) | None, payload)``: the concatenation IE (8- or 16-bit reference)
    when the UDHI bit of esm_class is set."""
    if not esm_class & 0x40 or not short_message:
        return None, short_message
    udhl = short_message[0]
    udh, payload = short_message[1 : 1 + udhl], short_message[1 + udhl :]
    concat = None
    i = 0
    while i + 2 <= len(udh):
        iei, length = udh[i], udh[i + 1]
        value = udh[i + 2 : i + 2 + length]
        if iei == 0x00 and length == 3:
            concat = (value[0], value[1], value[2])
        elif iei == 0x08 and length == 4:
            concat = ((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + length
    return concat, payload


def c_strings(body: bytes, count: int) -> list[str]:
    fields, at = [], 0
    for _ in range(count):
        end = body.index(b"\x00", at)
        fields.append(body[at:end].decode("ascii", errors="replace"))
        at = end + 1
    return fields


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = open(args.out, "a", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
        self.inner_port = free_port()
        self.rejects_left = args.reject_count
        self.sessions: dict[str, Any] = {}
        self.pending: dict[tuple, dict[int, dict[str, Any]]] = {}
        self.count = 0
        self.seen = 0

    def record(self, **event: Any) -> None:
        self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
        self.out.flush()

    # -- the bind gate ------------------------------------------------------------------------------
    async def gate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            header = await reader.readexactly(HEADER.size)
            length, command_id, _, sequence = HEADER.unpack(header)
            body = await reader.readexactly(length - HEADER.size)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        if command_id not in BIND_IDS:
            writer.write(HEADER.pack(HEADER.size, 0x80000000, 0x04, sequence))  # generic_nack RINVBNDSTS
            await writer.drain()
            writer.close()
            return
        system_id, password, system_type = c_strings(body, 3)
        if self.args.refuse_binds:
            status = STATUS[self.args.refuse_binds]
        elif system_id != self.args.system_id:
            status = STATUS["ESME_RINVSYSID"]
        elif password != self.args.password:
            status = STATUS["ESME_RINVPASWD"]
        else:
            status = 0
        name = next(k for k, v in STATUS.items() if v == status)
        self.record(
            event="bind", ok=not status, mode=BIND_IDS[command_id], system_id=system_id,
            system_type=system_type, status=name,
        )  # fmt: skip
        if status:  # SMPP 3.4 §4.1: no body after a non-zero status
            writer.write(HEADER.pack(HEADER.size, command_id | 0x80000000, status, sequence))
            await writer.drain()
            writer.close()
            return
        try:
            inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", self.inner_port)
        except OSError:
            writer.close()
            return
        inner_writer.write(header + body)
        await asyncio.gather(self.pipe(reader, inner_writer), self.pipe(inner_reader, writer))

    @staticmethod
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    # -- the SMSC -----------------------------------------------------------------------------------
    def on_submit(self, ev: Any) -> None:
        concat, payload = split_udh(ev.short_message, ev.esm_class)
        self.seen += 1
        if self.rejects_left != 0 and self.args.reject and self.seen > self.args.reject_after:
            if self.rejects_left > 0:
                self.rejects_left -= 1
            status, message_id = self.args.reject, None
            ev.reject(STATUS[status])
        else:
            self.count += 1
            status, message_id = "ESME_ROK", f"{self.count:08X}"
            ev.accept(message_id)
        part_text = decode_text(payload, ev.data_coding)
        submit = {
            "event": "submit",
            "status": status,
            "message_id": message_id,
            "source_addr": ev.source_addr,
            "source_addr_ton": ev.source_addr_ton,
            "source_addr_npi": ev.source_addr_npi,
            "destination_addr": ev.destination_addr,
            "dest_addr_ton": ev.dest_addr_ton,
            "dest_addr_npi": ev.dest_addr_npi,
            "data_coding": ev.data_coding,
            "esm_class": ev.esm_class,
            "registered_delivery": ev.registered_delivery,
            "concat": list(concat) if concat else None,
            "text": part_text,
        }
        self.record(**submit)
        if message_id is None:
            return
        if self.args.dlr and ev.registered_delivery & 1 and ev.session_id in self.sessions:
            asyncio.get_running_loop().create_task(self.push_dlr(ev, message_id))
        if concat is None:
            self.record(
                event="message", destination_addr=ev.destination_addr, text=part_text, parts=1,
                message_ids=[message_id],
            )  # fmt: skip
            return
        reference, total, seq = concat
        key = (ev.session_id, ev.destination_addr, reference, total)
        parts = self.pending.setdefault(key, {})
        parts[seq] = submit
        if len(parts) == total and all(i in parts for i in range(1, total + 1)):
            del self.pending[key]
            ordered = [parts[i] for i in range(1, total + 1)]
            self.record(
                event="message",
                destination_addr=ev.destination_addr,
                text="".join(p["text"] for p in ordered),
                parts=total,
                message_ids=[p["message_id"] for p in ordered],
            )

    async def push_dlr(self, ev: Any, message_id: str) -> None:
        esme = self.sessions[ev.session_id]
        if not esme.can_receive:
            return
        stamp = time.strftime("%y%m%d%H%M")
        text = f"id:{message_id} sub:001 dlvrd:001 submit date:{stamp} done date:{stamp}"
        text += " stat:DELIVRD err:000 text:"
        tlvs = [
            smpp34.Tlv(smpp34.TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\x00"),
            smpp34.Tlv(smpp34.TLV_MESSAGE_STATE, b"\x02"),  # DELIVERED
        ]
        try:
            resp = await esme.deliver_sm(
                source_addr=ev.destination_addr, destination_addr=ev.source_addr, esm_class=0x04,
                short_message=text.encode("ascii"), tlvs=tlvs,
            )  # fmt: skip
            self.record(event="dlr", message_id=message_id, status=resp.command_status)
        except Exception as exc:  # the session went away first
            self.record(event="dlr", message_id=message_id, error=type(exc).__name__)

    async def run(self) -> None:
        server = smpp34.Server("127.0.0.1", self.inner_port, system_id=self.args.smsc_id)
        await server.start()
        gate = await asyncio.start_server(self.gate, "127.0.0.1", self.args.port)
        port = gate.sockets[0].getsockname()[1]
        print(json.dumps({"event": "ready", "port": port}), flush=True)
        while True:
            ev = await server.next()
            if isinstance(ev, smpp34.Esme):
                self.sessions[ev.session_id] = ev
            elif isinstance(ev, smpp34.SubmitSmEvent):
                self.on_submit(ev)
            elif isinstance(ev, smpp34.Unbound):
                self.sessions.pop(ev.session_id, None)
                self.record(event="unbound")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed when ready)")
    parser.add_argument("--system-id", default="vipsense")
    parser.add_argument("--password", default="secret12")
    parser.add_argument("--smsc-id", default="TESTSMSC", help="the system_id the SMSC answers with")
    parser.add_argument("--out", help="append the JSON lines here (default: stdout)")
    parser.add_argument("--refuse-binds", choices=sorted(STATUS), help="refuse every bind with this status")
    parser.add_argument("--reject", choices=sorted(STATUS), help="answer submits with this status")
    parser.add_argument("--reject-count", type=int, default=-1, help="reject only the first N (default all)")
    parser.add_argument("--reject-after", type=int, default=0, help="accept the first N submits")
    parser.add_argument("--dlr", action="store_true", help="push a delivery report for each accepted part")
    parser.add_argument("--lifetime", type=float, default=120.0, help="exit after this many seconds")
    args = parser.parse_args()

    def end(*_: Any) -> None:
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    if not sys.stdin.isatty():  # the test holds our stdin: EOF means it has gone
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), end()), daemon=True).start()
    threading.Timer(args.lifetime, end).start()
    try:
        asyncio.run(Peer(args).run())
    finally:
        end()


if __name__ == "__main__":
    main()
