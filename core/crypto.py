"""Personal data encrypted at rest: a field cipher for the ID and mobile columns, and a blind index
that keeps the search by ID number exact.

``privacy-security.md`` §1 (JR/T 0171-2020): ID numbers and phone numbers are class C2, "encrypted in
transit and at rest"; §4 item 7 asks for C2 encrypted at rest.  So an identity store keeps those
columns as AES-256-GCM ciphertexts, never in clear:

* **A value** is stored as ``version (1 byte) || key id (4 bytes) || nonce (12 bytes) || ciphertext
  and tag``.  Every value has a random nonce of its own, and its associated data is the column and
  the row it belongs to (``customers.id_number`` and the customer number), so a ciphertext copied to
  another column or another customer does not decrypt.  The key id says which key to decrypt with, so
  keys can rotate while old values are still readable (:meth:`FieldCipher.decrypt`).
* **The blind index** of an ID number is an HMAC-SHA256 (truncated to 128 bits) of the number
  normalised by :func:`normalise_id_number`, under a second key.  It sits in an indexed column, so an
  ID-number search stays one exact, indexed lookup without decrypting anything.
* **The keys** come from one secret of at least :data:`MIN_KEY_CHARS` characters: HKDF-SHA256 derives
  the encryption key, the index key and the 4-byte key id, so the two keys are never the same bytes.
  The profile names the secret (``privacy.data_key: !secret data_key``) and any retired ones still
  needed to read older values (``privacy.retired_data_keys``).  A profile that names none gets a key
  made once for its data directory, in :data:`LOCAL_KEY_FILE`, readable by its owner only, and
  ``vipsense check`` notes that a real branch names its own (:func:`local_key_note`).

Nothing here prints a key or a value: errors name the key id and the column, never the data.
``cryptography`` is imported when the first key is loaded, not when this module is.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import stat
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .config.types import Secret
from .i18n import _

log = logging.getLogger(__name__)

VERSION = 1  #: the first byte of every stored value
KEY_ID_BYTES = 4
NONCE_BYTES = 12  #: AES-GCM's standard nonce: random per value (NIST SP 800-38D §8.2.2)
_HEADER = 1 + KEY_ID_BYTES
_BODY = _HEADER + NONCE_BYTES
INDEX_BYTES = 16  #: the blind index, truncated: 128 bits, and a search compares the decrypted number too
MIN_KEY_CHARS = 32  #: a secret shorter than this is refused (a random key is 43 characters)
LOCAL_KEY_FILE = "data.key"  #: in the data directory, when the profile names no key
_SALT = b"vipsense field encryption v1"
_ID_SEPARATORS = str.maketrans("", "", " \t-\u00a0\u3000")


class CipherError(ValueError):
    """A key is missing, unusable or wrong, or a stored value was altered.  One line for people; it
    never holds a key or a value."""


def new_key() -> str:
    """A fresh random key for a secrets file: 32 bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def normalise_id_number(value: str) -> str:
    """The ID number a blind index is computed from: full-width digits as ASCII (NFKC), spaces and
    dashes removed, the check character ``x`` upper case.  ``310115 19800208 103x`` and
    ``31011519800208103X`` are one number."""
    return unicodedata.normalize("NFKC", value).translate(_ID_SEPARATORS).upper()


def key_problem(text: str) -> str | None:
    """Why ``text`` cannot be a data key, or None."""
    if len(text) < MIN_KEY_CHARS:
        return _(
            "a data key needs at least {minimum} characters, got {length}; make one with 'vipsense keys new'"
        ).format(minimum=MIN_KEY_CHARS, length=len(text))
    return None


class DataKey:
    """One secret's derived keys.  ``repr`` shows the key id and where the key came from only."""

    __slots__ = ("_aead", "_index", "index_key", "key_id", "raw_id", "source")

    def __init__(self, text: str, source: str) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        problem = key_problem(text)
        if problem:
            raise CipherError(f"{source}: {problem}")

        def derive(info: bytes, length: int) -> bytes:
            return HKDF(hashes.SHA256(), length, _SALT, info).derive(text.encode("utf-8"))

        self._aead = AESGCM(derive(b"aes-256-gcm", 32))
        self.index_key = derive(b"blind index", 32)
        self._index = hmac.new(self.index_key, digestmod="sha256")  #: copied per value: no key set-up
        self.raw_id = derive(b"key id", KEY_ID_BYTES)
        self.key_id = self.raw_id.hex()  #: how people and messages name the key
        self.source = source

    def __repr__(self) -> str:
        return f"DataKey({self.key_id}, from {self.source})"

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return bytes((VERSION,)) + self.raw_id + nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, stored: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(stored[_HEADER:_BODY], stored[_BODY:], aad)

    def index(self, number: str) -> bytes:
        """The blind index of a normalised ID number under this key."""
        mac = self._index.copy()
        mac.update(number.encode("utf-8", "surrogatepass"))
        return mac.digest()[:INDEX_BYTES]


