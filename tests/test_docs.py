"""The docs' checkable claims, compared with the code they describe.

``docs/operator.md``: the status tables (conditions, reasons, phases) against what ``_reconcile``
writes (read from its source), the configuration table against ``_config.SETTINGS``, the Secret's
keys, the injected variables, the metric names and the retry delays. ``docs/turso-server.md``:
the settings table against ``turso_server._config.SETTINGS``, the metric names against a real
registry, the admin API table against the admin app's routes, the restart backoff and the data
directory's entries. The README's worker section against ``buntime.worker``. A doc row that names
something the code lacks, or leaves out something the code has, fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from aiohttp import web

import buntime.worker
import turso_operator._reconcile
from buntime.turso._backends import INLINE_LIMIT, INLINE_PAUSE
from turso_operator._builders import injected_env
from turso_operator._config import SETTINGS as OPERATOR_SETTINGS
from turso_operator._constants import (
    BACKOFF_INITIAL_SECONDS,
    BACKOFF_MAX_SECONDS,
    CONFLICT_RETRY_SECONDS,
    DATA_DIR,
    RESERVED_RETRY_SECONDS,
    TOKEN_DIR,
    TOKEN_VOLUME,
    ConditionType,
    Phase,
    Reason,
    SecretKey,
)
from turso_operator._metrics import OperatorMetrics
from turso_server import _admin, _layout, _supervisor
from turso_server._config import SETTINGS as SERVER_SETTINGS
from turso_server._config import Kind
from turso_server._metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_DOC = (ROOT / "docs" / "operator.md").read_text()
SERVER_DOC = (ROOT / "docs" / "turso-server.md").read_text()
README = (ROOT / "README.md").read_text()


# -- reading markdown --------------------------------------------------------------------------------


def section(text: str, heading: str) -> str:
    """From ``heading`` (a whole line) to the next heading of the same or a higher level."""
    lines = text.splitlines()
    start = lines.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


def _cells(line: str) -> list[str]:
    """A table row's cells; a ``|`` inside backticks belongs to its cell."""
    cells, current, ticked = [], "", False
    for char in line.strip().strip("|"):
        if char == "`":
            ticked = not ticked
        if char == "|" and not ticked:
            cells.append(current.strip())
            current = ""
        else:
            current += char
    cells.append(current.strip())
    return cells


