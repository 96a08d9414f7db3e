"""Landlock confinement of each tursodb child: its own directory read-write, its binary and the
system libraries read-only, nothing else; one TCP port to bind, no TCP connect, no signals out.

Defence in depth behind the SQL guard (``_sqlguard``): if a statement that writes or loads a file
ever got through, the kernel refuses the open. The ruleset is built in the server process by
:meth:`Confinement.ruleset` (``landlock_create_ruleset`` and ``landlock_add_rule`` with ``O_PATH``
descriptors of the allowed paths), and the child, between ``fork`` and ``exec``, only calls
``prctl(PR_SET_NO_NEW_PRIVS)`` and ``landlock_restrict_self`` on that descriptor (:meth:`Ruleset.
preexec`): two syscalls, no allocation of note and no import, so the usual hazards of
``preexec_fn`` in a threaded parent do not apply. The descriptor is not in ``pass_fds``, so
``close_fds`` closes it before ``exec`` and tursodb never holds it.

Rights are handled per ABI (1: files and directories, 2: ``REFER``, 3: ``TRUNCATE``, 4: TCP bind
and connect, 5: device ioctls, 6: abstract Unix sockets and signals): everything the kernel knows
is denied unless a rule allows it. Where the kernel has no Landlock, ``TURSO_CHILD_LANDLOCK=auto``
runs the children unconfined with a warning at startup, ``require`` refuses to start and ``off``
never confines. :class:`ChildPreexec` runs the ruleset's part after setting the child's memory
limit (``TURSO_CHILD_MEMORY_LIMIT``, ``RLIMIT_DATA``). Used by ``_children`` and ``_supervisor``
(and ``_config`` for the ``require`` check).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_RULE_NET_PORT = 2
PR_SET_NO_NEW_PRIVS = 38

# Filesystem rights (ABI 1 unless noted).
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_BY_ABI = {1: (1 << 13) - 1, 2: FS_REFER, 3: FS_TRUNCATE, 5: FS_IOCTL_DEV}
# Rights that Landlock accepts on a rule for a single file (the others only make sense on a directory).
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
# The namespace directory: the database, its companions, temporary files (TMPDIR) and backups.
NAMESPACE_RIGHTS = (
    FS_READ_FILE | FS_WRITE_FILE | FS_READ_DIR | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_DIR | FS_MAKE_REG
) | FS_TRUNCATE
READ_RIGHTS = FS_READ_FILE | FS_READ_DIR
# The dynamic loader is opened by execve with exec permission, so the library tree needs EXECUTE.
LIBRARY_RIGHTS = READ_RIGHTS | FS_EXECUTE
BINARY_RIGHTS = FS_READ_FILE | FS_EXECUTE
# Where a dynamically linked tursodb finds its loader and libraries (libc, libm, libgcc_s).
SYSTEM_LIBRARY_PATHS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache")


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


class _NetPortAttr(ctypes.Structure):
    _fields_ = (("allowed_access", ctypes.c_uint64), ("port", ctypes.c_uint64))


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_prctl = _libc.prctl
_prctl.restype = ctypes.c_int


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, ``0`` when it has none (or it is disabled)."""
    version = _syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def handled_fs_rights(abi: int) -> int:
    """Every filesystem right ABI ``abi`` knows."""
    return sum(bits for level, bits in _FS_BY_ABI.items() if level <= abi)


