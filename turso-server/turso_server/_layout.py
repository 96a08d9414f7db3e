"""The data directory's layout: the one module that knows where anything lives under it.

::

    <TURSO_DATA_DIR>/
    ├── namespaces/<ns>/          everything of one namespace, and all its confined child may write
    │   ├── <ns>.db, <ns>.db-wal… the database and its companions
    │   ├── tmp/                  the child's TMPDIR (emptied before every spawn)
    │   └── backups/              one temporary directory per running backup
    ├── _state/namespaces.json    the registry (``_state``)
    ├── _state/run/<ns>.pid       each running child's pid, port and database (orphan cleanup)
    ├── _spool/                   unnamed spool files of replies being sent (``_spool``)
    ├── archive/<ns>.<UTC stamp>[-n]/  archived database files (GC purges them after retention)
    ├── _backups/                 the earlier layout's backups: removed at startup
    └── <ns>.db*                  the earlier flat layout: moved into namespaces/<ns>/ at startup

Everything else asks :class:`DataLayout` for a path: ``_supervisor`` and ``_children`` (databases,
pidfiles, archives), ``_state`` (the registry file), ``_app`` (the spool), ``_backup`` (backup
directories) and ``_gc`` (archive names and stamps). Names are valid namespace names
(``_names``), so no path built here leaves its directory. Blocking file operations: callers run
them in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ._logging import get_logger
from ._names import is_valid_name

NAMESPACES_DIR_NAME = "namespaces"
STATE_DIR_NAME = "_state"
STATE_FILE_NAME = "namespaces.json"
RUN_DIR_NAME = "run"
SPOOL_DIR_NAME = "_spool"
ARCHIVE_DIR_NAME = "archive"
LEGACY_BACKUP_DIR_NAME = "_backups"
TMP_DIR_NAME = "tmp"
BACKUPS_DIR_NAME = "backups"
DB_SUFFIX = ".db"
PID_SUFFIX = ".pid"
ARCHIVE_STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_ARCHIVE_NAME = re.compile(r"(?P<name>.+)\.(?P<stamp>[0-9]{8}T[0-9]{6}Z)(?:-[0-9]+)?")
DIR_MODE = 0o755

log = get_logger("layout")


def archive_stamp(moment: datetime) -> str:
    """The UTC stamp used in archive directory and backup file names."""
    return moment.strftime(ARCHIVE_STAMP_FORMAT)


def parse_archive_stamp(dirname: str) -> datetime | None:
    """The UTC time in ``<name>.<YYYYMMDDTHHMMSSZ>[-n]``, or ``None`` when it does not parse."""
    match = _ARCHIVE_NAME.fullmatch(dirname)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group("stamp"), ARCHIVE_STAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class DataLayout:
    """Paths under one data directory, and the file operations that move between them.

    Usage::

        layout = DataLayout(config.data_dir)
        layout.prepare()                               # namespaces/, archive/, _state/run/
        directory = layout.prepare_namespace("app")    # namespaces/app/ with tmp/ and backups/
        layout.db_path("app")                          # namespaces/app/app.db
        archive = layout.archive_namespace("app", stamp)   # archive/app.<stamp>/

    Parameters:

    * ``root`` - the data directory (``TURSO_DATA_DIR``).
    """

    root: Path

    # --- the server's own directories ---------------------------------------------------------------

    @property
    def namespaces_dir(self) -> Path:
        return self.root / NAMESPACES_DIR_NAME

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR_NAME

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE_NAME

    @property
    def run_dir(self) -> Path:
        return self.state_dir / RUN_DIR_NAME

    @property
    def spool_dir(self) -> Path:
        return self.root / SPOOL_DIR_NAME

    @property
    def archive_dir(self) -> Path:
        return self.root / ARCHIVE_DIR_NAME

    @property
    def legacy_backups_dir(self) -> Path:
        return self.root / LEGACY_BACKUP_DIR_NAME

    # --- one namespace ------------------------------------------------------------------------------

    def namespace_dir(self, name: str) -> Path:
        """``namespaces/<name>/``: everything of one namespace, and all its child may write."""
        return self.namespaces_dir / name

    def db_path(self, name: str) -> Path:
        return self.namespace_dir(name) / f"{name}{DB_SUFFIX}"

    def tmp_dir(self, name: str) -> Path:
        """The child's working files (``TMPDIR``): sort spills, temp tables, tursodb's ``.tmpXXXX/``."""
        return self.namespace_dir(name) / TMP_DIR_NAME

    def backups_dir(self, name: str) -> Path:
        """Where the child writes snapshots (``VACUUM INTO``), inside its own directory."""
        return self.namespace_dir(name) / BACKUPS_DIR_NAME

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}{PID_SUFFIX}"

    def db_files(self, name: str) -> list[Path]:
        """``<name>.db`` and its ``-wal``/``-shm``/... companions that exist."""
        main = self.db_path(name)
        companions = sorted(self.namespace_dir(name).glob(f"{name}{DB_SUFFIX}-*"))
        return [main, *companions] if main.exists() else companions

    def size_on_disk(self, name: str) -> int:
        """Bytes of ``<name>.db`` and its companions."""
        total = 0
        for path in self.db_files(name):
            try:
                total += path.stat().st_size
            except OSError:
                continue
        return total

    def pidfiles(self) -> list[Path]:
        return sorted(self.run_dir.glob(f"*{PID_SUFFIX}"))

    def backup_leftovers(self) -> list[Path]:
        """Backup directories a crash left behind, and the earlier layout's ``_backups/``."""
        leftovers = sorted(self.namespaces_dir.glob(f"*/{BACKUPS_DIR_NAME}/*"))
        if self.legacy_backups_dir.exists():
            leftovers.append(self.legacy_backups_dir)
        return leftovers

    def archives(self) -> list[tuple[Path, datetime]]:
        """Archive directories with a parsable stamp (anything else there is never touched)."""
        if not self.archive_dir.is_dir():
            return []
        found = []
        for entry in sorted(self.archive_dir.iterdir()):
            stamp = parse_archive_stamp(entry.name)
            if stamp is not None and entry.is_dir() and not entry.is_symlink():
                found.append((entry, stamp))
        return found

    # --- file operations ----------------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the directories the supervisor writes into."""
        for directory in (self.run_dir, self.archive_dir, self.namespaces_dir):
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)

    def prepare_namespace(self, name: str, *, create: bool = True) -> Path:
        """Create ``namespaces/<name>/`` with ``backups/`` and an empty ``tmp/`` (a dead child's
        spills are removed; the backups are the admin handler's, cleaned at startup).

        ``create=False`` (a known namespace's restart): its directory must be there. Gone, its
        files were archived by a delete that did not finish, and tursodb would answer from a new,
        empty database in place of the real one: :class:`FileNotFoundError` instead.
        """
        directory = self.namespace_dir(name)
        if not create and not directory.is_dir():
            raise FileNotFoundError(f"the directory of namespace {name!r} is gone (archived?)")
        tmp = self.tmp_dir(name)
        shutil.rmtree(tmp, ignore_errors=True)
        for path in (directory, tmp, self.backups_dir(name)):
            path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        return directory

    def remove_namespace(self, name: str) -> None:
        """Remove ``namespaces/<name>/`` whole (a namespace whose first spawn failed)."""
        shutil.rmtree(self.namespace_dir(name), ignore_errors=True)

    def archive_namespace(self, name: str, stamp: str) -> Path:
        """Move ``namespaces/<name>/`` to ``archive/<name>.<stamp>[-n]/`` in one ``rename`` (its
        ``tmp/`` and ``backups/`` dropped first), both directories fsynced: whenever this stops,
        the files are whole in one place or the other, never split between them."""
        target = _unique_dir(self.archive_dir, f"{name}.{stamp}")
        directory = self.namespace_dir(name)
        for scratch in (self.tmp_dir(name), self.backups_dir(name)):
            shutil.rmtree(scratch, ignore_errors=True)
        if directory.is_dir():
            os.rename(directory, target)  # replaces the empty directory _unique_dir reserved
            _fsync_dir(self.namespaces_dir)
        _fsync_dir(self.archive_dir)
        return target

    def unarchive_namespace(self, name: str, archive: Path) -> None:
        """Undo :meth:`archive_namespace` (a delete whose state write then failed)."""
        os.rename(archive, self.namespace_dir(name))
        _fsync_dir(self.namespaces_dir)
        _fsync_dir(self.archive_dir)

    def interrupted_archive(self, name: str, since: datetime) -> Path | None:
        """The archive of ``name`` made at or after ``since`` when its directory is gone: a delete
        or GC archive that moved the files but did not get to forget the namespace."""
        if self.namespace_dir(name).exists():
            return None
        since = since.replace(microsecond=0)  # stamps have whole seconds
        made = [
            path
            for path, stamp in self.archives()
            if (match := _ARCHIVE_NAME.fullmatch(path.name))
            and match.group("name") == name
            and stamp >= since
        ]
        return max(made, default=None)

    def migrate_flat_layout(self) -> None:
        """Move ``<root>/<name>.db`` and its companions (the layout before per-namespace
        directories) into ``namespaces/<name>/``; a name whose directory already holds a database is
        left alone and logged."""
        for main in sorted(self.root.glob(f"*{DB_SUFFIX}")):
            name = main.name[: -len(DB_SUFFIX)]
            if not is_valid_name(name):
                continue
            if self.db_path(name).exists():
                log.warning("flat-layout database left in place", extra={"namespace": name})
                continue
            directory = self.namespace_dir(name)
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            # Companions first, the database last: stopped in between, the next start still finds
            # <name>.db in the root and moves it after them (a WAL left behind would lose its
            # commits, since only a root *.db starts a migration).
            for path in [*sorted(self.root.glob(f"{name}{DB_SUFFIX}-*")), main]:
                os.replace(path, directory / path.name)
            log.info("namespace files moved into their directory", extra={"namespace": name})


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unique_dir(parent: Path, base: str) -> Path:
    """``parent/base``, or ``base-2``, ``base-3``... when a same-second archive exists."""
    for index in range(1, 10_000):
        candidate = parent / (base if index == 1 else f"{base}-{index}")
        try:
            candidate.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        return candidate
    raise OSError(f"cannot find a free archive directory for {base}")
