"""Operator configuration from the environment: defaults, and a clear error naming each bad value."""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import pytest

from tests.support.tursoserver import TursoServer
from turso_operator import AdminClient
from turso_operator._config import OperatorConfig, OperatorConfigError
from turso_operator._durations import duration_seconds, format_duration

BASE = {"TURSO_SERVER_URL": "http://turso:8080/", "TURSO_SERVER_ADMIN_URL": "http://turso-admin:8081"}


def test_defaults_and_trailing_slashes() -> None:
    cfg = OperatorConfig.from_env(BASE)
    assert cfg.server_url == "http://turso:8080" and cfg.admin_url == "http://turso-admin:8081"
    assert (cfg.resync_seconds, cfg.request_timeout, cfg.kube_request_timeout) == (60.0, 10.0, 60.0)
    assert cfg.watch_namespaces == () and cfg.webhook_enabled and cfg.inject_failure_policy == "Fail"
    assert (cfg.webhook_port, cfg.liveness_port) == (9443, 8080)


def test_values_are_read_and_tokens_stay_out_of_repr() -> None:
    cfg = OperatorConfig.from_env(
        {
            **BASE,
            "TURSO_SERVER_ADMIN_TOKEN": "admin-secret",
            "TURSO_SERVER_TOKEN": "data-secret",
            "TURSO_WATCH_NAMESPACES": " apps, , team-b ",
            "TURSO_KUBE_REQUEST_TIMEOUT": "2.5",
            "TURSO_WEBHOOK_ENABLED": "false",
            "TURSO_INJECT_FAILURE_POLICY": "Ignore",
            "POD_NAMESPACE": "buntime-system",
        }
    )
    assert cfg.watch_namespaces == ("apps", "team-b")
    assert cfg.kube_request_timeout == 2.5 and not cfg.webhook_enabled
    assert cfg.inject_failure_policy == "Ignore" and cfg.operator_namespace == "buntime-system"
    assert cfg.admin_token == "admin-secret" and cfg.data_token == "data-secret"
    assert "secret" not in repr(cfg)


def test_runtime_credentials_settings() -> None:
    cfg = OperatorConfig.from_env(
        {
            **BASE,
            "TURSO_RUNTIME_SECRET": "buntime-runtime-turso",
            "TURSO_RUNTIME_NAMESPACES": "runtime, keyval",
            "TURSO_RUNTIME_WORKER_NAMESPACES": "worker-*",
            "POD_NAMESPACE": "buntime-system",
        }
    )
    assert cfg.runtime_credentials == "buntime-runtime-turso"
    assert (cfg.runtime_scope, cfg.worker_scope) == (("runtime", "keyval"), ("worker-*",))
    with pytest.raises(OperatorConfigError, match="TURSO_RUNTIME_NAMESPACES"):
        OperatorConfig.from_env({**BASE, "TURSO_RUNTIME_SECRET": "x", "POD_NAMESPACE": "ns"})
    with pytest.raises(OperatorConfigError, match="POD_NAMESPACE"):
        OperatorConfig.from_env({**BASE, "TURSO_RUNTIME_SECRET": "x", "TURSO_RUNTIME_NAMESPACES": "a"})


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"TURSO_SERVER_URL": ""}, "TURSO_SERVER_URL"),
        ({"TURSO_SERVER_ADMIN_URL": ""}, "TURSO_SERVER_ADMIN_URL"),
        ({"TURSO_SERVER_URL": "turso:8080"}, "TURSO_SERVER_URL"),
        ({"TURSO_RESYNC_SECONDS": "soon"}, "TURSO_RESYNC_SECONDS"),
        ({"TURSO_KUBE_REQUEST_TIMEOUT": "0"}, "TURSO_KUBE_REQUEST_TIMEOUT"),
        ({"TURSO_REQUEST_TIMEOUT": "-1"}, "TURSO_REQUEST_TIMEOUT"),
        ({"TURSO_WEBHOOK_PORT": "70000"}, "TURSO_WEBHOOK_PORT"),
        ({"TURSO_LIVENESS_PORT": "http"}, "TURSO_LIVENESS_PORT"),
        ({"TURSO_INJECT_FAILURE_POLICY": "fail"}, "TURSO_INJECT_FAILURE_POLICY"),
        ({"TURSO_WEBHOOK_ENABLED": "yes"}, "TURSO_WEBHOOK_ENABLED"),
        ({"TURSO_WEBHOOK_TIMEOUT": "0"}, "TURSO_WEBHOOK_TIMEOUT"),
        ({"TURSO_INSTANCE": "Staging"}, "TURSO_INSTANCE"),
        ({"TURSO_INSTANCE": "x" * 54}, "TURSO_INSTANCE"),
    ],
)
def test_a_bad_value_is_an_error_that_names_it(change: dict[str, str], named: str) -> None:
    with pytest.raises(OperatorConfigError, match=named):
        OperatorConfig.from_env({**BASE, **change})