class Ruleset:
    """A populated Landlock ruleset, owned by the server until the child applied it.

    Usage::

        ruleset = confinement.ruleset(writable=[ns_dir], port=9001)
        try:
            spawn(..., preexec_fn=ruleset.preexec)
        finally:
            ruleset.close()
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def preexec(self) -> None:
        """In the child, before exec: no new privileges, then restrict to the ruleset.

        Raising here makes the spawn fail with the error (``subprocess`` reports it to the parent).
        """
        if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _syscall(SYS_LANDLOCK_RESTRICT_SELF, self.fd, 0) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class ChildPreexec:
    """Everything a child does between ``fork`` and ``exec``: its memory limit, then Landlock.

    Usage::

        preexec = ChildPreexec(memory_limit=256 << 20, ruleset=ruleset)   # either may be absent
        spawn(..., preexec_fn=preexec if preexec.needed else None)

    ``memory_limit`` (bytes, ``0`` = none) becomes the soft and hard ``RLIMIT_DATA`` (the heap and
    every private writable mapping: what a statement's blobs and strings are allocated in), so
    tursodb cannot raise it again; an allocation past it makes tursodb abort, in the child, not on
    the host. ``RLIMIT_CORE`` goes to 0 with it: a tenant who can crash its child at will must not
    also fill the disk (or a ``core_pattern`` handler) with dumps of it. The limit tuples are built
    here, in the parent, so the child only calls ``setrlimit``.
    """

    def __init__(self, *, memory_limit: int = 0, ruleset: Ruleset | None = None) -> None:
        self._limit = (memory_limit, memory_limit) if memory_limit > 0 else None
        self._no_core = (0, 0)
        self._ruleset = ruleset

    @property
    def needed(self) -> bool:
        return self._limit is not None or self._ruleset is not None

    def __call__(self) -> None:
        if self._limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, self._limit)
            resource.setrlimit(resource.RLIMIT_CORE, self._no_core)
        if self._ruleset is not None:
            self._ruleset.preexec()


@dataclass(frozen=True)
class Confinement:
    """What every child may use besides its own directory.

    Usage::

        confinement = Confinement.detect(tursodb_bin)       # abi 0: unconfined
        ruleset = confinement.ruleset(writable=[ns_dir], port=port)

    Parameters:

    * ``abi`` - the Landlock ABI to use; ``0`` disables confinement.
    * ``executable`` - the tursodb binary (read and execute).
    * ``read_only`` - *(optional)* further paths to read (and execute); default: the system library
      trees and the loader cache.
    """

    abi: int
    executable: Path
    read_only: tuple[str, ...] = SYSTEM_LIBRARY_PATHS

    @classmethod
    def detect(cls, executable: Path, *, enabled: bool = True) -> Confinement:
        return cls(abi=landlock_abi() if enabled else 0, executable=executable)

    @property
    def active(self) -> bool:
        return self.abi > 0

    def ruleset(self, *, writable: Iterable[Path], port: int | None = None) -> Ruleset:
        """Create and fill a ruleset: ``writable`` directories read-write, the rest as described."""
        fs_rights = handled_fs_rights(self.abi)
        attr = _RulesetAttr(handled_access_fs=fs_rights)
        size = 8
        if self.abi >= 4:
            attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
            size = 16
        if self.abi >= 6:
            attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            size = 24
        fd = int(_syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), 0))
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"landlock_create_ruleset failed: {os.strerror(code)}")
        ruleset = Ruleset(fd)
        try:
            for directory in writable:
                self._add_path(fd, str(directory), NAMESPACE_RIGHTS & fs_rights, required=True)
            self._add_path(fd, str(self.executable), BINARY_RIGHTS, required=True)
            for path in self.read_only:
                self._add_path(fd, path, LIBRARY_RIGHTS, required=False)
            if port is not None and self.abi >= 4:
                rule = _NetPortAttr(allowed_access=NET_BIND_TCP, port=port)
                self._add_rule(fd, LANDLOCK_RULE_NET_PORT, ctypes.byref(rule), f"port {port}")
        except BaseException:
            ruleset.close()
            raise
        return ruleset

    def _add_path(self, fd: int, path: str, rights: int, *, required: bool) -> None:
        try:
            path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            if required:
                raise
            return
        try:
            if not os.path.isdir(path):
                rights &= _FILE_RIGHTS
            rule = _PathBeneathAttr(allowed_access=rights, parent_fd=path_fd)
            self._add_rule(fd, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), path)
        finally:
            os.close(path_fd)

    @staticmethod
    def _add_rule(fd: int, rule_type: int, rule: object, label: str) -> None:
        if _syscall(SYS_LANDLOCK_ADD_RULE, fd, rule_type, rule, 0) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"landlock_add_rule for {label} failed: {os.strerror(code)}")


def confine_current_process(confinement: Confinement, *, writable: Iterable[Path]) -> None:
    """Apply the confinement to this process (tests, and a way to try a kernel by hand)."""
    ruleset = confinement.ruleset(writable=writable)
    try:
        ruleset.preexec()
    finally:
        ruleset.close()


def describe_unavailable() -> str:
    """Why :func:`landlock_abi` said 0, for the startup warning."""
    _syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    code = ctypes.get_errno()
    reasons: dict[int, str] = {
        errno.ENOSYS: "the kernel has no Landlock (ENOSYS)",
        errno.EOPNOTSUPP: "Landlock is disabled at boot (EOPNOTSUPP)",
        errno.EPERM: "a seccomp filter blocks the Landlock syscalls (EPERM)",
    }
    return reasons.get(code, f"landlock_create_ruleset failed with errno {code}")