def key_id_of(stored: Any) -> str | None:
    """The key id a stored value is encrypted under; None for a value in clear (or none)."""
    if isinstance(stored, bytes) and len(stored) > _BODY and stored[0] == VERSION:
        return stored[1:_HEADER].hex()
    return None


# -- where keys come from -----------------------------------------------------------------------------


def _owner_only(path: Path) -> None:
    """A key file that others may read is made owner-only again, with a warning (it must not stay so)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        path.chmod(0o600)
        log.warning("%s was readable by other users (mode %o); it is now owner-only (600)", path, mode)


class LocalKeyFile:
    """The keys of one data directory, one per line: the first encrypts, the others only decrypt
    (a rotation in progress).  Made on first use, mode 0600 in a 0700 directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def exists(self) -> bool:
        return self.path.exists()

    def read(self) -> list[str]:
        _owner_only(self.path)
        lines = self.path.read_text(encoding="utf-8").splitlines()
        keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not keys:
            raise CipherError(
                _("{file} holds no key; restore it from where you keep its copy").format(file=self.path)
            )
        return keys

    def read_or_create(self) -> list[str]:
        if not self.path.exists():
            self.write([new_key()], exclusive=True)
        return self.read()

    def write(self, keys: Sequence[str], exclusive: bool = False) -> None:
        """Replace the file atomically (a reader sees the old keys or the new, never half a file).
        ``exclusive``: only if there is none yet (another process may be making it right now)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = (
            "# vipsense data keys of this data directory, made by vipsense: the first encrypts, any other\n"
            "# only decrypts.  Owner-only; keep it apart from backups of identity.sqlite3 (docs/cards.md).\n"
            + "".join(f"{k}\n" for k in keys)
        )
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            if exclusive:
                with contextlib.suppress(FileExistsError):  # another process made one first: use theirs
                    os.link(partial, self.path)
            else:
                os.replace(partial, self.path)
        finally:
            partial.unlink(missing_ok=True)


class FieldCipher:
    """Encrypts and decrypts the values of personal-data columns, and computes blind indexes.

    Keys are loaded on first use, so making a cipher touches no file.  A value under a key id this
    cipher does not hold makes it load its keys again once (another process may have rotated them)
    before it gives up with :class:`CipherError`.  Thread-safe.
    """

    def __init__(self, load: Callable[[], list[DataKey]], describe: str, local: LocalKeyFile | None) -> None:
        self._load = load
        self.describe = describe  #: where the keys come from, for messages
        self.local = local  #: the data directory's key file, when this cipher may use one
        self._keys: dict[bytes, DataKey] | None = None
        self._current: DataKey | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FieldCipher({self.describe})"

    # -- the keys ---------------------------------------------------------------------------------

    @classmethod
    def local_only(cls, data_dir: Path) -> FieldCipher:
        """The keys of ``data_dir``'s own key file, made there on first use."""
        local = LocalKeyFile(Path(data_dir) / LOCAL_KEY_FILE)

        def load() -> list[DataKey]:
            return [DataKey(k, f"{local.path}") for k in local.read_or_create()]

        return cls(load, f"the key file {local.path}", local)

    @classmethod
    def configured(cls, current: Secret, retired: Iterable[Secret], data_dir: Path) -> FieldCipher:
        """The profile's keys (``privacy.data_key`` encrypts, ``retired_data_keys`` only decrypt), and,
        to decrypt only, a key file the data directory still holds from before a key was named."""
        retired = tuple(retired)
        local = LocalKeyFile(Path(data_dir) / LOCAL_KEY_FILE)

        def load() -> list[DataKey]:
            keys = [DataKey(current.reveal(), current.source or "privacy.data_key")]
            keys += [DataKey(s.reveal(), s.source or "privacy.retired_data_keys") for s in retired]
            if local.exists():
                keys += [DataKey(k, f"{local.path}") for k in local.read()]
            return keys

        return cls(load, current.source or "privacy.data_key", local)

    def _ensure(self) -> dict[bytes, DataKey]:
        keys = self._keys
        if keys is None:
            with self._lock:
                if self._keys is None:
                    self._install(self._load())
                keys = self._keys
        return keys  # type: ignore[return-value]

    def _install(self, loaded: list[DataKey]) -> None:
        by_id: dict[bytes, DataKey] = {}
        for key in loaded:
            by_id.setdefault(key.raw_id, key)
        self._current, self._keys = loaded[0], by_id

    def reload(self) -> None:
        """Load the keys again (after a rotation changed the key file)."""
        with self._lock:
            self._install(self._load())

    @property
    def current(self) -> DataKey:
        """The key new values are encrypted under."""
        self._ensure()
        return self._current  # type: ignore[return-value]

    @property
    def key_ids(self) -> list[str]:
        """Every key id this cipher can decrypt, the current one first."""
        keys = self._ensure()
        return [self.current.key_id, *(k.key_id for k in keys.values() if k is not self._current)]

    def knows(self, key_id: str) -> bool:
        return bytes.fromhex(key_id) in self._ensure()

    def _key(self, raw_id: bytes) -> DataKey:
        key = self._ensure().get(raw_id)
        if key is None:
            self.reload()
            key = self._ensure().get(raw_id)
        if key is None:
            raise CipherError(
                _(
                    "a stored value is encrypted under data key {key}, which {keys} does not hold; name"
                    " that key in privacy.data_key or privacy.retired_data_keys"
                ).format(key=raw_id.hex(), keys=self.describe)
            )
        return key

    # -- values -----------------------------------------------------------------------------------

    def encrypt(self, column: str, row: str, value: str | None) -> bytes | None:
        """``value`` sealed for ``column`` of the row whose key is ``row``; None stays None."""
        if value is None:
            return None
        current = self._current or self.current
        return current.seal(value.encode("utf-8"), _aad(column, row))

    def decrypt(self, column: str, row: str, stored: Any) -> str | None:
        """The value ``encrypt`` sealed.  A value still in clear (a file that predates encryption and
        has not been opened by its store since) is returned as it is."""
        if stored is None or isinstance(stored, str):
            return stored
        if len(stored) <= _BODY or stored[0] != VERSION:
            raise CipherError(
                _("a stored {column} value of {row} is not an encrypted value of this version").format(
                    column=column, row=repr(row)
                )
            )
        key = self._key(stored[1:_HEADER])
        from cryptography.exceptions import InvalidTag

        try:
            return key.open(stored, _aad(column, row)).decode("utf-8")
        except InvalidTag:
            raise CipherError(
                _(
                    "the stored {column} of {row} does not decrypt under data key {key}: the file was"
                    " altered, or the value was moved from another row"
                ).format(column=column, row=repr(row), key=key.key_id)
            ) from None

    def index(self, id_number: str | None) -> bytes | None:
        """The blind index of an ID number under the current key; None for none."""
        if id_number is None:
            return None
        current = self._current or self.current
        return _index(current, normalise_id_number(id_number))

    def indexes(self, id_number: str) -> list[bytes]:
        """The ID number's blind index under every key held, current first: a search finds rows
        written before a rotation too."""
        number = normalise_id_number(id_number)
        keys = self._ensure()
        ordered = [self.current, *(k for k in keys.values() if k is not self._current)]
        return [_index(k, number) for k in ordered]


