"""Every file vipsense keeps is its owner's alone.

The data directory holds personal financial data (visits are whereabouts; the identity store holds
customers; ``privacy-security.md`` §1-§2, JR/T 0171-2020 C2/C3): another local account must not read
it.  So the command line creates everything with umask 077 (directories 0700, files 0600, SQLite's
-wal and -shm files and exports included), and a branch checks its data directory at start: whatever
is open to the group or to others is made owner-only, and said so in the log.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
UMASK = 0o077  #: what the group and others may do with anything vipsense creates: nothing


def private_umask() -> int:
    """Create owner-only files from now on (the process's umask); returns the previous umask."""
    return os.umask(UMASK)


def secure_tree(directory: Path) -> list[tuple[Path, int]]:
    """Create ``directory`` if missing and make it and everything in it owner-only.  Returns each path
    whose mode was open to the group or others, with that mode (logged as a warning)."""
    directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    opened: list[tuple[Path, int]] = []
    for path in (directory, *directory.rglob("*")):
        try:
            st = path.lstat()
        except OSError:  # removed meanwhile
            continue
        if stat.S_ISLNK(st.st_mode):
            continue  # a link's own mode means nothing; its target is outside or checked itself
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            wanted = PRIVATE_DIR if stat.S_ISDIR(st.st_mode) else mode & PRIVATE_FILE
            try:
                path.chmod(wanted)
            except OSError as exc:
                log.error("cannot make %s owner-only (mode %o): %s", path, mode, exc)
                continue
            opened.append((path, mode))
    for path, mode in opened:
        log.warning("%s was open to other accounts (mode %o): made owner-only", path, mode)
    return opened
