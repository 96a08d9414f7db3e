"""Reply spooling: a child's whole reply is taken off its connection before the client gets a byte.

tursodb is single-threaded: while it writes a reply nobody reads, it serves nobody else. A
bootstrap of a 40 MiB namespace streamed straight to a client that stopped reading held every
other request to that namespace until the upstream timeout. So the proxy reads the whole reply
into a :class:`Spool` first, closes the child's connection and releases its lease, and only then
sends the reply, at the client's pace and under ``TURSO_CLIENT_SEND_TIMEOUT``.

A reply stays in memory while it is at most :data:`REPLY_MEMORY` bytes and the replies held in
memory together stay within ``TURSO_SPOOL_MEMORY``; otherwise it goes to an unnamed temporary file
under ``<data dir>/_spool/`` (``O_TMPFILE``, or created and unlinked at once: nothing is left behind
after a crash), and the files together stay within ``TURSO_SPOOL_DISK``. A reply that fits neither
is :class:`SpoolFullError` (503 with ``Retry-After``), decided from ``Content-Length`` before the
body is read when the child sends one. File I/O runs in threads, never on the loop. A spool holds
its share until :meth:`Spool.aclose`, i.e. until the client took the reply or timed out. Owned by
``_app`` (one :class:`SpoolBudget` per server); used by ``_proxy``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from ._errors import SpoolFullError

REPLY_MEMORY = 1 << 20  # a reply up to this size stays in memory while the memory share lasts
FILE_BLOCK = 1 << 20  # memory chunks are written to the file in blocks of about this size
READ_BLOCK = 256 * 1024


class SpoolBudget:
    """The bytes every spooled reply may hold at once, in memory and in files.

    Usage::

        budget = SpoolBudget(layout.spool_dir, memory=64 << 20, disk=1 << 30)
        spool = budget.spool(expected=content_length)   # SpoolFullError when it cannot fit
        await spool.write(chunk)
        async for block in spool.chunks(): ...
        await spool.aclose()                            # gives the share back

    Parameters:

    * ``directory`` - where spool files are created (made on first use).
    * ``memory`` - bytes all in-memory replies may hold together.
    * ``disk`` - bytes all spool files may hold together.
    """

    def __init__(self, directory: Path, *, memory: int, disk: int) -> None:
        self.directory = directory
        self.memory_limit = memory
        self.disk_limit = disk
        self.memory_used = 0
        self.disk_used = 0

    def spool(self, *, expected: int | None = None) -> Spool:
        """An empty spool; with ``expected`` (``Content-Length``) its whole share is taken now."""
        spool = Spool(self)
        if expected:
            spool.reserve(expected)
        return spool

    def _take_memory(self, size: int) -> bool:
        if self.memory_used + size > self.memory_limit:
            return False
        self.memory_used += size
        return True

    def _take_disk(self, size: int) -> None:
        if self.disk_used + size > self.disk_limit:
            raise SpoolFullError(
                f"no room to buffer a {size}-byte reply: {self.disk_used} of {self.disk_limit} spool bytes "
                "are held by replies still being sent",
                retry_after=5.0,
            )
        self.disk_used += size


class Spool:
    """One reply body, held until it has been sent. Made by :meth:`SpoolBudget.spool`."""

    def __init__(self, budget: SpoolBudget) -> None:
        self._budget = budget
        self._memory: list[bytes] = []
        self._pending: list[bytes] = []  # written, but not yet flushed to the file
        self._pending_size = 0
        self._file: IO[bytes] | None = None
        self._on_disk = False
        self._memory_held = 0
        self._disk_held = 0
        self._closed = False
        self.size = 0

    @property
    def in_memory(self) -> bool:
        return not self._on_disk

    def reserve(self, size: int) -> None:
        """Take the share for ``size`` more bytes: memory if it fits there, else disk."""
        total = self.size + size
        if self.in_memory and total <= REPLY_MEMORY and self._budget._take_memory(size):
            self._memory_held += size
            return
        if self.in_memory:
            # Moving to disk: everything held so far (and ``size`` more) counts against the disk.
            self._budget._take_disk(max(total, self._disk_held) - self._disk_held)
            self._disk_held = max(total, self._disk_held)
            self._on_disk = True
            self._pending, self._memory = self._memory, []
            self._pending_size = sum(len(chunk) for chunk in self._pending)
            self._release_memory()
            return
        if total > self._disk_held:
            self._budget._take_disk(total - self._disk_held)
            self._disk_held = total

    async def write(self, chunk: bytes) -> None:
        """Append ``chunk``; :class:`SpoolFullError` when its share cannot be had."""
        if not chunk:
            return
        held = self._disk_held if self._on_disk else self._memory_held
        if self.size + len(chunk) > held:
            self.reserve(self.size + len(chunk) - held)
        self.size += len(chunk)
        if self.in_memory:
            self._memory.append(chunk)
            return
        self._pending.append(chunk)
        self._pending_size += len(chunk)
        if self._pending_size >= FILE_BLOCK:
            await self._flush()

    async def finish(self) -> None:
        """Write what is still pending to the file (a no-op in memory)."""
        if self._pending:
            await self._flush()

    def body(self) -> bytes:
        """The whole body of an in-memory spool."""
        assert self.in_memory, "body() is for in-memory spools; use chunks()"
        return b"".join(self._memory)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body from the start, in blocks of at most :data:`READ_BLOCK` bytes from a file."""
        if self.in_memory:
            for chunk in self._memory:
                yield chunk
            return
        await self.finish()
        handle = self._file
        if handle is None:
            return
        await asyncio.to_thread(handle.seek, 0)
        while block := await asyncio.to_thread(handle.read, READ_BLOCK):
            yield block

    async def tail(self, limit: int) -> bytes:
        """The last ``limit`` bytes of the body (all of it when shorter)."""
        start = max(0, self.size - limit)
        if self.in_memory:
            return self.body()[start:]
        await self.finish()
        handle = self._file
        if handle is None:
            return b""

        def read() -> bytes:
            handle.seek(start)
            return handle.read()

        return await asyncio.to_thread(read)

    async def replace_tail(self, start: int, data: bytes) -> None:
        """Drop the body from byte ``start`` on and append ``data``, which may not be longer than
        what is dropped (the share already held covers the result)."""
        if not 0 <= start <= self.size or len(data) > self.size - start:
            raise ValueError("replace_tail may only shorten the body")
        if self.in_memory:
            self._memory = [self.body()[:start] + data]
            self.size = start + len(data)
            return
        await self.finish()
        handle = self._file
        if handle is None:
            raise ValueError("a spool on disk without its file")

        def rewrite() -> None:
            handle.truncate(start)
            handle.seek(start)
            handle.write(data)

        await asyncio.to_thread(rewrite)
        self.size = start + len(data)

    async def aclose(self) -> None:
        """Drop the body and give its share back (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._memory = []
        self._pending = []
        self._release_memory()
        self._budget.disk_used -= self._disk_held
        self._disk_held = 0
        if self._file is not None:
            handle, self._file = self._file, None
            await asyncio.to_thread(handle.close)

    def _release_memory(self) -> None:
        self._budget.memory_used -= self._memory_held
        self._memory_held = 0

    async def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        if self._file is None:
            self._file = await asyncio.to_thread(_open_spool_file, self._budget.directory)
            if self._closed:  # closed while the file was being made
                await asyncio.to_thread(self._file.close)
                self._file = None
                return
        await asyncio.to_thread(self._file.write, data)


def _open_spool_file(directory: Path) -> IO[bytes]:
    directory.mkdir(mode=0o700, exist_ok=True)
    return tempfile.TemporaryFile(dir=directory)
