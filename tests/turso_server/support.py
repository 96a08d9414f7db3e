"""Helpers for the turso-server tests: a server subprocess wrapper and a raw-socket HTTP client.

Kept out of ``conftest.py`` so test modules can import them (``tests.turso_server.support``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port, free_range

REPO = Path(__file__).resolve().parents[2]
TURSODB = REPO / ".tools" / "bin" / "tursodb"
SERVER_SCRIPT = Path(sys.executable).with_name("turso-server")
DATA_TOKEN = "data-token-for-tests"
ADMIN_TOKEN = "admin-token-for-tests"
SIGNING_KEY = "signing-key-for-tests-0123456789abcdef"
START_TIMEOUT = 20.0
# Each server gets its own slice of backend ports so a killed server's orphans never collide.
PORT_SLICE = 60


def next_port_slice() -> int:
    """First port of a fresh backend range of ``PORT_SLICE`` ports."""
    return free_range(PORT_SLICE)


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(
    port: int,
    method: str,
    target: bytes | str,
    *,
    token: str | None = None,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> RawResponse:
    """One HTTP/1.1 request over a bare socket; ``target`` is sent exactly as given."""
    raw_target = target.encode() if isinstance(target, str) else target
    lines = [b"%s %s HTTP/1.1" % (method.encode(), raw_target), b"Host: 127.0.0.1:%d" % port]
    all_headers = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    lines += [f"{key}: {value}".encode() for key, value in all_headers.items()]
    return raw_exchange(port, b"\r\n".join(lines) + b"\r\n\r\n" + body, timeout=timeout)


def raw_exchange(port: int, data: bytes, *, timeout: float = 60.0) -> RawResponse:
    """Send ``data`` (a whole request, head bytes as given) and read the reply until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    data = b"".join(chunks)
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return RawResponse(int(status_line.split()[1]), parsed, payload)


def _dechunk(payload: bytes) -> bytes:
    out = bytearray()
    while payload:
        size_line, _, rest = payload.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        payload = rest[size + 2 :]
    return bytes(out)


class ServerProcess:
    """A running ``turso-server`` subprocess and helpers to talk to it."""

    def __init__(self, data_dir: Path, env: dict[str, str], command: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env
        self.command = command or [str(SERVER_SCRIPT)]
        self.data_port = 0
        self.admin_port = 0
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self, *, wait_ready: bool = True) -> ServerProcess:
        self.data_port, self.admin_port = free_port(), free_port()
        env = {
            **os.environ,
            "TURSO_DATA_ADDR": f"127.0.0.1:{self.data_port}",
            "TURSO_ADMIN_ADDR": f"127.0.0.1:{self.admin_port}",
            **self.env,
        }
        self.lines = []
        self.process = subprocess.Popen(
            self.command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.find_logs("listening"):
            if self.process.poll() is not None:
                self._reader.join(timeout=2)
                raise AssertionError("turso-server exited during startup:\n" + self.output())
            if time.monotonic() > deadline:
                raise AssertionError("turso-server did not start listening:\n" + self.output())
            time.sleep(0.02)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while raw_request(self.data_port, "GET", "/readyz").status != 200:
            if time.monotonic() > deadline:
                raise AssertionError("turso-server never became ready:\n" + self.output())
            time.sleep(0.05)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._drain_output()
        return self.process.returncode

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._drain_output()

    def _drain_output(self) -> None:
        """After the process exited: let the reader thread finish, then close its pipe."""
        assert self.process is not None
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with contextlib.suppress(ValueError, OSError):
            for line in self.process.stdout:
                self.lines.append(line.rstrip("\n"))

    # --- inspection --------------------------------------------------------------------------------

    def output(self) -> str:
        return "\n".join(self.lines)

    def logs(self) -> list[dict[str, Any]]:
        records = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def find_logs(self, msg: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            r for r in self.logs() if r.get("msg") == msg and all(r.get(k) == v for k, v in fields.items())
        ]

    def child_pids(self) -> dict[str, int]:
        """namespace -> pid, from the supervisor's pidfiles."""
        run_dir = self.data_dir / "_state" / "run"
        pids = {}
        for pidfile in run_dir.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pids[pidfile.stem] = int(json.loads(pidfile.read_text())["pid"])
        return pids

    # --- HTTP helpers ------------------------------------------------------------------------------

    def url(self, namespace: str) -> str:
        return f"http://127.0.0.1:{self.data_port}/{namespace}"

    def admin(
        self, method: str, path: str, body: Any = None, *, token: str | None = ADMIN_TOKEN
    ) -> RawResponse:
        payload = b"" if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if body is not None else None
        return raw_request(self.admin_port, method, path, token=token, body=payload, headers=headers)

    def data(
        self, method: str, target: bytes | str, *, token: str | None = DATA_TOKEN, body: bytes = b""
    ) -> RawResponse:
        return raw_request(self.data_port, method, target, token=token, body=body)

    def metrics_text(self) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin_port}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            text: str = response.read().decode()
        return text


def kill_pid(pid: int, data_dir: Path) -> None:
    """SIGKILL a tursodb child a killed server left behind, after checking (via its command line)
    that the pid still is that child and not a recycled number."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"--sync-server" in args and any(arg.startswith(str(data_dir).encode()) for arg in args):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


ServerFactory = Callable[..., ServerProcess]
