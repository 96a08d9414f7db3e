"""``resolve_gateway_config``: env over manifest options, and clear errors."""

from __future__ import annotations

import pytest

from buntime.plugins import PluginConfigError
from buntime.plugins.gateway import GatewayConfigError, resolve_gateway_config


def test_env_wins_over_options() -> None:
    config = resolve_gateway_config(
        {"shellExcludes": "cpanel", "metricsRetention": 3600},
        {"GATEWAY_SHELL_EXCLUDES": "b,a,a", "GATEWAY_METRICS_RETENTION": "10", "GATEWAY_API_KEY": " k "},
    )
    assert (config.env_excludes, config.metrics_retention, config.api_key) == (("a", "b"), 10, "k")


def test_options_apply_without_env_and_a_list_is_accepted() -> None:
    config = resolve_gateway_config({"shellExcludes": ["x", "y"], "metricsRetention": 5}, {})
    assert (config.env_excludes, config.metrics_retention, config.api_key) == (("x", "y"), 5, None)


def test_the_api_key_never_reaches_repr() -> None:
    assert "hunter2" not in repr(resolve_gateway_config({}, {"GATEWAY_API_KEY": "hunter2"}))


@pytest.mark.parametrize("retention", ["0", "-3", "many"])
def test_bad_retention_is_refused(retention: str) -> None:
    with pytest.raises(PluginConfigError, match=r"^GATEWAY_METRICS_RETENTION") as info:
        resolve_gateway_config({}, {"GATEWAY_METRICS_RETENTION": retention})
    assert info.value.code == "INVALID_GATEWAY_METRICS_RETENTION"


def test_bad_env_basenames_are_refused() -> None:
    with pytest.raises(GatewayConfigError, match=r"^GATEWAY_SHELL_EXCLUDES: invalid basename.*bad name"):
        resolve_gateway_config({}, {"GATEWAY_SHELL_EXCLUDES": "ok,bad name"})


@pytest.mark.parametrize("option", ["methods", "allowedHeaders", "exposedHeaders"])
def test_a_cors_seed_header_that_is_not_a_token_is_refused(option: str) -> None:
    with pytest.raises(GatewayConfigError, match=rf"cors.{option}: 'X-A\\x01' is not an HTTP token") as info:
        resolve_gateway_config({"cors": {option: ["X-A\x01"]}}, {"GATEWAY_CORS_ORIGIN": "https://a.example"})
    assert info.value.code == "INVALID_GATEWAY_CORS_HEADER"
