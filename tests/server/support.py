"""Helpers to run the real runtime in tests: in process (``aiohttp_client``) or as ``buntime serve``.

Shared by ``tests/server``, ``tests/plugins/{gateway,proxy}`` and ``tests/integration``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from buntime.plugins import BUILTIN_DIR, PluginHost, discover
from buntime.server import build_app
from tests.support.ports import free_port

TURSO = "@buntime/plugin-turso"
GATEWAY = "@buntime/plugin-gateway"
PROXY = "@buntime/plugin-proxy"
KEYVAL = "@buntime/plugin-keyval"
KEYVAL_MANIFEST = BUILTIN_DIR / "keyval" / "manifest.yaml"
BUNTIME_BIN = Path(sys.executable).with_name("buntime")


def builtin_host(env: Mapping[str, str], *names: str, extra_dirs: Sequence[Path] = ()) -> PluginHost:
    """A host with the named built-in plugins (all when none are named) plus every plugin in ``extra_dirs``.

    Naming the built-ins keeps a test independent of plugins other engineers are still writing.
    """
    manifests = [m for m in discover([BUILTIN_DIR]) if not names or m.name in names]
    return PluginHost([*manifests, *discover(list(extra_dirs))], env=env)


async def start_runtime(
    aiohttp_client: AiohttpClient, env: Mapping[str, str], *names: str, extra_dirs: Sequence[Path] = ()
) -> TestClient:
    """The real runtime app in process; the client's teardown stops the plugins."""
    app = await build_app(env, host=builtin_host(env, *names, extra_dirs=extra_dirs))
    return await aiohttp_client(app)


def local_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A local-mode runtime on a fresh file under ``tmp_path``."""
    return {"TURSO_LOCAL_PATH": str(tmp_path / "data" / "runtime.db"), **extra}


def write_plugin(root: Path, dirname: str, manifest: str, module: str | None = None) -> str:
    """Write ``<root>/<dirname>/manifest.yaml`` (+ a module); return the module name to use in ``entry``."""
    plugin_dir = root / dirname
    plugin_dir.mkdir(parents=True)
    module_name = f"{dirname.replace('-', '_')}_{os.getpid()}_{time.monotonic_ns()}_mod"
    (plugin_dir / "manifest.yaml").write_text(textwrap.dedent(manifest).replace("MODULE", module_name))
    if module is not None:
        (plugin_dir / f"{module_name}.py").write_text(textwrap.dedent(module))
    return module_name


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """A blocking JSON request (for tests that drive subprocesses); returns ``(status, json|text)``."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def kv_value(body: Any) -> Any:
    """The value in a keyval GET answer, whether it is bare or ``{"value": ...}``."""
    return body["value"] if isinstance(body, dict) and "value" in body else body


class RuntimeProcess:
    """``buntime serve`` as a child process on a free loopback port, logging to a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, port: int | None = None) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, probe: str = "ready", timeout: float = 20.0) -> RuntimeProcess:
        """Spawn and wait until ``/api/health/<probe>`` answers 200 (``live`` skips readiness)."""
        base = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("TURSO_", "BUNTIME_", "GATEWAY_", "PROXY_"))
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BUNTIME_BIN), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env={**base, "PYTHONUNBUFFERED": "1", **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_for(probe, timeout)
        return self

    def wait_for(self, probe: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"buntime serve exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status, _ = http("GET", f"{self.url}/api/health/{probe}", timeout=1.0)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"buntime serve: /api/health/{probe} not 200 after {timeout}s:\n{self.log()}")

    def stop(self, *, timeout: float = 20.0) -> int:
        """SIGTERM and wait (SIGKILL only if the graceful shutdown hangs); return the exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        return int(proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def raw_request(
    port: int, head: str, extra: bytes = b"", body: bytes = b"", *, status_line_only: bool = False
) -> bytes:
    """Send one request with its header bytes exactly as given; the reply (``Connection: close``).

    ``head`` is the request line, ``extra`` raw header lines (each ending in CRLF). The runtime
    runs in the test's own event loop, so this is the asyncio twin of the blocking
    ``tests.turso_server.support.raw_exchange``. ``status_line_only`` stops after the first line
    (routes that stream: events, watches).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = f"{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    writer.write(start.encode() + extra + b"\r\n" + body)
    try:
        return await asyncio.wait_for(reader.readline() if status_line_only else reader.read(), 10)
    finally:
        writer.close()
