"""The plugin example in README.md works as printed: installed as a distribution, driven over TCP."""

from __future__ import annotations

import io
import re
import socket
import sqlite3
import threading
import time

from vipsense.branch import Branch
from vipsense.config.profile import load_profile
from vipsense.output import Output
from vipsense.pluginhost import PluginState, load_host

from .conftest import BASE_PROFILE, REPO


def readme_plugin_source() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    [block] = [b for b in blocks if "vipsense_register_reader_types" in b]
    return block


def test_readme_plugin_example_greets_a_customer(fake_distribution, write_profile, tmp_path):
    fake_distribution("vipsense-acme", {"acme": readme_plugin_source()}, version="0.1.0")
    host = load_host()
    [info] = [p for p in host.plugins if p.name == "acme"]
    assert info.state is PluginState.LOADED, info.error

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            for _ in range(3):
                conn.sendall(b"E20000000000000000000001 1 -48\n")
            time.sleep(3)

    threading.Thread(target=serve, daemon=True).start()
    text = BASE_PROFILE.replace("{id: door, type: simulated, visitors: []}", f"{{type: acme, port: {port}}}")
    profile = load_profile(write_profile(text), host, data_dir=tmp_path / "data")
    out = io.StringIO()
    branch = Branch(profile, host, output=Output(out, live=False))
    branch.start()
    try:
        deadline = time.monotonic() + 5
        while "Ada Wong" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert branch.status.devices["acme"].state == "connected"
    finally:
        branch.stop()
        server.close()
    [reader] = branch.readers
    assert not reader.thread.is_alive(), "interrupt() did not unblock the read"
    assert "Ada Wong" in out.getvalue()
    rows = sqlite3.connect(tmp_path / "data" / "visits.sqlite3").execute("SELECT kind, reader_id FROM visits")
    assert rows.fetchall() == [("greeted", "acme")]
