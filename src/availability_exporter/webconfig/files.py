"""Noticing that files changed: by ``stat`` on every look, by content hash when ``stat`` moved.

The web config and the certificate files it names are looked at on every request or TLS
handshake, as exporter-toolkit does. A ``stat`` per file keeps that cheap; the content hash
keeps a touched-but-unchanged file (``kubectl`` re-applying a Secret, a deploy tool copying
the same bytes) from causing a reload.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["FileWatch"]

_Stamp = tuple[int, ...]


def _stamp(path: Path) -> _Stamp:
    # Inode and device catch a replaced file or a Kubernetes ``..data`` symlink swap even
    # when size and mtime happen to match; ctime catches a same-second rewrite.
    try:
        st = os.stat(path)
    except OSError as exc:
        return (-1, exc.errno or 0)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _digest(paths: Sequence[Path]) -> bytes:
    sha = hashlib.sha256()
    for path in paths:
        try:
            data = b"=" + path.read_bytes()
        except OSError as exc:
            # A file that cannot be read is a state of its own, so losing or regaining it
            # counts as a change.
            data = b"!" + str(exc.errno).encode()
        sha.update(len(data).to_bytes(8, "big"))
        sha.update(data)
    return sha.digest()


class FileWatch:
    """Tells whether some files' content changed since the last look.

    Not thread-safe; it is used from the event loop only.
    """

    def __init__(self) -> None:
        self._paths: tuple[Path, ...] = ()
        self._stamps: tuple[_Stamp, ...] | None = None
        self._digest: bytes | None = None

    def changed(self, paths: Sequence[Path]) -> bool:
        """True once per change of the files' content (or of which files are watched).

        The first look primes the watch and answers True. The stamps are taken before
        the content is hashed, so a write that lands in between shows up at the next look
        rather than being lost.
        """
        paths = tuple(paths)
        stamps = tuple(_stamp(path) for path in paths)
        if paths == self._paths and stamps == self._stamps:
            return False
        self._stamps = stamps
        digest = _digest(paths)
        if paths == self._paths and digest == self._digest:
            return False
        self._paths = paths
        self._digest = digest
        return True
