"""tursodb child processes: spawn, pump their output, stop them, and reclaim a crashed run's.

One :class:`Children` per server. It knows processes, ports and pidfiles, not namespaces' life:
``_supervisor`` decides when a namespace gets a child and restarts it; this module makes one.

* **Spawn** (:meth:`Children.spawn`) - ``tursodb <namespaces/<ns>/<ns>.db> --sync-server
  127.0.0.1:<port>`` on a port from ``TURSO_BACKEND_PORT_START..END`` (test-bound first), in its
  own process group, with our secrets stripped from its environment, its working directory and
  ``TMPDIR`` inside its namespace directory, its ``RLIMIT_DATA`` at ``TURSO_CHILD_MEMORY_LIMIT``, and
  confined there by Landlock (``_confine``). Ready once an HTTP ``OPTIONS`` probe is answered (a
  bare TCP probe makes tursodb log "Invalid HTTP request" and accepts any foreign listener); a
  child that exits while starting fails fast with its last stderr line, and a lost port race is
  retried on another port.
* **Pump** - stdout and stderr are re-emitted as JSON log lines tagged ``src=tursodb.<name>``, at
  the level of tursodb's tracing prefix; the last stderr lines are kept for error messages.
* **Stop** (:meth:`Children.terminate`) - SIGTERM to the process group, SIGKILL after the grace;
  :meth:`Children.reap` then drains the pipes and frees the port and the pidfile.
  :meth:`Children.kill` is SIGKILL at once, for a child that stopped answering (no grace: it is
  busy with the statement it is stopped for); its keeper sees the exit and restarts it.
* **Ports** (:class:`PortPool`) - reference-counted: the child holds one, every request that
  talks to it another, and a port is reused only when all are returned.
* **Orphans** (:meth:`Children.reclaim_orphans`) - each child's pid is in ``_state/run/<ns>.pid``;
  after a crash of the server, leftover children (they hold the database lock) are killed.

Paths come from ``_layout``. Used by ``_supervisor`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ._config import SETTINGS, Kind, LandlockMode, ServerConfig
from ._confine import ChildPreexec, Confinement
from ._errors import ChildStartError, NoFreePortError
from ._layout import DataLayout
from ._logging import get_logger
from ._warm import WarmConnections

LOOPBACK = "127.0.0.1"
PROBE_REQUEST = b"OPTIONS / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
PROBE_INTERVAL = 0.02
PROBE_TIMEOUT = 1.0
PORT_ATTEMPTS = 3
STDERR_TAIL_LINES = 20
PIPE_LINE_LIMIT = 1 << 20
PUMP_DRAIN_TIMEOUT = 2.0
ORPHAN_KILL_TIMEOUT = 5.0
ADDRESS_IN_USE_MARKERS = ("address already in use", "os error 98")
SECRET_ENV = frozenset(setting.env for setting in SETTINGS if setting.kind is Kind.SECRET)
_TRACING_LEVEL = re.compile(r"^\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s")
_LOG_LEVELS = {"TRACE": 10, "DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40}

log = get_logger("supervisor")
child_log = get_logger("tursodb")


class PortPool:
    """Backend ports, handed out round-robin and reference-counted (child + in-flight leases)."""

    def __init__(self, start: int, end: int) -> None:
        self._start = start
        self._end = end
        self._next = start
        self._refs: dict[int, int] = {}

    def allocate(self) -> int:
        for _ in range(self._end - self._start + 1):
            port = self._next
            self._next = self._start if port >= self._end else port + 1
            if port not in self._refs and _bindable(port):
                self._refs[port] = 1
                return port
        raise NoFreePortError(
            f"no free backend port in {self._start}..{self._end} (TURSO_BACKEND_PORT_START..END)",
            retry_after=5.0,
        )

    def retain(self, port: int) -> None:
        self._refs[port] = self._refs.get(port, 0) + 1

    def release(self, port: int) -> None:
        remaining = self._refs.get(port, 0) - 1
        if remaining > 0:
            self._refs[port] = remaining
        else:
            self._refs.pop(port, None)


def _bindable(port: int) -> bool:
    # SO_REUSEADDR like tursodb's own listener, so TIME_WAIT leftovers do not hide a usable port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


@dataclass(eq=False)
class Child:
    """One running (or exited, not yet reaped) tursodb process."""

    name: str
    process: asyncio.subprocess.Process
    port: int
    warm: WarmConnections
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    stderr_tail: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    reaped: bool = False
    hung: bool = False  # killed by :meth:`Children.kill`: it did not answer in time

    def last_error(self) -> str:
        return self.stderr_tail[-1] if self.stderr_tail else "no output"


class _EarlyExit(Exception):
    """The child exited before it listened."""


class Children:
    """Makes, stops and reaps tursodb children. Usage::

        children = Children(config, layout)
        children.reclaim_orphans()                 # blocking: at startup, in a thread
        child = await children.spawn("app")        # running and answering; ChildStartError if not
        children.ports.retain(child.port)          # a request talking to it
        await children.terminate(child, grace=5)   # SIGTERM, then SIGKILL
        await children.reap(child)                 # pipes drained, port and pidfile freed

    Parameters:

    * ``config`` - binary, port range, startup timeout, Landlock mode.
    * ``layout`` - where databases and pidfiles are.
    """

    def __init__(self, config: ServerConfig, layout: DataLayout) -> None:
        self._config = config
        self._layout = layout
        self.ports = PortPool(config.backend_port_start, config.backend_port_end)
        self.confinement = Confinement.detect(
            config.tursodb_bin, enabled=config.child_landlock is not LandlockMode.OFF
        )

    async def spawn(self, name: str, *, create: bool = False) -> Child:
        """Start ``name``'s child and wait until it serves; a lost port race tries another port.

        Raises :class:`ChildStartError` (it could not start, exited, or did not listen within
        ``TURSO_STARTUP_TIMEOUT``) or :class:`NoFreePortError`; nothing is left running then.
        Only ``create`` (a new namespace) may make its directory: a known one's must be there.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self.ports.allocate()
            try:
                child = await self._launch(name, port, create)
            except OSError as exc:
                self.ports.release(port)
                raise ChildStartError(f"cannot start tursodb for {name!r}: {exc}") from exc
            try:
                await self._wait_listening(child)
            except _EarlyExit:
                await self.reap(child)
                in_use = any(m in line.lower() for line in child.stderr_tail for m in ADDRESS_IN_USE_MARKERS)
                if in_use and attempt < PORT_ATTEMPTS:
                    continue
                raise ChildStartError(
                    f"tursodb for {name!r} exited with {child.process.returncode} while starting: "
                    f"{child.last_error()}"
                ) from None
            except TimeoutError:
                await self.terminate(child, 0.0)
                await self.reap(child)
                raise ChildStartError(
                    f"tursodb for {name!r} did not listen on {port} within {self._config.startup_timeout:g}s"
                ) from None
            except BaseException:
                await self.terminate(child, 0.0)
                await self.reap(child)
                raise
            return child
        raise AssertionError("unreachable: the last attempt returns or raises")  # pragma: no cover

    async def _launch(self, name: str, port: int, create: bool) -> Child:
        directory = await asyncio.to_thread(self._layout.prepare_namespace, name, create=create)
        env = {key: value for key, value in os.environ.items() if key not in SECRET_ENV}
        env["TMPDIR"] = str(self._layout.tmp_dir(name))
        ruleset = None
        if self.confinement.active:
            ruleset = self.confinement.ruleset(writable=[directory], port=port)
        preexec = ChildPreexec(memory_limit=self._config.child_memory_limit, ruleset=ruleset)
        try:
            process = await asyncio.create_subprocess_exec(
                str(self._config.tursodb_bin),
                str(self._layout.db_path(name)),
                "--sync-server",
                f"{LOOPBACK}:{port}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                cwd=directory,
                env=env,
                limit=PIPE_LINE_LIMIT,
                preexec_fn=preexec if preexec.needed else None,
            )
        finally:
            if ruleset is not None:
                ruleset.close()
        child = Child(name=name, process=process, port=port, warm=WarmConnections(LOOPBACK, port))
        if process.stdout is not None:
            child.pumps.append(asyncio.create_task(_pump(child, process.stdout, is_stderr=False)))
        if process.stderr is not None:
            child.pumps.append(asyncio.create_task(_pump(child, process.stderr, is_stderr=True)))
        self._write_pidfile(name, process.pid, port)
        return child

    async def _wait_listening(self, child: Child) -> None:
        deadline = time.monotonic() + self._config.startup_timeout
        while True:
            if child.process.returncode is not None:
                raise _EarlyExit
            if await http_probe(child.port):
                if child.process.returncode is not None:
                    raise _EarlyExit  # something else answered on that port
                return
            if time.monotonic() >= deadline:
                raise TimeoutError
            await asyncio.sleep(PROBE_INTERVAL)

    async def terminate(self, child: Child, grace: float) -> None:
        """SIGTERM to the child's process group; SIGKILL once ``grace`` seconds have passed."""
        child.warm.close()  # an idle spare would keep tursodb waiting for a request, not for SIGTERM
        process = child.process
        if process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    def kill(self, child: Child) -> None:
        """SIGKILL the child's process group now (no grace) and mark it ``hung``; its connections
        are closed first, so no new request goes out to it. The exit is awaited by its keeper."""
        child.hung = True
        child.warm.close()
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.process.pid, signal.SIGKILL)

    async def reap(self, child: Child) -> None:
        """After ``child`` exited: drain its pipes, free its port and pidfile (once)."""
        child.warm.close()
        if child.reaped:
            return
        child.reaped = True
        self.ports.release(child.port)
        self._remove_pidfile(child.name, child.process.pid)
        if child.pumps:
            _, pending = await asyncio.wait(child.pumps, timeout=PUMP_DRAIN_TIMEOUT)
            for task in pending:
                task.cancel()

    # --- pidfiles ----------------------------------------------------------------------------------

    def _write_pidfile(self, name: str, pid: int, port: int) -> None:
        # Written whole or not at all (a temporary file renamed over it): a server killed while
        # writing it must not leave an empty pidfile behind. Tiny, no fsync: losing it in an OS
        # crash only matters if the children survived, and they do not survive an OS crash.
        info = {"pid": pid, "port": port, "db": str(self._layout.db_path(name))}
        path = self._layout.pidfile(name)
        partial = path.with_name(f".{path.name}.tmp")
        try:
            partial.write_text(json.dumps(info), encoding="utf-8")
            os.replace(partial, path)
        except OSError as exc:
            log.warning("cannot write pidfile", extra={"namespace": name, "error": str(exc)})

    def _remove_pidfile(self, name: str, pid: int) -> None:
        path = self._layout.pidfile(name)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == pid:
                path.unlink()

    def reclaim_orphans(self) -> None:
        """Kill tursodb children left by a server that died without stopping them (blocking)."""
        for pidfile in self._layout.pidfiles():
            try:
                info = json.loads(pidfile.read_text(encoding="utf-8"))
                candidates, db = [int(info["pid"])], str(info["db"])
            except (OSError, ValueError, KeyError, TypeError):
                # Unreadable (an older server wrote it in place and was killed meanwhile): the
                # child it named is found by its command line, which names our database file.
                db = str(self._layout.db_path(pidfile.stem))
                candidates = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
            for pid in candidates:
                if _is_tursodb_for(pid, db):
                    log.warning("killing orphaned tursodb", extra={"pid": pid, "db": db})
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                    _wait_gone(pid, ORPHAN_KILL_TIMEOUT)
            pidfile.unlink(missing_ok=True)


