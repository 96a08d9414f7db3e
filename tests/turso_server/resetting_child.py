"""A stand-in for ``tursodb FILE --sync-server ADDR`` that resets the first request to each path.

A real tursodb cannot be made to drop a connection after reading a request, which is what the
proxy sees when a child dies mid-request. This process reads the whole request, appends
``METHOD PATH`` to ``<FILE>.requests``, then either closes with a TCP reset (first time for that
path) or answers ``200 {}``. ``OPTIONS`` (the supervisor's readiness probe) is always answered
and not logged.
"""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

REPLY = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
)


def read_request(conn: socket.socket) -> tuple[str, str]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = next(
        (int(v) for k, _, v in (h.partition(":") for h in lines[1:]) if k.lower() == "content-length"), 0
    )
    while len(body) < length:
        body += conn.recv(65536)
    return method, path


def main() -> None:
    db_file, _, addr = sys.argv[1:4]
    host, _, port = addr.rpartition(":")
    log = Path(db_file + ".requests")
    seen: set[str] = set()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(16)
    while True:
        conn, _ = listener.accept()
        with conn:
            try:
                method, path = read_request(conn)
            except (ConnectionError, ValueError):
                continue
            if method != "OPTIONS":
                with log.open("a") as handle:
                    handle.write(f"{method} {path}\n")
                if path not in seen:
                    seen.add(path)
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    continue
            conn.sendall(REPLY)


if __name__ == "__main__":
    main()
