"""Pure pieces of turso-server without a running server: config, names, durations, paths, GC, state."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.turso_server.support import SERVER_SCRIPT, TURSODB
from turso_server import (
    SIZE_PATTERN,
    ConfigError,
    ScopedTokens,
    StateError,
    load_config,
    parse_duration,
    parse_size,
    validate_name,
)
from turso_server._auth import Access, DataAuth
from turso_server._confine import landlock_abi
from turso_server._errors import (
    ForbiddenError,
    InvalidNamespaceError,
    LeaseBusyError,
    LeaseLostError,
    UnauthorizedError,
)
from turso_server._gc import GcPolicy, GcReason, archive_reason
from turso_server._layout import parse_archive_stamp
from turso_server._leases import LeaseTable
from turso_server._logging import configure_logging, get_logger
from turso_server._proxy import server_revision, split_target
from turso_server._state import NamespaceRecord, Origin, StateStore, parse_timestamp

NOW = datetime(2026, 5, 21, 12, 0, tzinfo=UTC)
KEY = "k" * 32


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TURSO_DATA_DIR": str(tmp_path / "data"),
        "TURSODB_BIN": str(TURSODB),
        "TURSO_AUTH_TOKEN": "d",
        "TURSO_ADMIN_TOKEN": "a",
        **extra,
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TURSO_GC_INTERVAL", "7 days"),
        ("TURSO_STARTUP_TIMEOUT", "0"),
        ("TURSO_MAX_NAMESPACES", "-1"),
        ("TURSO_ALLOW_AUTO_PROVISION", "maybe"),
        ("TURSO_BACKEND_PORT_START", "70000"),
        ("TURSO_DATA_ADDR", "8080"),
        ("TURSODB_BIN", "/nonexistent/tursodb"),
        ("TURSO_TOKEN_SIGNING_KEY", "short"),
        ("TURSO_LOG_LEVEL", "loud"),
        ("TURSO_CHILD_LANDLOCK", "sometimes"),
        ("TURSO_CLIENT_SEND_TIMEOUT", "forever"),
        ("TURSO_CLIENT_RECEIVE_TIMEOUT", "-1s"),
        ("TURSO_SPOOL_MEMORY", "1024"),
        ("TURSO_SPOOL_DISK", "lots"),
        ("TURSO_SPOOL_DISK", "1G"),
        ("TURSO_MAX_REQUEST_BYTES", "63Ki"),
    ],
)
def test_invalid_settings_fail_naming_the_variable(tmp_path: Path, variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_config({}, _env(tmp_path, **{variable: value}))


SIZES_VALID = [
    ("0", 0),
    ("1", 1),
    ("268435456", 256 << 20),
    (" 256Mi ", 256 << 20),
    ("64Ki", 64 << 10),
    ("2Gi", 2 << 30),
    ("0Gi", 0),
    ("1048576Gi", 1 << 50),
]
SIZES_INVALID = [
    "",
    " ",
    "-1",
    "+5",
    "1.5Gi",
    "256 Mi",
    "256M",
    "256MB",
    "256mi",
    "2G",
    "1Ti",
    "Mi",
    "0x100",
    "1e9",
    "\uff11\uff12",  # fullwidth digits: int() would take them
]
# In the grammar (the schema's pattern lets them through) but past the 1 PiB ceiling; the longest is
# past int()'s digit limit: still a ValueError, no traceback.
SIZES_TOO_LARGE = ["1048577Gi", "9" * 21, "9" * 5000]


@pytest.mark.parametrize(("text", "size"), SIZES_VALID)
def test_size_grammar_accepts(text: str, size: int) -> None:
    assert parse_size(text) == size
    assert re.fullmatch(SIZE_PATTERN, text.strip())


@pytest.mark.parametrize("text", SIZES_INVALID + SIZES_TOO_LARGE)
def test_size_grammar_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)
    if text not in SIZES_TOO_LARGE:
        assert not re.fullmatch(SIZE_PATTERN, text.strip(), re.ASCII)


# Blank is the default (0); below 64Mi no child could start.
@pytest.mark.parametrize("value", [*SIZES_INVALID[2:], *SIZES_TOO_LARGE, "1Mi", "67108863"])
def test_child_memory_limit_rejects_hostile_values_naming_the_setting(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"TURSO_CHILD_MEMORY_LIMIT \(--child-memory-limit\)") as caught:
        load_config({}, _env(tmp_path, TURSO_CHILD_MEMORY_LIMIT=value))
    assert len(str(caught.value)) < 300


def test_child_memory_limit_values(tmp_path: Path) -> None:
    assert load_config({}, _env(tmp_path)).child_memory_limit == 0
    assert load_config({}, _env(tmp_path, TURSO_CHILD_MEMORY_LIMIT="0")).child_memory_limit == 0
    assert load_config({}, _env(tmp_path, TURSO_CHILD_MEMORY_LIMIT="64Mi")).child_memory_limit == 64 << 20
    flagged = load_config({"TURSO_CHILD_MEMORY_LIMIT": "2Gi"}, _env(tmp_path, TURSO_CHILD_MEMORY_LIMIT="1Gi"))
    assert flagged.child_memory_limit == 2 << 30


def test_every_byte_setting_takes_the_size_grammar(tmp_path: Path) -> None:
    default = load_config({}, _env(tmp_path))
    assert (default.spool_memory, default.spool_disk) == (64 << 20, 1 << 30)
    assert default.max_request_bytes == 256 << 20
    sized = load_config(
        {},
        _env(tmp_path, TURSO_SPOOL_MEMORY="128Mi", TURSO_SPOOL_DISK="2Gi", TURSO_MAX_REQUEST_BYTES="65536"),
    )
    assert (sized.spool_memory, sized.spool_disk, sized.max_request_bytes) == (128 << 20, 2 << 30, 64 << 10)


def test_child_landlock_modes(tmp_path: Path) -> None:
    assert load_config({}, _env(tmp_path)).child_landlock == "auto"
    assert load_config({}, _env(tmp_path, TURSO_CHILD_LANDLOCK="OFF")).child_landlock == "off"
    if landlock_abi():
        assert load_config({}, _env(tmp_path, TURSO_CHILD_LANDLOCK="require")).child_landlock == "require"
    else:
        with pytest.raises(ConfigError, match="TURSO_CHILD_LANDLOCK"):
            load_config({}, _env(tmp_path, TURSO_CHILD_LANDLOCK="require"))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("TURSO_AUTH_TOKEN", "TURSO_ADMIN_TOKEN"),
        ("TURSO_AUTH_TOKEN", "TURSO_METRICS_TOKEN"),
        ("TURSO_ADMIN_TOKEN", "TURSO_METRICS_TOKEN"),
        ("TURSO_METRICS_TOKEN", "TURSO_TOKEN_SIGNING_KEY"),
        ("TURSO_AUTH_TOKEN", "TURSO_TOKEN_SIGNING_KEY"),
        ("TURSO_ADMIN_TOKEN", "TURSO_TOKEN_SIGNING_KEY"),
    ],
)
def test_no_secret_may_be_reused_for_another(tmp_path: Path, first: str, second: str) -> None:
    # A metrics token equal to the signing key would let a scraper mint data tokens; the data
    # token equal to the admin token would open the admin port to every data client.
    shared = "s" * 40
    with pytest.raises(ConfigError, match=f"{first} and {second} must differ") as caught:
        load_config({}, _env(tmp_path, **{first: shared, second: shared}))
    assert shared not in str(caught.value)


def test_config_defaults_flags_and_auth_rules(tmp_path: Path) -> None:
    config = load_config({}, _env(tmp_path, TURSO_GC_INTERVAL="0", TURSO_AUTO_IDLE_DURATION="7d"))
    assert (config.gc_interval, config.auto_idle_duration) == (0.0, 7 * 86400.0)
    assert (config.data_addr.host, config.data_addr.port, config.max_namespaces) == (None, 8080, 256)
    assert "'d'" not in repr(config)  # secrets stay out of reprs
    flagged = load_config(
        {"TURSO_MAX_NAMESPACES": "3", "TURSO_ALLOW_AUTO_PROVISION": "false"}, _env(tmp_path)
    )
    assert (flagged.max_namespaces, flagged.allow_auto_provision) == (3, False)
    for name, value in (("TURSO_LEASE_TTL", "10ms"), ("TURSO_LEASE_TTL", "90s"), ("TURSO_LEASE_WAIT", "61s")):
        with pytest.raises(ConfigError, match=name):
            load_config({name: value}, _env(tmp_path))
    with pytest.raises(ConfigError, match="TURSO_BACKEND_PORT_START"):
        load_config({}, _env(tmp_path, TURSO_BACKEND_PORT_START="9500", TURSO_BACKEND_PORT_END="9000"))
    with pytest.raises(ConfigError, match="TURSO_ADMIN_TOKEN"):
        load_config({}, _env(tmp_path, TURSO_ADMIN_TOKEN=""))
    with pytest.raises(ConfigError, match="TURSO_AUTH_TOKEN"):
        load_config({}, _env(tmp_path, TURSO_AUTH_TOKEN=""))
    scoped_only = load_config({}, _env(tmp_path, TURSO_AUTH_TOKEN="", TURSO_TOKEN_SIGNING_KEY=KEY))
    assert scoped_only.data_auth_enabled
    insecure = load_config(
        {"TURSO_INSECURE_DEV": "true"}, _env(tmp_path, TURSO_AUTH_TOKEN="", TURSO_ADMIN_TOKEN="")
    )
    assert not insecure.data_auth_enabled and not insecure.admin_auth_enabled


def test_cli_help_and_startup_errors(tmp_path: Path) -> None:
    help_text = subprocess.run([SERVER_SCRIPT, "--help"], capture_output=True, text=True, check=True).stdout
    for needle in ("TURSO_DATA_ADDR", "--gc-interval", "TURSO_TOKEN_SIGNING_KEY", "--insecure-dev"):
        assert needle in help_text
    env = {**_env(tmp_path), "TURSO_GC_INTERVAL": "soon", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([SERVER_SCRIPT], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 2 and "TURSO_GC_INTERVAL" in result.stderr


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration("1.5s") == timedelta(seconds=1.5)
    assert parse_duration("0") == timedelta(0)
    assert parse_duration("60") == timedelta(minutes=1)  # a bare number is seconds (tests/test_durations.py)
    for bad in ("", "abc", "5x", "-1h", "d", "1h 2m"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_names_and_target_splitting() -> None:
    for good in ("foo", "app-todo-12345", "api_keys", "a", "0", "a" * 63):
        assert validate_name(good) == good
    for bad in ("", "-foo", "_internal", "foo/bar", "foo bar", "Foo", "a" * 64, "a.b", "healthz", "x\n"):
        with pytest.raises(InvalidNamespaceError):
            validate_name(bad)
    assert split_target("/foo/v1/sync/pull?cursor=42") == ("foo", "/v1/sync/pull", "cursor=42")
    assert split_target("/foo") == ("foo", "/", "")
    assert split_target("/foo/") == ("foo", "/", "")
    assert split_target("/foo//pull-updates") == ("foo", "/pull-updates", "")


def test_the_server_revision_a_pull_names() -> None:
    """What decides whether tursodb's 500 for a pull past its WAL is the client's 400: the request
    named a revision (the last one, as prost keeps; fields inside a group do not count)."""
    assert server_revision(b"") == b""
    assert server_revision(b"\x1a\x015\x08\x00") == b""  # a real replica's pull: client revision only
    assert server_revision(b"\x12\x0299") == b"99"
    assert server_revision(b"\x12\x011\x12\x0299\x20\x80\x01") == b"99"
    assert server_revision(b"\x12\x0299\x12\x00") == b""
    assert server_revision(b"\x2a\x02\x12\x01\x3d\x00\x00\x00\x00\x19" + bytes(8)) == b""
    assert server_revision(b"\x1b\x12\x0299\x1c") == b""  # group 3 holding a field 2
    assert server_revision(b"\x90\x06\x05\x12\x0299") == b"99"  # field 98 (a two-byte key) first
    for broken in (b"\x12", b"\x12\x05ab", b"\xff" * 11, b"\x1c", b"\x0e", b"\x08"):
        with pytest.raises(ValueError):
            server_revision(broken)


def test_gc_rules_and_archive_stamps() -> None:
    policy = GcPolicy(auto_idle=7 * 86400, archive_retention=0)

    def record(
        origin: Origin, *, locked: bool, age: timedelta, idle: timedelta, ttl: str | None = None
    ) -> NamespaceRecord:
        return NamespaceRecord("n", origin, NOW - age, NOW - idle, locked, ttl)

    day = timedelta(days=1)
    assert archive_reason(record(Origin.EXPLICIT, locked=True, age=day, idle=day), NOW, policy) is None
    assert archive_reason(record(Origin.AUTO, locked=False, age=9 * day, idle=3 * day), NOW, policy) is None
    assert (
        archive_reason(record(Origin.AUTO, locked=False, age=9 * day, idle=8 * day), NOW, policy)
        is GcReason.AUTO_IDLE
    )
    assert archive_reason(record(Origin.AUTO, locked=True, age=9 * day, idle=8 * day), NOW, policy) is None
    expired = record(Origin.EXPLICIT, locked=False, age=timedelta(hours=2), idle=timedelta(0), ttl="1h")
    assert archive_reason(expired, NOW, policy) is GcReason.TTL_EXPIRED
    young = record(Origin.EXPLICIT, locked=False, age=day, idle=day, ttl="30d")
    assert archive_reason(young, NOW, policy) is None
    invalid_ttl = record(Origin.EXPLICIT, locked=False, age=365 * day, idle=day, ttl="garbage")
    assert archive_reason(invalid_ttl, NOW, policy) is None

    assert parse_archive_stamp("foo.20260521T120000Z") == datetime(2026, 5, 21, 12, tzinfo=UTC)
    assert parse_archive_stamp("foo.20260521T120000Z-2") == datetime(2026, 5, 21, 12, tzinfo=UTC)
    for bad in ("foo.bar", "no-suffix", "foo.", "foo.20261399T999999Z"):
        assert parse_archive_stamp(bad) is None


def test_scoped_tokens() -> None:
    tokens = ScopedTokens(KEY)
    created = "2026-05-21T12:00:00.000000Z"
    minted = tokens.mint("app", created, 0, Access.READ_ONLY, expires_in=timedelta(hours=1))
    principal = tokens.verify(minted.token)
    assert (principal.namespace, principal.access) == ("app", Access.READ_ONLY)
    with pytest.raises(UnauthorizedError):
        ScopedTokens("x" * 32).verify(minted.token)
    auth = DataAuth("global", tokens, binding={"app": (created, 0)}.get)
    assert auth.authenticate("Bearer global").namespace is None
    assert auth.authenticate("bearer global").namespace is None
    for header in (None, "", "Bearer", "Basic global", "Bearer globalx", "Bearer a.b.c"):
        with pytest.raises(UnauthorizedError):
            auth.authenticate(header)
    DataAuth.authorize(principal, "app", "POST", "/pull-updates")
    with pytest.raises(ForbiddenError):
        DataAuth.authorize(principal, "app", "POST", "/v2/pipeline")
    with pytest.raises(ForbiddenError):
        DataAuth.authorize(principal, "other", "POST", "/pull-updates")


def test_the_lease_table_forgets_every_name_it_has_nothing_to_remember_for() -> None:
    """Grants released, waits that timed out and plain writes leave no entry behind, however many
    names were asked about; an entry whose holder wrote last stays, and answers ``fresh``."""

    async def scenario() -> None:
        table = LeaseTable()
        for index in range(500):
            name = f"name-{index}"
            grant = await table.acquire(name, "pod-a", ttl=5, wait=0)
            with pytest.raises(LeaseBusyError):
                await table.acquire(name, "pod-b", ttl=5, wait=0.001)
            assert await table.release(name, grant.lease.token)
            async with table.implicit(name, wait=0):
                pass
        assert len(table) == 0
        written = await table.acquire("kept", "pod-a", ttl=5, wait=0)
        async with table.use("kept", written.lease.token, write=True):
            pass
        assert await table.release("kept", written.lease.token)
        assert len(table) == 1
        again = await table.acquire("kept", "pod-a", ttl=5, wait=0)
        assert again.fresh and again.lease.fence == 2
        with pytest.raises(LeaseLostError):
            table.renew("name-0", "a-token-of-a-dropped-entry")

    asyncio.run(scenario())


def test_state_store_atomic_versioned_and_go_compatible(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = StateStore(tmp_path, flush_interval=0.01)
        store.load()
        await store.add(NamespaceRecord("alpha", Origin.EXPLICIT, NOW, NOW, True, "30d"))
        await store.add(NamespaceRecord("beta", Origin.AUTO, NOW, NOW, False))
        store.touch("beta", NOW + timedelta(hours=1))
        await store.close()

    asyncio.run(scenario())
    state_dir = tmp_path / "_state"
    assert [p.name for p in state_dir.iterdir() if p.is_file()] == ["namespaces.json"]  # no tmp leftovers
    document = json.loads((state_dir / "namespaces.json").read_text())
    assert document["version"] == 1
    reopened = StateStore(tmp_path, flush_interval=1)
    reopened.load()
    alpha, beta = reopened.records()
    assert (alpha.origin, alpha.locked, alpha.ttl) == (Origin.EXPLICIT, True, "30d")
    assert beta.last_access_at == NOW + timedelta(hours=1)

    # A Go wrapper's file (nanosecond timestamps) loads; a newer version or broken JSON is refused.
    assert parse_timestamp("2026-05-21T12:00:00.123456789Z") == datetime(
        2026, 5, 21, 12, 0, 0, 123456, tzinfo=UTC
    )
    for bad in ("2026-05-21T12:00:00Z\n", "\u0662026-05-21T12:00:00Z"):  # a newline, an Arabic digit
        with pytest.raises(ValueError):
            parse_timestamp(bad)
    (state_dir / "namespaces.json").write_text(json.dumps({"version": 2, "namespaces": []}))
    with pytest.raises(StateError, match="version"):
        StateStore(tmp_path, flush_interval=1).load()
    (state_dir / "namespaces.json").write_text("{not json")
    with pytest.raises(StateError):
        StateStore(tmp_path, flush_interval=1).load()


def test_the_token_generation_is_stored_once_raised_and_a_file_without_it_loads_as_0(tmp_path: Path) -> None:
    state_dir = tmp_path / "_state"
    state_dir.mkdir()
    older = {"name": "old", "origin": "explicit", "createdAt": "2026-05-21T12:00:00Z", "locked": True}
    bad = [{**older, "name": f"bad{i}", "tokenGeneration": value} for i, value in enumerate((-1, "2", True))]
    (state_dir / "namespaces.json").write_text(json.dumps({"version": 1, "namespaces": [older, *bad]}))

    async def scenario() -> None:
        store = StateStore(tmp_path, flush_interval=0.01)
        store.load()
        assert [r.name for r in store.records()] == ["old"], "unreadable generations are skipped entries"
        assert store.token_binding("old") == ("2026-05-21T12:00:00.000000Z", 0)
        assert store.token_binding("nobody") is None
        await store.add(NamespaceRecord("fresh", Origin.EXPLICIT, NOW, NOW, False))

        def revoke(record: NamespaceRecord) -> None:
            record.token_generation += 3

        await store.update("old", revoke)
        await store.close()

    asyncio.run(scenario())
    document = json.loads((state_dir / "namespaces.json").read_text())
    assert {n["name"]: n.get("tokenGeneration") for n in document["namespaces"]} == {"old": 3, "fresh": None}
    reopened = StateStore(tmp_path, flush_interval=1)
    reopened.load()
    assert reopened.token_binding("old") == ("2026-05-21T12:00:00.000000Z", 3)


def test_every_configured_secret_is_redacted_from_a_log_line(tmp_path: Path) -> None:
    """The data, admin and metrics tokens and the signing key, with ``"``, ``'`` or ``\\`` (which a
    JSON line or a ``repr`` escapes), configured as ``cli`` configures logging: a line carrying
    them, in its message, an extra field, a nested value or an exception's ``repr``, shows
    ``[redacted]`` and no secret in any form."""
    secrets = {
        "TURSO_AUTH_TOKEN": 'data"token',
        "TURSO_ADMIN_TOKEN": "admin\\token",
        "TURSO_METRICS_TOKEN": "metrics-token-\\'-x",
        "TURSO_TOKEN_SIGNING_KEY": 'signing-"key"-\\' + "k" * 32,
    }
    config = load_config({}, _env(tmp_path, **secrets))
    for log_format in ("json", "text"):
        stream = io.StringIO()
        configure_logging("info", log_format, secrets=config.secrets, stream=stream)
        try:
            for secret in secrets.values():
                extra = {"field": secret, "nested": {"v": [secret]}, "error": ValueError(secret)}
                get_logger("test").info(f"saw {secret}", extra=extra)
        finally:
            configure_logging("info", "json")
        lines = stream.getvalue().splitlines()
        assert len(lines) == len(secrets)
        for line in lines:
            assert line.count("[redacted]") == 4, line
            if log_format == "json":
                record = json.loads(line)
                assert record["msg"] == "saw [redacted]" and record["field"] == "[redacted]"
            for secret in secrets.values():
                assert secret not in line and json.dumps(secret)[1:-1] not in line, line


def _stored(store: StateStore) -> dict[str, dict[str, object]]:
    """What the state file holds, by name."""
    return {n["name"]: n for n in json.loads(store.path.read_text())["namespaces"]}


def _remembered(store: StateStore) -> dict[str, dict[str, object]]:
    """What the store holds in memory, in the file's shape."""
    return {r.name: r.to_json() for r in store.records()}