async def _pump(child: Child, stream: asyncio.StreamReader, *, is_stderr: bool) -> None:
    """Re-emit one child stream as JSON log lines (a final partial line included)."""
    default_level = 30 if is_stderr else 20
    name = child.name
    extra = {"src": f"tursodb.{name}", "namespace": name, "stream": "stderr" if is_stderr else "stdout"}
    while True:
        try:
            raw = await stream.readline()
        except ValueError:  # a line longer than the limit: take what is buffered
            raw = await stream.read(PIPE_LINE_LIMIT)
        if not raw:
            return
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if not text:
            continue
        if is_stderr:
            child.stderr_tail.append(text)
        match = _TRACING_LEVEL.match(text)
        level = _LOG_LEVELS[match.group(1)] if match else default_level
        child_log.log(level, text, extra=extra)


async def http_probe(port: int) -> bool:
    """``True`` when an HTTP server answers ``OPTIONS /`` on ``127.0.0.1:port``."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), PROBE_TIMEOUT)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(PROBE_REQUEST)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        return status_line.startswith(b"HTTP/1.")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _is_tursodb_for(pid: int, db: str) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return db.encode() in args and b"--sync-server" in args


def _wait_gone(pid: int, timeout: float) -> None:
    """Poll until ``pid`` is gone or a zombie (a zombie holds no file locks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rpartition(")")[2].split()[:1] == ["Z"]:
            return
        time.sleep(0.02)