def table(text: str, first_header: str) -> list[list[str]]:
    """The rows (header and separator left out) of the table whose first header is ``first_header``."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("|") and _cells(line)[0] == first_header:
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(_cells(row))
            return rows
    raise AssertionError(f"no table starting with {first_header!r}")


def ticked(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def flat(text: str) -> str:
    return " ".join(text.split())


# -- the operator ----------------------------------------------------------------------------------


def _reason(node: ast.expr) -> str:
    """``Reason.X`` (or ``_keep_reason(..., Reason.X)``) as its value."""
    if isinstance(node, ast.Call):
        node = node.args[2]
    assert isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name), ast.dump(node)
    owner = {"Reason": Reason, "Phase": Phase, "ConditionType": ConditionType}[node.value.id]
    return str(getattr(owner, node.attr))


def written_statuses() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """What ``_reconcile`` writes: reasons per condition type, and reasons per phase."""
    source = Path(turso_operator._reconcile.__file__).read_text()
    by_condition: dict[str, set[str]] = {}
    by_phase: dict[str, set[str]] = {Phase.READY: {Reason.READY}}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr == "condition" and len(node.args) >= 3:
            if isinstance(node.args[2], ast.Name):
                continue  # StatusPatch.not_ready, passing its parameter on
            by_condition.setdefault(_reason(node.args[0]), set()).add(_reason(node.args[2]))
        elif node.func.attr == "not_ready" and len(node.args) == 4:
            reason = _reason(node.args[1])
            by_condition.setdefault(ConditionType.READY, set()).add(reason)
            by_phase.setdefault(_reason(node.args[3]), set()).add(reason)
    return by_condition, by_phase


def test_the_operator_status_tables_are_what_the_reconciler_writes() -> None:
    status = section(OPERATOR_DOC, "## Status")
    documented = {row[0].strip("`"): set(ticked(row[1])) for row in table(status, "condition")}
    by_condition, by_phase = written_statuses()
    assert set(documented) == set(ConditionType.ORDER)
    assert documented == by_condition
    phases = {row[0].strip("`"): set(ticked(row[1])) for row in table(status, "phase")}
    phases[Phase.READY] = {Reason.READY} if phases.get(Phase.READY) == {"Ready=True"} else phases[Phase.READY]
    assert phases == by_phase
    assert set(phases) == {v for k, v in vars(Phase).items() if k.isupper()}
    # Every named reason is documented somewhere: in the tables, or as an Event.
    events_only = {v for k, v in vars(Reason).items() if k.isupper()} - set().union(*documented.values())
    assert events_only == {Reason.SECRET_RESTORED, Reason.SHARED_TOKEN, Reason.ARCHIVE_FAILED}
    assert all(f"`{reason}`" in status for reason in events_only)


def test_the_operator_configuration_table_is_the_settings_table() -> None:
    rows = table(section(OPERATOR_DOC, "## Configuration"), "env")
    documented = {row[0].strip("`"): row[1] for row in rows}
    expected = {
        s.env: "required" if s.required else f"`{s.default}`" if s.default else "—" for s in OPERATOR_SETTINGS
    }
    assert documented == expected


def test_the_secret_keys_and_the_injected_variables_are_documented() -> None:
    secret = flat(section(OPERATOR_DOC, "## The Secret"))
    keys = {v for k, v in vars(SecretKey).items() if k.isupper()}
    names = {t.split("=")[0] for t in ticked(secret)}
    assert keys <= names
    assert {n for n in names if n.isupper()} == {k for k in keys if k.isupper()}
    injection = flat(next(p for p in OPERATOR_DOC.split("\n- ") if p.startswith("**Injection**")))
    env = {e["name"] for e in injected_env("s")}
    settings = {s.env for s in OPERATOR_SETTINGS}
    documented = {t.split("=")[0] for t in ticked(injection) if re.fullmatch(r"[A-Z_]+(=.*)?", t)}
    assert env <= documented and documented - env <= settings, documented ^ env
    assert f"`RUNTIME_TURSO_DIR={DATA_DIR}`" in injection and f"`{DATA_DIR}`" in injection
    assert f"`{TOKEN_VOLUME}`" in injection and f"`{TOKEN_DIR}`" in injection
    for name, value in ((e["name"], e.get("value")) for e in injected_env("s")):
        if name.endswith("_FILE"):
            assert f"`{name}={value}`" in injection, name


def test_the_operator_metric_names_are_the_registry() -> None:
    documented = set(re.findall(r"`(buntime_operator_[a-z_]+)", flat(OPERATOR_DOC)))
    registry = OperatorMetrics().registry
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in registry.collect()}
    assert documented == exported


def test_the_operator_retry_delays_are_the_constants() -> None:
    text = flat(OPERATOR_DOC)
    assert (
        f"waits 1 s \u00d7 2\u207f (capped at {BACKOFF_MAX_SECONDS:g} s, or at `TURSO_RESYNC_SECONDS`" in text
    )
    assert BACKOFF_INITIAL_SECONDS == 1
    assert f"every {CONFLICT_RETRY_SECONDS:g} s and {RESERVED_RETRY_SECONDS:g} s" in text


# -- turso-server ----------------------------------------------------------------------------------


def _flag(kind: Kind, flag: str) -> str:
    if kind is Kind.SECRET:
        return f"{flag} FILE"
    if kind is Kind.BOOL:
        return f"--[no-]{flag[2:]}"
    return flag


def test_the_turso_server_settings_table_is_the_settings_table() -> None:
    rows = table(section(SERVER_DOC, "### Configuration"), "Env")
    documented = {row[0].strip("`"): (row[1].strip("`"), row[2].strip("`")) for row in rows}
    expected = {s.env: (_flag(s.kind, s.flag), s.default or "empty") for s in SERVER_SETTINGS}
    assert documented == expected


def test_the_turso_server_metric_names_are_the_registry() -> None:
    documented = set(re.findall(r"`(turso_server_[a-z_]+)", flat(section(SERVER_DOC, "### Metrics"))))
    metrics = Metrics()
    metrics.watch_namespaces(dict)
    exported = {f.name + ("_total" if f.type == "counter" else "") for f in metrics.registry.collect()}
    assert documented == exported


def test_the_admin_api_table_is_the_admin_app() -> None:
    documented = set()
    for row in table(section(SERVER_DOC, "### Admin API"), "Method + path"):
        method, base = "", ""
        for item in ticked(row[0]):
            if item.startswith("/"):  # `/unlock` beside `POST /v1/namespaces/{n}/lock`
                path = base.rsplit("/", 1)[0] + item
            else:
                method, path = item.split(" ", 1)
                base = path
            documented.add((method, re.sub(r"\{[^}]+\}", "{}", path)))
    app = web.Application()
    _admin.add_routes(app)
    routes = {
        (route.method, re.sub(r"\{[^}]+\}", "{}", route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == routes - {("GET", "/healthz"), ("GET", "/readyz")}


def test_the_restart_backoff_and_the_data_directory_are_as_documented() -> None:
    text = flat(SERVER_DOC)
    assert (
        f"immediately if it had been up for {_supervisor.STABLE_AFTER:g} s, "
        f"else with backoff {_supervisor.BACKOFF_INITIAL:g} s, {2 * _supervisor.BACKOFF_INITIAL:g} s"
    ) in text
    data_dir = next(r for r in table(SERVER_DOC, "Env") if r[0] == "`TURSO_DATA_DIR`")
    entries = {
        f"{_layout.NAMESPACES_DIR_NAME}/<ns>/",
        f"{_layout.STATE_DIR_NAME}/",
        f"{_layout.SPOOL_DIR_NAME}/",
        f"{_layout.ARCHIVE_DIR_NAME}/",
    }
    assert set(ticked(data_dir[3])) == entries
    assert f"`{_layout.STATE_DIR_NAME}/{_layout.STATE_FILE_NAME}`" in text
    assert f"`{_layout.STATE_DIR_NAME}/{_layout.RUN_DIR_NAME}/<ns>.pid`" in text


# -- the worker ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variable",
    [
        "RUNTIME_TURSO_SERVER_URL",
        "RUNTIME_TURSO_SERVER_TOKEN",
        "RUNTIME_TURSO_SERVER_TOKEN_FILE",
        "RUNTIME_TURSO_DIR",
    ],
)
def test_the_worker_section_names_what_open_turso_reads(variable: str) -> None:
    worker = section(README, "### Worker apps")
    source = Path(buntime.worker.__file__).read_text()
    assert f'"{variable}"' in source
    assert variable.removeprefix("RUNTIME_TURSO_SERVER") in worker or variable in worker
    assert f"({buntime.worker.DEFAULT_WORKER_DIR})" in worker


def test_the_readme_states_the_replica_inline_limits_as_the_constants() -> None:
    assert (
        f"a statement that held the loop over {INLINE_LIMIT * 1000:g} ms sends the replica's statements "
        f"to its thread for {INLINE_PAUSE:g} s." in flat(README)
    )
