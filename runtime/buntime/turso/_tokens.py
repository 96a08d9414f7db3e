"""The bearer token a replica sends to its sync server: a fixed value, or a file read again on change.

``TURSO_SERVER_TOKEN_FILE`` / ``TURSO_SYNC_AUTH_TOKEN_FILE`` (``_config``) name a file, such as a
key of a Kubernetes Secret volume. The kubelet refreshes such a volume by writing the new data
beside the old and swapping a symlink, so :class:`TokenSource` stats the *path* on every call
(a cheap ``os.stat``, never an open descriptor, which would keep the old file) and reads the file
again when its inode, size or mtime changed. A re-minted token then reaches the next request of a
running process without a restart.

Every user of the token reads it through one :class:`TokenSource`: pyturso's sync client (which
calls it per HTTP request, ``_engine.open_replica``), the lease client (``_leases``) and the
bootstrap of a reset (``_backends``). The token never reaches a log, an error or a ``repr``; errors
name the file's path only. Created by ``_service`` from the resolved config.
"""

from __future__ import annotations

import os
import threading

from ._errors import TursoUnavailableError

TOKEN_UNREADABLE = "TURSO_TOKEN_FILE_UNREADABLE"


class TokenSource:
    """The current token: ``source()`` returns it (``None`` for none).

    Usage::

        source = TokenSource(token="abc")              # fixed
        source = TokenSource(path="/var/run/turso/token")  # re-read when the file changes
        headers = {"Authorization": f"Bearer {source()}"}

    * **token** *(optional)* — a fixed token; ``""`` or ``None`` is no token.
    * **path** *(optional)* — a file holding the token (surrounding white space is ignored; an
      empty file is no token). Exclusive with ``token``.

    A file that cannot be read keeps the last token read from it (the next call tries again); if
    none was ever read, the call raises :class:`TursoUnavailableError` (``TURSO_TOKEN_FILE_UNREADABLE``).
    Safe to call from any thread (the engine threads and the event loop share one source).
    """

    def __init__(self, *, token: str | None = None, path: str | None = None) -> None:
        if token and path:
            raise ValueError("a TokenSource takes a token or a path, not both")
        self.path = path or None
        self._token = token or None
        self._seen: tuple[int, int, int, int] | None = None  # (device, inode, size, mtime_ns)
        self._read_once = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the token
        return f"TokenSource(path={self.path!r})" if self.path else "TokenSource(fixed)"

    def __call__(self) -> str | None:
        if self.path is None:
            return self._token
        with self._lock:
            self._refresh(self.path)
            return self._token

    def _refresh(self, path: str) -> None:
        try:
            info = os.stat(path)  # follows the symlink the kubelet swaps
            seen = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
            if seen == self._seen:
                return
            with open(path, encoding="utf-8") as handle:
                text = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            if self._read_once:
                return  # keep the last token; a swap in progress or a transient error
            raise TursoUnavailableError(
                f"cannot read the Turso token file {path}: {type(exc).__name__}", code=TOKEN_UNREADABLE
            ) from None
        self._seen = seen
        self._token = text or None
        self._read_once = True
