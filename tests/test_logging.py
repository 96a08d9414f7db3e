"""One log format for the three programs: JSON lines with the same fields, and no tokens.

Feeds in: a real ``buntime serve``, a real ``turso-server`` (both as subprocesses with piped
output, so ``auto`` means JSON) and the operator's formatter fed kopf's own per-object logger.
Checks: every log line parses as JSON with ``time``, ``level``, ``logger`` and ``msg``; a token
set in the environment never appears, even when something logs it. Leaves unmocked: the real
programs and kopf's JSON formatter.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.support import RuntimeProcess, http, local_env
from tests.turso_server.support import TURSODB, ServerProcess, raw_request

COMMON_FIELDS = {"time", "level", "logger", "msg"}
TOKEN = "tok-4f1c9a7e-never-log-me"


def _records(lines: list[str], *, program_output: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Parse every line as a JSON object with the common fields (program output lines excepted)."""
    records = []
    for line in lines:
        if not line.strip() or line.startswith(program_output):
            continue
        record = json.loads(line)
        assert record.keys() >= COMMON_FIELDS, line
        assert record["time"].endswith("Z") and record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}
        records.append(record)
    return records


def test_buntime_logs_json_lines_without_tokens(tmp_path: Path) -> None:
    env = local_env(tmp_path, BUNTIME_LOG_LEVEL="debug", GATEWAY_API_KEY=TOKEN)
    runtime = RuntimeProcess(env, tmp_path / "serve.log").start(probe="live")
    try:
        assert http("GET", f"{runtime.url}/api/health/live")[0] == 200
    finally:
        assert runtime.stop() == 0
    text = runtime.log()
    records = _records(text.splitlines(), program_output=("buntime serve listening on",))
    assert {"signal received: draining requests, then stopping plugins", "server stopped"} <= {
        r["msg"] for r in records
    }
    assert TOKEN not in text


def test_turso_server_logs_json_lines_without_tokens(tmp_path: Path) -> None:
    env = {
        "TURSO_DATA_DIR": str(tmp_path / "data"),
        "TURSODB_BIN": str(TURSODB),
        "TURSO_AUTH_TOKEN": TOKEN,
        "TURSO_ADMIN_TOKEN": TOKEN + "-admin",
        "TURSO_LOG_LEVEL": "debug",
    }
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        raw_request(server.data_port, "GET", "/readyz")
    finally:
        server.stop()
    records = _records(server.lines)
    assert any(r["msg"] == "listening" for r in records)
    assert TOKEN not in server.output()


@pytest.fixture
def operator_stream() -> Iterator[io.StringIO]:
    from turso_operator._logging import configure_logging

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    configure_logging("debug", "json", env={"TURSO_SERVER_ADMIN_TOKEN": TOKEN}, stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], root.level = saved[0], saved[1]


def test_the_operator_logs_kopf_json_with_the_common_fields(operator_stream: io.StringIO) -> None:
    import kopf

    settings = kopf.OperatorSettings()
    body = kopf.Body(
        {
            "apiVersion": "turso.buntime.io/v1alpha1",
            "kind": "TursoNamespace",
            "metadata": {"name": "orders", "namespace": "shop", "uid": "u-1"},
        }
    )
    object_logger = kopf.ObjectLogger(body=body, settings=settings)
    object_logger.info("provisioned %s", "orders")
    logging.getLogger("turso_operator.reconcile").warning("admin call failed with %s", TOKEN)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("kopf.activities").exception("handler failed")
    records = _records(operator_stream.getvalue().splitlines())
    provisioned, failed, crashed = records
    assert provisioned["msg"] == "provisioned orders" and provisioned["logger"] == "kopf.objects"
    assert provisioned["object"]["name"] == "orders" and provisioned["severity"] == "info"  # kopf's own keys
    assert TOKEN not in failed["msg"] and "[redacted]" in failed["msg"]
    assert crashed["level"] == "ERROR" and "RuntimeError: boom" in crashed["exc"]


def test_text_format_for_a_person() -> None:
    from buntime._logging import make_formatter

    stream = io.StringIO()
    formatter = make_formatter("text", stream=stream, secrets=[TOKEN])
    record = logging.LogRecord("buntime.server", logging.INFO, __file__, 1, "token %s", (TOKEN,), None)
    line = formatter.format(record)
    assert " INFO buntime.server: token [redacted]" in line and not line.startswith("{")
    assert make_formatter("auto", stream=stream).format(record).startswith("{")  # not a terminal
