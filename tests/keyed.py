"""The lifecycle branch (tests/lifecycle.py) with its data key named in a secrets file, as a bank's
branch has it, for the command-line tests of cards, customers and keys.
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import attrs

from .lifecycle import Branch, make_branch


@attrs.define
class KeyedBranch(Branch):
    key: str = ""

    @property
    def identity_file(self) -> Path:
        return self.dir / "identity.sqlite3"

    def identity_bytes(self) -> bytes:
        """Every byte of the identity store on disk: the database, its WAL and shared memory."""
        return b"".join(p.read_bytes() for p in sorted(self.dir.glob("identity.sqlite3*")))

    def customer(self, customer_no: str):
        """The customer as the branch's own store reads it back (decrypted with the profile's key)."""
        store = self.store()
        try:
            return store.find_customer(customer_no)
        finally:
            store.close()

    def store(self, store_id: str = "local"):
        """The profile's store, built and opened as a command builds it."""
        from vipsense.config.profile import load_profile
        from vipsense.identity.standalone import build
        from vipsense.pluginhost import load_host

        host = load_host()
        profile = load_profile(self.profile, host)
        store = build(host, profile, next(s for s in profile.stores if s.id == store_id))
        store.open()
        return store


def name_data_key(profile: Path, key: str | None = None, retired: tuple[str, ...] = ()) -> str:
    """Give ``profile`` a ``privacy.data_key`` (and retired keys) from ``secrets.yaml`` beside it."""
    key = key or secrets.token_urlsafe(32)  # what vipsense keys new prints
    file = profile.parent / "secrets.yaml"
    names = {"data_key": key} | {f"old_key_{i}": k for i, k in enumerate(retired)}
    file.write_text("".join(f"{name}: {value}\n" for name, value in names.items()), encoding="utf-8")
    file.chmod(0o600)
    text = profile.read_text(encoding="utf-8")
    text = re.sub(r"data_key: !secret data_key, |retired_data_keys: \[[^\]]*\], ", "", text)  # named before
    old = "".join(f"!secret old_key_{i}, " for i in range(len(retired))).rstrip(", ")
    extra = "data_key: !secret data_key, " + (f"retired_data_keys: [{old}], " if retired else "")
    profile.write_text(text.replace("privacy: {", "privacy: {" + extra, 1), encoding="utf-8")
    return key


def keyed_branch(tmp_path: Path, capsys, keyed: bool = True, **kw) -> KeyedBranch:
    """The lifecycle branch; ``keyed=False`` leaves the profile as it is (the data directory's key)."""
    plain = make_branch(tmp_path, capsys, **kw)
    key = name_data_key(plain.profile) if keyed else ""
    return KeyedBranch(plain.dir, plain.profile, plain.capsys, key)
