"""The client side of turso-server's write leases (``/<ns>/-/lease``), over aiohttp.

A replica holds its namespace's lease while it pulls, commits and pushes, so no other replica can
write in between; see ``docs/consistency.md`` and turso-server's ``_leases`` for the protocol.
Every failure maps onto the service's error tree: a lease another replica keeps past our wait is
:class:`TursoBusyError` (the transaction is re-run), an unreachable server is
:class:`TursoUnavailableError`, a sync URL that is not a turso-server is a
:class:`TursoConfigError` naming ``TURSO_WRITE_MODE``. Used by ``_backends``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass

import aiohttp

from ._errors import TursoBusyError, TursoConfigError, TursoUnavailableError
from ._tokens import TokenSource

LEASE_PATH = "/-/lease"
LEASE_BUSY = "TURSO_LEASE_BUSY"  # the code of a TursoBusyError that already waited: never re-run
REQUEST_MARGIN = 1.0  # beyond the lease wait or a write's deadline, for the round trip itself
_HOLDER_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]+")


def new_holder() -> str:
    """A holder id unique to this replica instance: ``<host>.<pid>.<random>``."""
    host = _HOLDER_UNSAFE.sub("-", socket.gethostname())[:60] or "host"
    return f"{host}.{os.getpid()}.{secrets.token_hex(6)}"


@dataclass
class Lease:
    """A lease we hold. ``valid_until`` is conservative: measured from when we *asked*;
    ``acquired_at`` is when the grant arrived (what ``LEASE_MAX_HOLD`` counts from)."""

    token: str
    fence: int
    ttl: float
    acquired_at: float
    valid_until: float

    def usable(self, now: float) -> bool:
        """Still ours with a margin of a quarter TTL for the work about to start."""
        return now < self.valid_until - self.ttl / 4


class LeaseLost(Exception):
    """The server no longer knows this lease (expired, replaced, or the server restarted)."""


class LeaseClient:
    """Acquire, renew and release one namespace's write lease on behalf of one replica."""

    def __init__(self, url: str, token: TokenSource, holder: str) -> None:
        self.url = url
        self.holder = holder
        self._token = token  # asked per request: a re-read token file reaches the next one
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._closed:  # a late release must not open a session that nobody closes
            raise TursoUnavailableError("the lease client is closed", code="TURSO_CLOSED")
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def fenced_url(self, lease: Lease) -> str:
        """Where a push under ``lease`` goes: turso-server refuses it once the lease is gone."""
        return f"{self.url}{LEASE_PATH}/{lease.token}"

    async def acquire(self, *, ttl: float, wait: float) -> tuple[Lease, bool]:
        """``(lease, fresh)``; ``fresh`` means no one else wrote since our last write."""
        asked = time.monotonic()
        body = json.dumps({"holder": self.holder, "ttl": ttl, "wait": wait})
        status, payload = await self._call("POST", LEASE_PATH, body, timeout=wait + REQUEST_MARGIN)
        if status == 200 and isinstance(payload, dict) and isinstance(payload.get("token"), str):
            granted_ttl = float(payload.get("ttl", ttl))
            # The expiry counts from when we asked (conservative); the hold time from the grant, or
            # a replica that queued behind another pod would give the lease back after one batch.
            lease = Lease(
                payload["token"],
                int(payload.get("fence", 0)),
                granted_ttl,
                time.monotonic(),
                asked + granted_ttl,
            )
            return lease, bool(payload.get("fresh"))
        if status == 409:
            raise TursoBusyError(
                f"the write lease of {self.url} stayed with another replica for {wait:g}s",
                code=LEASE_BUSY,
            )
        if status in (404, 405):
            raise TursoConfigError(
                f"{self.url} does not offer write leases (HTTP {status}): serializable sync writes need "
                "turso-server; for a plain tursodb sync server set TURSO_WRITE_MODE=offline "
                "(last push wins, see docs/consistency.md)",
                code="TURSO_LEASE_UNSUPPORTED",
            )
        raise TursoUnavailableError(
            f"write lease request to {self.url} failed: HTTP {status} {_code(payload)}".rstrip(),
            code="TURSO_LEASE_FAILED",
        )

    async def renew(self, lease: Lease, *, deadline: float | None = None) -> None:
        """Extend ``lease`` by its TTL; :class:`LeaseLost` when the server no longer has it.

        ``deadline`` (``time.monotonic()``): a write waiting for it, which an unanswered renewal
        holds up at most ``REQUEST_MARGIN`` past it.
        """
        asked = time.monotonic()
        timeout = lease.ttl
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - asked) + REQUEST_MARGIN)
        status, payload = await self._call("PUT", f"{LEASE_PATH}/{lease.token}", None, timeout=timeout)
        if status == 200:
            lease.valid_until = asked + lease.ttl
            return
        if status == 409:
            raise LeaseLost(_code(payload))
        raise TursoUnavailableError(f"write lease renewal failed: HTTP {status}", code="TURSO_LEASE_FAILED")

    async def reach(self, *, timeout: float) -> int:
        """One ``GET`` of the lease path, for health: turso-server authenticates and authorises it
        as a read (an ``ro`` token may ask), then answers 405 without touching the namespace (it
        creates nothing);
        a plain tursodb answers 404. The HTTP status; :class:`TursoUnavailableError` when nothing
        answered within ``timeout``."""
        status, _ = await self._call("GET", LEASE_PATH, None, timeout=timeout)
        return status

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` back; errors are ignored (it expires by itself)."""
        with contextlib.suppress(TursoUnavailableError):
            await self._call("DELETE", f"{LEASE_PATH}/{lease.token}", None, timeout=lease.ttl)

    async def _call(self, method: str, path: str, body: str | None, *, timeout: float) -> tuple[int, object]:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token := self._token():
            headers["Authorization"] = f"Bearer {token}"
        try:
            async with self._client().request(
                method,
                self.url + path,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TursoUnavailableError(
                f"turso-server at {self.url} is unreachable: {type(exc).__name__}", code="TURSO_UNAVAILABLE"
            ) from exc
        try:
            payload: object = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        return response.status, payload

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def _code(payload: object) -> str:
    return str(payload.get("code", "")) if isinstance(payload, dict) else ""
