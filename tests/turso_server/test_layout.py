"""The data directory's layout (``_layout``): every path, and the moves between them, on real files.

The running server's use of these paths is covered end to end by the admin, isolation and restart
tests; here each operation is checked on its own, and the modules that used to spell the paths
themselves (the registry, the spool, the supervisor) are checked to ask the layout.
"""

from __future__ import annotations

import ast
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import turso_server
from turso_server._layout import DataLayout, archive_stamp, parse_archive_stamp
from turso_server._state import StateStore


def test_every_path_of_a_namespace_is_under_its_directory(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    layout.prepare()
    assert {p.name for p in tmp_path.iterdir()} == {"namespaces", "archive", "_state"}
    assert (tmp_path / "_state" / "run").is_dir()
    directory = layout.prepare_namespace("app")
    assert directory == tmp_path / "namespaces" / "app"
    assert layout.db_path("app") == directory / "app.db"
    assert layout.tmp_dir("app").is_dir() and layout.backups_dir("app").is_dir()
    assert layout.pidfile("app") == tmp_path / "_state" / "run" / "app.pid"
    assert layout.state_file == tmp_path / "_state" / "namespaces.json"
    assert layout.spool_dir == tmp_path / "_spool"
    assert StateStore(tmp_path, flush_interval=1).path == layout.state_file, "the registry asks the layout"

    (layout.tmp_dir("app") / "spill").write_text("x")
    layout.prepare_namespace("app")
    assert list(layout.tmp_dir("app").iterdir()) == [], "a dead child's spills are removed"

    layout.db_path("app").write_bytes(b"1234")
    (directory / "app.db-wal").write_bytes(b"56")
    (directory / "app.dbx").write_bytes(b"not a companion")
    assert [p.name for p in layout.db_files("app")] == ["app.db", "app.db-wal"]
    assert layout.size_on_disk("app") == 6


def test_archiving_moves_the_database_files_and_never_overwrites(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    layout.prepare()
    stamp = archive_stamp(datetime(2026, 5, 21, 12, tzinfo=UTC))
    targets = []
    for _ in range(2):
        layout.prepare_namespace("app")
        layout.db_path("app").write_text("data")
        targets.append(layout.archive_namespace("app", stamp))
        assert not layout.namespace_dir("app").exists()
    assert [t.name for t in targets] == ["app.20260521T120000Z", "app.20260521T120000Z-2"]
    assert all((t / "app.db").read_text() == "data" for t in targets)
    (layout.archive_dir / "notes").mkdir()  # no stamp: never reported, so never purged
    (layout.archive_dir / "x.20260521T120000Z").write_text("a file, not a directory")
    found = layout.archives()
    assert [(p.name, s) for p, s in found] == [
        (t.name, datetime(2026, 5, 21, 12, tzinfo=UTC)) for t in targets
    ]
    assert parse_archive_stamp("app.2026052T120000Z") is None


def test_the_flat_layout_is_migrated_and_leftover_backups_are_listed(tmp_path: Path) -> None:
    layout = DataLayout(tmp_path)
    (tmp_path / "old.db").write_text("main")
    (tmp_path / "old.db-wal").write_text("wal")
    (tmp_path / "_hidden.db").write_text("not a namespace name")
    layout.prepare()
    layout.prepare_namespace("both")
    layout.db_path("both").write_text("new")
    (tmp_path / "both.db").write_text("old")
    layout.migrate_flat_layout()
    assert (layout.namespace_dir("old") / "old.db").read_text() == "main"
    assert (layout.namespace_dir("old") / "old.db-wal").read_text() == "wal"
    assert (tmp_path / "both.db").exists() and layout.db_path("both").read_text() == "new"
    assert (tmp_path / "_hidden.db").exists()

    leftover = layout.backups_dir("both") / "both-20260521T120000Z-abc"
    leftover.mkdir()
    layout.legacy_backups_dir.mkdir()
    assert layout.backup_leftovers() == [leftover, tmp_path / "_backups"]


def test_a_migration_stopped_midway_finishes_at_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database used to move first: stopped right after it, the WAL (its latest commits) stayed
    # in the root, where nothing looks for it any more.
    layout = DataLayout(tmp_path)
    (tmp_path / "old.db").write_text("main")
    (tmp_path / "old.db-wal").write_text("wal")
    layout.prepare()
    real_replace = os.replace

    def stop_after_one(src: Any, dst: Any) -> None:
        real_replace(src, dst)
        raise KeyboardInterrupt  # the process stops here

    monkeypatch.setattr(os, "replace", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        layout.migrate_flat_layout()
    monkeypatch.setattr(os, "replace", real_replace)
    layout.migrate_flat_layout()
    assert (layout.namespace_dir("old") / "old.db").read_text() == "main"
    assert (layout.namespace_dir("old") / "old.db-wal").read_text() == "wal"
    assert not (tmp_path / "old.db-wal").exists()


def test_only_the_layout_spells_the_data_directory() -> None:
    """No other module joins a path onto the data directory: they all ask ``DataLayout``."""
    package = Path(turso_server.__file__).parent
    offenders = []
    for module in sorted(package.glob("*.py")):
        if module.name == "_layout.py":
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            # ``<something>.data_dir / ...`` or ``data_dir / ...``
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                left = node.left
                name = left.attr if isinstance(left, ast.Attribute) else getattr(left, "id", "")
                if name in ("data_dir", "root", "namespaces_dir", "state_dir", "run_dir"):
                    offenders.append(f"{module.name}:{node.lineno}")
    assert offenders == []