class _HeldWrites:
    """The state file's writer, with chosen writes held (in their thread) until released or made
    to fail, as a slow or failing disk would; every other write is the real one."""

    def __init__(self, patch: pytest.MonkeyPatch, *, hold: set[int], fail: set[int] = frozenset()) -> None:
        import threading

        from turso_server import _state

        self._real = _state._write_atomically
        self._hold, self._fail = hold, fail
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        patch.setattr(_state, "_write_atomically", self)

    def __call__(self, path: Path, text: str) -> None:
        self.calls += 1
        call = self.calls
        if call in self._hold:
            self.entered.set()
            assert self.release.wait(10), "a held state write was never released"
        if call in self._fail:
            raise OSError(28, "No space left on device")
        self._real(path, text)


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_write_cancelled_in_its_thread_never_lands_after_a_later_acknowledged_one(tmp_path: Path) -> None:
    """A cancelled change released the write lock while its thread went on writing: the next
    change's write ran beside it, was acknowledged, and the older snapshot replaced the file
    after it, so a kill then lost an acknowledged change (nothing was dirty to write it again)."""
    with pytest.MonkeyPatch.context() as patch:
        writes = _HeldWrites(patch, hold={1})

        async def scenario() -> None:
            store = StateStore(tmp_path, flush_interval=60)
            store.load()
            first = asyncio.create_task(store.add(NamespaceRecord("a", Origin.EXPLICIT, NOW, NOW, True)))
            await _until(writes.entered.is_set, "the first write to start")
            first.cancel()
            await asyncio.sleep(0.05)
            second = asyncio.create_task(store.add(NamespaceRecord("b", Origin.EXPLICIT, NOW, NOW, True)))
            await asyncio.wait({second}, timeout=0.5)  # before the fix it was acknowledged here
            writes.release.set()
            await second
            with pytest.raises(asyncio.CancelledError):
                await first
            await asyncio.sleep(0.2)  # any thread still writing finishes
            assert _stored(store) == _remembered(store), "memory and file disagree"
            assert set(_stored(store)) == {"a", "b"}, "the cancelled change landed, so it is kept"

        asyncio.run(scenario())


