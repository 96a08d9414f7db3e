"""A real turso-server subprocess (the ``turso-server`` console script) for cross-part tests.

Used by the operator, runtime and chart suites; turso-server's own suite drives it more finely.
The process can be stopped and started again on the same ports and data dir. ``with
TursoServer(...) as server:`` is how a test runs one: it starts the server and always stops it,
also when it never got ready (entering the same object again starts it again).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from tests.support.ports import free_port, free_range
from tests.support.tursodb import tursodb_bin, wait_listening

BACKEND_PORTS = 100  # children's ports per server


class TursoServer:
    """turso-server on two free loopback ports, with generated tokens and signing key."""

    def __init__(
        self, data_dir: Path, *, extra_env: dict[str, str] | None = None, command: list[str] | None = None
    ) -> None:
        self.data_dir = data_dir
        # The console script by default; a test may run a module that changes one thing first.
        self.command = command or [str(Path(sys.executable).with_name("turso-server"))]
        self.data_port = free_port()
        self.admin_port = free_port()
        self.data_token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.signing_key = secrets.token_urlsafe(48)
        self.extra_env = extra_env or {}
        self.backend_start = free_range(BACKEND_PORTS)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.data_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def fresh_replica(self, token: str, database: str, *statements: str) -> list[Any]:
        """A new replica of ``database`` (its own directory, as a new pod has) runs ``statements``
        and pushes; returns what the last one returned. The runtime's own client (blocking)."""
        from buntime.worker import open_turso  # only the tests that open replicas import the runtime

        workdir = self.data_dir.parent / f"replica-{secrets.token_hex(4)}"
        with open_turso(database, server_url=self.url, token=token, dir=str(workdir), env={}) as db:
            result: list[Any] = []
            for statement in statements:
                result = db.execute(statement)
            db.push()
        return result

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """An admin-port request with the admin token (and ``body`` as JSON):
        ``(status, JSON body)`` (text on errors)."""
        headers = {"Authorization": f"Bearer {self.admin_token}"}
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(f"{self.admin_url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode()

    def env(self) -> dict[str, str]:
        # Below the kernel's ephemeral range (32768+), where free_port() picks the listeners.
        start = self.backend_start
        return {
            "TURSO_DATA_ADDR": f"127.0.0.1:{self.data_port}",
            "TURSO_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            "TURSO_DATA_DIR": str(self.data_dir),
            "TURSODB_BIN": tursodb_bin(),
            "TURSO_AUTH_TOKEN": self.data_token,
            "TURSO_ADMIN_TOKEN": self.admin_token,
            "TURSO_TOKEN_SIGNING_KEY": self.signing_key,
            "TURSO_BACKEND_PORT_START": str(start),
            "TURSO_BACKEND_PORT_END": str(start + BACKEND_PORTS - 1),
            "TURSO_GC_INTERVAL": "0",
            **self.extra_env,
        }

    def start(self, timeout: float = 30.0) -> TursoServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.command, env={**os.environ, **self.env()}, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_listening(self.admin_port, timeout, proc=self.proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("turso-server did not become ready")

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()  # a server that never got ready must not outlive the test
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def pids(self) -> list[int]:
        """turso-server and every tursodb child serving its data dir (children run in sessions
        of their own: a signal to the parent alone does not reach them)."""
        out = [] if self.proc is None or self.proc.poll() is not None else [self.proc.pid]
        return out + _children(self.data_dir)

    def freeze(self) -> None:
        """SIGSTOP the server and its children: the kernel still accepts connections, nothing
        answers (a node that died before its endpoints were removed). :meth:`thaw` undoes it;
        :meth:`stop` does too, first."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def stop(self) -> None:
        self.thaw()  # a frozen process would take SIGTERM only once resumed
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def kill_tree(data_dir: Path, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL a turso-server and every tursodb child serving ``data_dir`` (what a pod kill does).

    Children run in sessions of their own, so killing the parent alone would leave them holding
    their database files and ports.
    """
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    for pid in _children(data_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _children(data_dir: Path) -> list[int]:
    """The tursodb processes serving ``data_dir`` (found by their command line)."""
    needle = str(data_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"tursodb" in cmdline:
            pids.append(int(entry.name))
    return pids


class SyncEndpoint:
    """A real turso-server without auth (``--insecure-dev``) serving database ``namespace``.

    The sync suites' stand-in for "the server": ``url`` is ``<server>/<namespace>`` for
    single-tenant replicas (the server itself with ``namespace=None``, for multi-tenant ones, the
    way the old path router was used); ``kill()`` is a crash
    of the whole pod, ``start()`` brings it back on the same ports and data.
    """

    def __init__(self, data_dir: Path, namespace: str | None = "runtime") -> None:
        self.server = TursoServer(
            data_dir,
            extra_env={
                "TURSO_INSECURE_DEV": "true",
                "TURSO_AUTH_TOKEN": "",
                "TURSO_ADMIN_TOKEN": "",
                "TURSO_TOKEN_SIGNING_KEY": "",
            },
        )
        self.namespace = namespace

    @property
    def base_url(self) -> str:
        return self.server.url

    @property
    def url(self) -> str:
        """``<server>/<namespace>``, or the server itself when built with ``namespace=None``."""
        return f"{self.server.url}/{self.namespace}" if self.namespace else self.server.url

    @property
    def children(self) -> list[str]:
        """Namespaces that have a database on the server."""
        return sorted(p.parent.name for p in self.server.data_dir.glob("namespaces/*/*.db"))

    def start(self) -> SyncEndpoint:
        self.server.start()
        return self

    def kill(self) -> None:
        kill_tree(self.server.data_dir, self.server.proc)
        self.server.proc = None

    def stop(self) -> None:
        self.server.stop()


def post_status(url: str, token: str, body: bytes = b"") -> int:
    """The status of ``POST url`` with ``body`` and ``Authorization: Bearer token``."""
    headers = {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code)
