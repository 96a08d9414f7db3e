"""One duration grammar for the runtime, turso-server and the operator, and for the chart's schemas.

Feeds in: one table of duration strings. Checks: every part's parser (each package ships its own
copy of ``_durations.py``, since import-linter keeps the parts independent) returns the same
seconds or rejects the same strings, the copies are byte-identical, the JSON-schema patterns of the
CRD and ``values.schema.json`` accept exactly what the parsers accept, and each part's error names
the variable. Leaves unmocked: the real config loaders of the three parts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import buntime.turso._durations as runtime_durations
import turso_operator._durations as operator_durations
import turso_server._durations as server_durations
from buntime.turso import TursoConfigError, parse_interval, resolve_config
from tests.chart.rendering import CHART, CRD_FILE, ROOT
from tests.turso_server.support import TURSODB
from turso_operator._builders import SpecError, desired_namespace
from turso_operator._config import OperatorConfig, OperatorConfigError
from turso_server import ConfigError, load_config

VALID: list[tuple[str, float]] = [
    ("0", 0.0),
    ("60", 60.0),
    ("2.5", 2.5),
    ("0s", 0.0),
    ("5s", 5.0),
    ("1.5s", 1.5),
    ("500ms", 0.5),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("1d", 86400.0),
    ("30d", 30 * 86400.0),
    ("168h", 168 * 3600.0),
    ("1h30m", 5400.0),
    ("1d12h", 36 * 3600.0),
    ("1m30s500ms", 90.5),
]
INVALID = [
    "",
    "abc",
    "5x",
    "-1h",
    "+5",
    "-5",
    "1h 2m",
    "5 s",
    "1.5.2s",
    ".5s",
    "1.s",
    "5us",
    "5ns",
    "1e3",
    "h",
    "1H",
    "7 days",
    "inf",
]
PARSERS: dict[str, Callable[[str], float]] = {
    "runtime": runtime_durations.duration_seconds,
    "turso-server": server_durations.duration_seconds,
    "operator": operator_durations.duration_seconds,
}
COPIES = {
    "runtime": ROOT / "runtime" / "buntime" / "turso" / "_durations.py",
    "turso-server": ROOT / "turso-server" / "turso_server" / "_durations.py",
    "operator": ROOT / "operator" / "turso_operator" / "_durations.py",
}


def _schema_patterns() -> Iterator[tuple[str, str]]:
    """Every ``pattern`` of a duration value: the CRD's ttl, turso-server's and the plugins' durations."""
    crd = yaml.safe_load(CRD_FILE.read_text(encoding="utf-8"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    yield "crd spec.ttl", spec["properties"]["ttl"]["pattern"]
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    server = schema["properties"]["tursoServer"]["properties"]
    for key in ("gcInterval", "autoIdleDuration", "archiveRetention"):
        yield f"tursoServer.{key}", server[key]["pattern"]
    plugins = schema["properties"]["plugins"]["properties"]
    yield "plugins.turso.syncInterval", plugins["turso"]["properties"]["syncInterval"]["pattern"]
    keyval = plugins["keyval"]["properties"]
    yield "plugins.keyval.sweepInterval", keyval["sweepInterval"]["pattern"]
    yield "plugins.keyval.queue.lockDuration", keyval["queue"]["properties"]["lockDuration"]["pattern"]


SCHEMA_PATTERNS = dict(_schema_patterns())


def test_every_part_ships_the_same_parser() -> None:
    texts = {part: path.read_bytes() for part, path in COPIES.items()}
    assert len(set(texts.values())) == 1, f"the _durations.py copies differ: {sorted(texts)}"


@pytest.mark.parametrize("where", sorted(SCHEMA_PATTERNS))
def test_the_schemas_use_the_parsers_pattern(where: str) -> None:
    assert SCHEMA_PATTERNS[where] == runtime_durations.DURATION_PATTERN


@pytest.mark.parametrize(("text", "seconds"), VALID)
@pytest.mark.parametrize("part", sorted(PARSERS))
def test_valid_durations(part: str, text: str, seconds: float) -> None:
    assert PARSERS[part](text) == pytest.approx(seconds)
    assert re.fullmatch(runtime_durations.DURATION_PATTERN, text)


@pytest.mark.parametrize("text", INVALID)
@pytest.mark.parametrize("part", sorted(PARSERS))
def test_invalid_durations(part: str, text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        PARSERS[part](text)
    assert not re.fullmatch(runtime_durations.DURATION_PATTERN, text)


@pytest.mark.parametrize("part", sorted(PARSERS))
def test_surrounding_whitespace_is_ignored(part: str) -> None:
    # Environment values may carry a trailing newline; the schemas see YAML scalars without one.
    assert PARSERS[part](" 1h30m\n") == 5400.0


def _server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {"TURSO_DATA_DIR": str(tmp_path), "TURSODB_BIN": str(TURSODB), "TURSO_INSECURE_DEV": "true"}
    return {**base, **extra}


OPERATOR_BASE = {"TURSO_SERVER_URL": "http://t:8080", "TURSO_SERVER_ADMIN_URL": "http://t:8081"}

#: (part, variable, load(value) -> seconds): every place a duration setting is read.
LOADERS: list[tuple[str, str, Callable[[Path, str], Any]]] = [
    (
        "runtime",
        "TURSO_SYNC_INTERVAL",
        lambda _, v: resolve_config(env={"TURSO_SYNC_INTERVAL": v}).sync_interval,
    ),
    (
        "runtime",
        "TURSO_WRITE_TIMEOUT",
        lambda _, v: resolve_config(env={"TURSO_WRITE_TIMEOUT": v}).write_timeout,
    ),
    ("runtime", "KEYVAL_SWEEP_INTERVAL", lambda _, v: _keyval(v)),
    (
        "turso-server",
        "TURSO_GC_INTERVAL",
        lambda tmp, v: load_config({}, _server_env(tmp, TURSO_GC_INTERVAL=v)).gc_interval,
    ),
    (
        "turso-server",
        "TURSO_ARCHIVE_RETENTION",
        lambda tmp, v: load_config({}, _server_env(tmp, TURSO_ARCHIVE_RETENTION=v)).archive_retention,
    ),
    (
        "operator",
        "TURSO_RESYNC_SECONDS",
        lambda _, v: OperatorConfig.from_env({**OPERATOR_BASE, "TURSO_RESYNC_SECONDS": v}).resync_seconds,
    ),
]


def _keyval(value: str) -> float:
    from buntime.plugins.keyval._config import resolve_settings

    return resolve_settings({}, {"KEYVAL_SWEEP_INTERVAL": value}).sweep_interval


@pytest.mark.parametrize(("part", "variable", "load"), LOADERS, ids=[f"{p}-{v}" for p, v, _ in LOADERS])
def test_every_setting_reads_the_grammar_and_names_itself(
    tmp_path: Path, part: str, variable: str, load: Callable[[Path, str], Any]
) -> None:
    # The cases of issue 11: a bare number, hours, and a compound with days.
    for text, seconds in (("60", 60.0), ("1h", 3600.0), ("1d12h", 36 * 3600.0)):
        assert load(tmp_path, text) == seconds, (part, variable, text)
    with pytest.raises((TursoConfigError, ConfigError, OperatorConfigError, ValueError), match=variable):
        load(tmp_path, "soon")


def test_the_runtime_error_carries_a_code_with_the_variable() -> None:
    with pytest.raises(TursoConfigError) as caught:
        parse_interval("1y", name="TURSO_LEASE_TTL")
    assert caught.value.code == "INVALID_TURSO_LEASE_TTL" and "TURSO_LEASE_TTL" in str(caught.value)


def test_the_operator_checks_spec_ttl_with_the_grammar() -> None:
    meta = {"name": "app", "namespace": "apps"}
    assert desired_namespace({"ttl": "1d12h"}, meta).ttl == "1d12h"
    with pytest.raises(SpecError, match=r"spec\.ttl"):
        desired_namespace({"ttl": "soon"}, meta)
    with pytest.raises(SpecError, match=r"spec\.ttl"):
        desired_namespace({"ttl": "0"}, meta)


@pytest.mark.parametrize("part", sorted(PARSERS))
def test_a_duration_past_timedelta_is_refused_not_an_overflow(part: str) -> None:
    for text in ("9" * 400, "9" * 20 + "d"):
        with pytest.raises(ValueError, match="too long"):
            PARSERS[part](text)


@pytest.mark.parametrize("text, seconds", VALID)
def test_a_formatted_duration_reads_back_the_same_seconds(text: str, seconds: float) -> None:
    """``format_duration`` writes what every parser reads: exact, never in exponent notation
    (``{:g}`` made ``1e-05s`` of ten microseconds, and rounded the rest to six digits)."""
    for value in (seconds, seconds + 0.00001, seconds * 1000 + 0.1234567):
        formatted = server_durations.format_duration(value)
        assert "e" not in formatted and "E" not in formatted, formatted
        assert server_durations.duration_seconds(formatted) == pytest.approx(value, abs=1e-9), formatted