def test_the_token_lifetime_is_off_by_default_and_read_in_the_duration_grammar() -> None:
    assert OperatorConfig.from_env(BASE).token_lifetime == 0.0
    assert OperatorConfig.from_env({**BASE, "TURSO_TOKEN_LIFETIME": "0"}).token_lifetime == 0.0
    assert OperatorConfig.from_env({**BASE, "TURSO_TOKEN_LIFETIME": "1d12h"}).token_lifetime == 129600.0
    # The minimum, with a resync period just short of a third of it.
    cfg = OperatorConfig.from_env({**BASE, "TURSO_TOKEN_LIFETIME": "10m", "TURSO_RESYNC_SECONDS": "199"})
    assert (cfg.token_lifetime, cfg.resync_seconds) == (600.0, 199.0)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TURSO_TOKEN_LIFETIME": "soon"}, "TURSO_TOKEN_LIFETIME: invalid duration"),
        ({"TURSO_TOKEN_LIFETIME": "-1h"}, "TURSO_TOKEN_LIFETIME: invalid duration"),
        ({"TURSO_TOKEN_LIFETIME": "9m59s"}, "at least 10m"),
        ({"TURSO_TOKEN_LIFETIME": "30"}, "at least 10m"),
        # Renewal is the drift loop's: it must look at least once within a token's last third.
        ({"TURSO_TOKEN_LIFETIME": "10m", "TURSO_RESYNC_SECONDS": "200"}, "shorter than a third"),
        ({"TURSO_TOKEN_LIFETIME": "1h", "TURSO_RESYNC_SECONDS": "1h"}, "shorter than a third"),
        # turso-server signs no expiry in the year 10000 or later: refused at startup, not per mint.
        ({"TURSO_TOKEN_LIFETIME": "3000000d"}, "TURSO_TOKEN_LIFETIME must be at most 36500d"),
        ({"TURSO_TOKEN_LIFETIME": "36500d1ms"}, "TURSO_TOKEN_LIFETIME must be at most 36500d"),
    ],
)
def test_a_token_lifetime_out_of_the_kubelet_resync_or_turso_server_bounds_is_refused(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(OperatorConfigError, match=message):
        OperatorConfig.from_env({**BASE, **env})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TursoServer]:
    with TursoServer(tmp_path_factory.mktemp("lifetime") / "data") as running:
        yield running


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("1h0.01ms", "1h0.00001s"),  # was "1h1e-05s": turso-server refused every mint
        ("3600.123456789", "1h0.123456789s"),  # was rounded to 1h0.123457s
        ("1d12h", "1d12h"),
        ("1h1m30s500ms", "1h1m30.5s"),
        ("36500d", "36500d"),  # the upper bound
    ],
)
async def test_every_token_lifetime_the_operator_accepts_is_an_expires_in_turso_server_accepts(
    server: TursoServer, given: str, sent: str
) -> None:
    lifetime = OperatorConfig.from_env({**BASE, "TURSO_TOKEN_LIFETIME": given}).token_lifetime
    assert format_duration(lifetime) == sent
    assert duration_seconds(sent) == lifetime  # exact: the same seconds come back
    before = datetime.datetime.now(datetime.UTC)
    async with AdminClient(server.admin_url, server.admin_token) as admin:
        minted = await admin.mint_scope(["lifetime-check"], "rw", expires_in=sent)
    assert minted is not None and minted.expires_at is not None
    expires_at = datetime.datetime.fromisoformat(minted.expires_at.replace("Z", "+00:00"))
    assert abs((expires_at - before).total_seconds() - lifetime) < 60
