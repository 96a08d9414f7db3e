"""Real ``tursodb --sync-server`` processes for tests and benchmarks, plus a path router.

``SyncServer`` runs one tursodb child on a free loopback port and can be killed and restarted on
the same port and file (the "server went away" tests). ``NamespaceRouter`` is a minimal
``/<namespace>/...`` → child router used to exercise multi-tenant mode against real tursodb
processes without depending on turso-server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from aiohttp import ClientSession, web

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def tursodb_bin() -> str:
    """The pinned tursodb from ``.tools/bin`` (``TURSODB_BIN`` overrides)."""
    explicit = os.environ.get("TURSODB_BIN")
    candidate = Path(explicit) if explicit else ROOT / ".tools" / "bin" / "tursodb"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("tursodb")
    if found:
        return found
    raise RuntimeError("tursodb not found: run `make tools` (hack/install-tools.sh) or set TURSODB_BIN")


def wait_listening(port: int, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class SyncServer:
    """One real ``tursodb FILE --sync-server 127.0.0.1:PORT`` child."""

    def __init__(self, db_path: Path, port: int | None = None) -> None:
        self.db_path = db_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SyncServer:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.db_path.with_suffix(".log"), "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [tursodb_bin(), str(self.db_path), "--sync-server", f"127.0.0.1:{self.port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_listening(self.port, proc=self.proc)
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class NamespaceRouter:
    """Routes ``/<ns>/<rest>`` to a tursodb child per namespace (started on first use)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.children: dict[str, SyncServer] = {}
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["ns"]
        child = self.children.get(namespace)
        if child is None:
            child = SyncServer(self.data_dir / f"{namespace}.db")
            await asyncio.to_thread(child.start)
            self.children[namespace] = child
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
        async with self._session.request(
            request.method, f"{child.url}/{request.match_info['rest']}", data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            return web.Response(
                status=upstream.status, body=payload, content_type=upstream.content_type or None
            )

    async def start(self) -> NamespaceRouter:
        app = web.Application()
        app.router.add_route("*", "/{ns}/{rest:.*}", self._handle)
        self._session = ClientSession()
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        for child in self.children.values():
            child.stop()