def _aad(column: str, row: str) -> bytes:
    return f"{column}\x00{row}".encode("utf-8", "surrogatepass")


def _index(key: DataKey, number: str) -> bytes:
    return key.index(number)


def local_key_note(data_key: Secret | None, data_dir: Path) -> str | None:
    """What ``vipsense check`` says of a profile that names no data key, or None when it names one.

    A note, not a profile warning: the demo and tests run on the data directory's key and must start
    without a warning, while the operator checking a real branch's profile learns the trade-off: a key
    kept beside the data protects a copy of the database file alone, not a copy of the directory."""
    if data_key is not None:
        return None
    return _(
        "no privacy.data_key: ID and mobile numbers are encrypted with a key kept in the data directory"
        " ({file}), so whoever copies the directory has the key too; a real branch sets data_key:"
        " !secret data_key and keeps the key in its secrets file (vipsense keys new makes one)"
    ).format(file=Path(data_dir) / LOCAL_KEY_FILE)


def profile_cipher(data_key: Secret | None, retired: Iterable[Secret], data_dir: Path) -> FieldCipher:
    """The cipher a profile's stores get (``privacy.data_key``, else the data directory's key file)."""
    if data_key is None:
        return FieldCipher.local_only(data_dir)
    return FieldCipher.configured(data_key, retired, data_dir)