def test_a_change_cancelled_before_its_write_changes_nothing(tmp_path: Path) -> None:
    """A change cancelled while another write held the lock stayed in memory and was never written
    (nothing marked it dirty): the server acted on it, and the next start forgot it."""
    with pytest.MonkeyPatch.context() as patch:
        writes = _HeldWrites(patch, hold={1})

        async def scenario() -> None:
            store = StateStore(tmp_path, flush_interval=60)
            store.load()
            first = asyncio.create_task(store.add(NamespaceRecord("x", Origin.EXPLICIT, NOW, NOW, True)))
            await _until(writes.entered.is_set, "the first write to start")
            waiting = [
                asyncio.create_task(store.add(NamespaceRecord("y", Origin.EXPLICIT, NOW, NOW, True))),
                asyncio.create_task(store.remove("x")),
                asyncio.create_task(store.update("x", lambda record: setattr(record, "ttl", "1h"))),
            ]
            await asyncio.sleep(0.05)
            for task in waiting:
                task.cancel()
            writes.release.set()
            await first
            for task in waiting:
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert _remembered(store) == _stored(store) == {"x": _stored(store)["x"]}
            assert "ttl" not in _stored(store)["x"]

        asyncio.run(scenario())


def test_a_failed_write_takes_back_its_own_change_and_never_a_concurrent_one(tmp_path: Path) -> None:
    """Two changes of one namespace while the first one's write failed: the first one's undo put
    back the record from before it, wiping the second change, which was then acknowledged with
    neither memory nor the file holding it. A change cancelled during a failing write is taken back
    before the cancellation is raised."""
    with pytest.MonkeyPatch.context() as patch:
        writes = _HeldWrites(patch, hold={2}, fail={2})

        async def scenario() -> None:
            store = StateStore(tmp_path, flush_interval=60)
            store.load()
            await store.add(NamespaceRecord("n", Origin.EXPLICIT, NOW, NOW, False))
            lock = asyncio.create_task(store.update("n", lambda record: setattr(record, "locked", True)))
            await _until(writes.entered.is_set, "the failing write to start")
            ttl = asyncio.create_task(store.update("n", lambda record: setattr(record, "ttl", "30d")))
            await asyncio.sleep(0.05)
            writes.release.set()
            with pytest.raises(OSError):
                await lock
            acknowledged = await ttl
            assert (acknowledged.ttl, acknowledged.locked) == ("30d", False)
            assert _remembered(store) == _stored(store)
            assert (_stored(store)["n"].get("ttl"), _stored(store)["n"]["locked"]) == ("30d", False)

        asyncio.run(scenario())

    with pytest.MonkeyPatch.context() as patch:
        writes = _HeldWrites(patch, hold={1}, fail={1})

        async def cancelled() -> None:
            store = StateStore(tmp_path, flush_interval=60)
            store.load()
            remove = asyncio.create_task(store.remove("n"))
            await _until(writes.entered.is_set, "the failing write to start")
            remove.cancel()
            await asyncio.sleep(0.05)
            writes.release.set()
            with pytest.raises(asyncio.CancelledError):
                await remove
            assert "n" in store and _remembered(store) == _stored(store)

        asyncio.run(cancelled())
