"""An API server that accepts a connection and never answers must not stall the operator.

Right after a CRD was installed, the operator has been seen sitting silent for ten minutes after
one retried list; kopf's own request timeout is five minutes (and no connect timeout), and
liveness stays green because nothing is listed yet. Here the operator reaches the real API
server through a proxy that swallows its first connections whole: accepted, never read, the TLS
handshake never answered. With the operator's timeouts the requests on them fail fast and kopf's
retries go through; without them (checked by hand) the object is not Ready after 40 s.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.controlplane import ControlPlane
from tests.support.operator import OperatorProcess, apply_tns, wait_ready
from tests.support.tursoserver import TursoServer

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

SWALLOWED = 2


class SwallowingProxy:
    """TCP proxy to ``target`` that holds its first ``swallow`` connections open and silent."""

    def __init__(self, target: tuple[str, int], swallow: int) -> None:
        self.target = target
        self.swallow = swallow
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            if self.accepted <= self.swallow:
                self._held.append(client)  # never read, never answered
                continue
            upstream = socket.create_connection(self.target)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for sock in self._held:
            sock.close()


@pytest.fixture
def proxy(crd: ControlPlane) -> Iterator[SwallowingProxy]:
    url = urlsplit(crd.url)
    assert url.hostname is not None and url.port is not None
    swallowing = SwallowingProxy((url.hostname, url.port), SWALLOWED)
    try:
        yield swallowing
    finally:
        swallowing.close()


def test_requests_the_api_server_never_answers_time_out_and_are_retried(
    crd: ControlPlane, turso: TursoServer, proxy: SwallowingProxy, tmp_path: Path, k8s_namespace: str
) -> None:
    kubeconfig = json.loads(crd.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    proxied = tmp_path / "kubeconfig"
    proxied.write_text(json.dumps(kubeconfig))
    proxied.chmod(0o600)
    operator = OperatorProcess(
        crd,
        turso,
        tmp_path,
        KUBECONFIG=str(proxied),
        TURSO_KUBE_REQUEST_TIMEOUT="3",
        TURSO_WEBHOOK_ENABLED="false",
    )
    operator.webhook_port = operator.liveness_port  # no webhook listener to wait for
    operator.start()
    try:
        apply_tns(crd, k8s_namespace, "patient")
        wait_ready(crd, k8s_namespace, "patient", timeout=40)
        assert proxy.accepted > SWALLOWED, "the swallowed connections were not the operator's only ones"
    finally:
        operator.stop()
