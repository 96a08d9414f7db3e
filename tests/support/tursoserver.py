"""A real turso-server subprocess (the ``turso-server`` console script) for cross-part tests.

Used by the operator, runtime and chart suites; turso-server's own suite drives it more finely.
The process can be stopped and started again on the same ports and data dir.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.support.tursodb import free_port, tursodb_bin, wait_listening


class TursoServer:
    """turso-server on two free loopback ports, with generated tokens and signing key."""

    def __init__(self, data_dir: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.data_port = free_port()
        self.admin_port = free_port()
        self.data_token = secrets.token_urlsafe(24)
        self.admin_token = secrets.token_urlsafe(24)
        self.signing_key = secrets.token_urlsafe(48)
        self.extra_env = extra_env or {}
        self.backend_start = 10000 + secrets.randbelow(200) * 100
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.data_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

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
            "TURSO_BACKEND_PORT_END": str(start + 99),
            "TURSO_GC_INTERVAL": "0",
            **self.extra_env,
        }

    def start(self, timeout: float = 30.0) -> TursoServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        binary = Path(sys.executable).with_name("turso-server")
        self.proc = subprocess.Popen(
            [str(binary)], env={**os.environ, **self.env()}, stdout=log, stderr=subprocess.STDOUT
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

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None
