"""Ports for the servers the tests start: one allocator for the whole suite.

A port the kernel picks with ``bind(0)`` comes from the ephemeral range (32768-60999 here), the
one outgoing connections take their source ports from, and the kernel may pick it again for the
next caller as soon as the first one closed its probe socket: a server started a moment later
then fails with ``EADDRINUSE`` (seen once in CI: the operator's liveness port). So ports come from
below that range, start at a random offset (two suites on one machine rarely meet), are never
handed out twice in one process, and each is checked free on every address first. Not 30000 and
up either: that is Kubernetes' NodePort range, which kube-proxy's rules on the test node own.
"""

from __future__ import annotations

import random
import socket
import threading

LOW, HIGH = 20000, 29999  # below NodePorts (30000-32767) and the ephemeral range (32768-60999)
# Backend port ranges (turso-server's children) come from a region of their own: a child binds
# its port only when its namespace starts, long after the range was handed out, so a range
# inside free_port()'s region could meet a listener allocated meanwhile.
RANGE_LOW, RANGE_HIGH = 11000, 19999  # above the node components' fixed ports (10248-10259)
_lock = threading.Lock()
_given: set[int] = set()
_next = random.randrange(LOW, HIGH)
_next_range = random.randrange(RANGE_LOW, RANGE_HIGH)


def _free(port: int, hosts: tuple[str, ...]) -> bool:
    for host in hosts:
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` and on every address, not handed out before in this process."""
    global _next
    hosts = (host, "0.0.0.0") if host != "0.0.0.0" else ("0.0.0.0",)
    with _lock:
        for _ in range(HIGH - LOW):
            port, _next = _next, LOW + (_next + 1 - LOW) % (HIGH - LOW)
            if port not in _given and _free(port, hosts):
                _given.add(port)
                return port
    raise RuntimeError(f"no free port left in {LOW}-{HIGH}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports, as :func:`free_port`."""
    return [free_port() for _ in range(count)]


def free_range(size: int) -> int:
    """The first of ``size`` consecutive ports for a turso-server's children, below
    :data:`LOW` (never a port :func:`free_port` hands out), each checked free when handed out.
    Ranges go round the region in order: one handed out before comes back only once every
    other range was (the oldest first, and only while all its ports are free)."""
    global _next_range
    hosts = ("127.0.0.1", "0.0.0.0")
    with _lock:
        for reuse in (False, True):
            for _ in range((RANGE_HIGH - RANGE_LOW) // size):
                start = _next_range if _next_range + size <= RANGE_HIGH else RANGE_LOW
                _next_range = start + size
                ports = range(start, start + size)
                if (reuse or not _given.intersection(ports)) and all(_free(port, hosts) for port in ports):
                    _given.update(ports)
                    return start
    raise RuntimeError(f"no {size} free ports left in {RANGE_LOW}-{RANGE_HIGH}")
