"""Plugin values in the chart mean what they mean in the runtime, and proxy rules are a real list.

Feeds in: ``--set`` values and values files for ``plugins.*``, rendered by the pinned helm.
Checks: for each value, ``helm template`` (``values.schema.json``) and the runtime's resolver
(the manifests' settings table) agree — what renders is what the runtime then reads, and what the
runtime refuses helm refuses; ``plugins.proxy.rules`` is a list of rule objects whose fields the
schema checks, rendered as the JSON array ``PROXY_RULES`` that a real ``buntime serve`` started
with the rendered environment serves.
Leaves unmocked: helm, the schema, the runtime's resolver and the runtime server.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from buntime.plugins import BUILTIN_DIR, PluginConfigError, discover, resolve_settings
from buntime.plugins.proxy import resolve_proxy_config
from buntime.turso import TursoConfigError, resolve_config
from tests.chart.rendering import (
    CHART,
    RELEASE,
    VALUE_SETS,
    EnvSources,
    HelmError,
    container_env,
    helm,
    one,
    render,
)
from tests.server.support import RuntimeProcess, http

SETTINGS = {s.env: (m, s) for m in discover([BUILTIN_DIR]) for s in m.settings}


def runtime_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The runtime container's environment; Secrets the operator mints at run time get a stand-in."""
    containers = one(docs, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"]
    container = next(c for c in containers if c["name"] == "runtime")
    sources = EnvSources(docs)
    for entry in container.get("env") or []:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            sources.secrets.setdefault(ref["name"], {}).setdefault(ref["key"], "minted-by-the-operator")
    return container_env(container, sources, field_refs=defaultdict(lambda: "from-the-downward-api"))


def runtime_accepts(env_name: str, text: str) -> bool:
    """The host's settings table accepts it, and for a TURSO_* variable the turso plugin's own
    parser (``resolve_config``, which the plugin runs at start) too."""
    manifest, _ = SETTINGS[env_name]
    try:
        resolve_settings(manifest.settings, manifest.options, {env_name: text})
        if env_name.startswith("TURSO_"):
            resolve_config(manifest.options, {env_name: text})
    except (PluginConfigError, TursoConfigError):
        return False
    return True


@pytest.mark.parametrize(
    ("value", "env_name", "text"),
    [
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "1h"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "1d12h"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "0"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "soon"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "5us"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "50ms"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "0.05"),
        ("plugins.turso.syncInterval", "TURSO_SYNC_INTERVAL", "100ms"),
        ("plugins.keyval.queue.lockDuration", "KEYVAL_QUEUE_LOCK_DURATION", "0s"),
        ("plugins.keyval.queue.lockDuration", "KEYVAL_QUEUE_LOCK_DURATION", "0"),
        ("plugins.keyval.queue.lockDuration", "KEYVAL_QUEUE_LOCK_DURATION", "500ms"),
        ("plugins.keyval.sweepInterval", "KEYVAL_SWEEP_INTERVAL", "0"),
        ("plugins.gateway.sseInterval", "GATEWAY_SSE_INTERVAL", "0ms"),
        ("plugins.gateway.rateLimit.window", "GATEWAY_RATE_LIMIT_WINDOW", "30s"),
        ("plugins.gateway.metricsRetention", "GATEWAY_METRICS_RETENTION", "0"),
        ("plugins.gateway.metricsRetention", "GATEWAY_METRICS_RETENTION", "1"),
        ("plugins.gateway.rateLimit.requests", "GATEWAY_RATE_LIMIT_REQUESTS", "-1"),
        ("plugins.gateway.rateLimit.keyBy", "GATEWAY_RATE_LIMIT_KEY_BY", "user"),
        ("plugins.gateway.rateLimit.keyBy", "GATEWAY_RATE_LIMIT_KEY_BY", "cookie"),
        ("plugins.gateway.cors.credentials", "GATEWAY_CORS_CREDENTIALS", "true"),
        ("plugins.proxy.timeout", "PROXY_TIMEOUT", "2m"),
        ("plugins.proxy.timeout", "PROXY_TIMEOUT", "0"),
        ("plugins.turso.executor", "TURSO_EXECUTOR", "fibre"),
        ("plugins.turso.writeMode", "TURSO_WRITE_MODE", "offline"),
        ("plugins.turso.writeMode", "TURSO_WRITE_MODE", "OFFLINE"),
        ("plugins.turso.leaseTtl", "TURSO_LEASE_TTL", "30s"),
        ("plugins.turso.leaseTtl", "TURSO_LEASE_TTL", "61"),
        ("plugins.turso.writeTimeout", "TURSO_WRITE_TIMEOUT", "1m"),
        ("plugins.turso.writeTimeout", "TURSO_WRITE_TIMEOUT", "0"),
    ],
)
def test_helm_and_the_runtime_agree_on_each_plugin_value(value: str, env_name: str, text: str) -> None:
    runtime = runtime_accepts(env_name, text)
    try:
        docs = render({value: text})
    except HelmError as exc:
        assert not runtime, f"helm refused {value}={text} which the runtime accepts:\n{exc}"
        assert value.replace(".", "/") in str(exc)  # the schema error names the value
        return
    assert runtime, f"helm rendered {value}={text} which the runtime refuses"
    rendered = runtime_env(docs)[env_name]
    assert runtime_accepts(env_name, rendered), rendered  # what the pod gets, the runtime reads


def test_the_documented_plain_tursodb_recipe_serves_and_writes(tmp_path: Path, plain_tursodb: Any) -> None:
    """docs/chart.md's single-tenant recipe for a plain ``tursodb --sync-server``: writeMode=offline
    renders ``TURSO_WRITE_MODE``, and the runtime started with the rendered environment is ready
    and writes (serializable, the default, would need turso-server's write lease)."""
    docs = render({"plugins.turso.sync.url": plain_tursodb.url, "plugins.turso.writeMode": "offline"})
    env = runtime_env(docs)
    assert (env["TURSO_MODE"], env["TURSO_WRITE_MODE"]) == ("sync", "offline")
    env.update(TURSO_LOCAL_PATH=str(tmp_path / "data" / "runtime.db"))
    env = {k: v for k, v in env.items() if not k.startswith(("BUNTIME_HOST", "BUNTIME_PORT", "RUNTIME_"))}
    runtime = RuntimeProcess(env, tmp_path / "runtime.log").start()
    try:
        url = f"{runtime.url}/keyval/api/keys/demo/greeting"
        assert http("PUT", url, {"hello": "world"})[0] in (200, 201, 204), runtime.log()
        status, body = http("GET", url)
        assert status == 200 and "world" in json.dumps(body), body
    finally:
        assert runtime.stop() == 0


RULES = [
    {"name": "backend", "pattern": "^/backend/(.*)", "target": "http://127.0.0.1:9/", "rewrite": "/$1"},
    {
        "pattern": "^/old-docs/(.*)",
        "target": "https://docs.example.com",
        "rewrite": "/$1",
        "redirect": 301,
        "ws": False,
        "secure": True,
        "changeOrigin": True,
        "headers": {"X-From": "buntime"},
        "base": "/docs/",
        "relativePaths": False,
        "publicRoutes": {"GET": ["/old-docs/**"]},
        "enabled": True,
    },
    {"pattern": "^/public/", "target": "http://127.0.0.1:9", "publicRoutes": ["/public/**"]},
]


def values_file(tmp_path: Path, rules: Any) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"plugins": {"proxy": {"rules": rules}}}))
    return str(path)


def test_proxy_rules_are_a_list_rendered_as_the_json_the_runtime_reads(tmp_path: Path) -> None:
    docs = render(extra=["-f", values_file(tmp_path, RULES)])
    env = runtime_env(docs)
    assert json.loads(env["PROXY_RULES"]) == RULES
    config = resolve_proxy_config({}, {"PROXY_RULES": env["PROXY_RULES"]})
    assert [r.pattern for r in config.static_rules] == [r["pattern"] for r in RULES]
    assert config.static_rules[1].redirect == 301 and config.static_rules[1].public_routes == {
        "GET": ("/old-docs/**",)
    }
    # The default is an empty list, and an empty list renders nothing (the manifest's rules apply).
    assert "PROXY_RULES" not in runtime_env(render())


def test_the_rendered_rules_run_in_a_real_runtime(tmp_path: Path) -> None:
    env = runtime_env(render(extra=["-f", values_file(tmp_path, RULES)]))
    env.update(TURSO_LOCAL_PATH=str(tmp_path / "data" / "runtime.db"))
    env = {k: v for k, v in env.items() if not k.startswith(("BUNTIME_HOST", "BUNTIME_PORT", "RUNTIME_"))}
    runtime = RuntimeProcess(env, tmp_path / "runtime.log").start()
    try:
        # The chart generated both admin keys: without them the admin APIs are closed.
        for path, key in (
            ("/redirects/admin/rules", "PROXY_API_KEY"),
            ("/gateway/admin/shell/excludes", "GATEWAY_API_KEY"),
        ):
            status, refused = http("GET", f"{runtime.url}{path}")
            assert status == 401 and refused["code"].endswith("_UNAUTHORIZED"), (path, refused)
            assert http("GET", f"{runtime.url}{path}", headers={"X-API-Key": env[key]})[0] == 200, path
        status, rules = http(
            "GET", f"{runtime.url}/redirects/admin/rules", headers={"X-API-Key": env["PROXY_API_KEY"]}
        )
        assert status == 200
        assert rules[1]["headers"] == {"X-From": "[redacted]"}
        static = [r for r in rules if r["readOnly"]]
        assert [r["pattern"] for r in static] == [r["pattern"] for r in RULES]

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(f"{runtime.url}/old-docs/intro", timeout=5)
            raise AssertionError("expected a redirect")
        except urllib.error.HTTPError as exc:
            assert exc.code == 301 and exc.headers["Location"] == "https://docs.example.com/intro"
    finally:
        assert runtime.stop() == 0


@pytest.mark.parametrize(
    ("rules", "where"),
    [
        ([{"pattern": "^/a"}], "target"),
        ([{"target": "http://a"}], "pattern"),
        ([{"patern": "^/a", "pattern": "^/a", "target": "http://a"}], "patern"),
        ([{"pattern": "^/a", "target": "ftp://a"}], "target"),
        ([{"pattern": "^/a", "target": "http://user:s3cret@a"}], "target"),  # credentials go in headers
        ([{"pattern": "^/a", "target": "http://token@a/x"}], "target"),
        ([{"pattern": "^/a", "target": "http://a", "redirect": 305}], "redirect"),
        ([{"pattern": "^/a", "target": "http://a", "ws": "yes"}], "ws"),
        ([{"pattern": "^/a", "target": "http://a", "base": "docs"}], "base"),
        ([{"pattern": "^/a", "target": "http://a", "publicRoutes": ["docs/**"]}], "publicRoutes"),
        ([{"pattern": "^/a", "target": "http://a", "headers": {"X": 1}}], "headers"),
        ('[{"pattern": "^/a", "target": "http://a"}]', "rules"),  # JSON in a string is gone
    ],
)
def test_the_schema_checks_each_rule_field(tmp_path: Path, rules: Any, where: str) -> None:
    with pytest.raises(HelmError, match="values don't meet") as info:
        render(extra=["-f", values_file(tmp_path, rules)])
    assert "/plugins/proxy/rules" in str(info.value) and where in str(info.value)
    # ... and the runtime refuses the same rules from PROXY_RULES, naming the variable.
    text = rules if isinstance(rules, str) else json.dumps(rules)
    with pytest.raises(PluginConfigError, match=r"^PROXY_RULES") as refused:
        resolve_proxy_config({}, {"PROXY_RULES": text} if not isinstance(rules, str) else {})
        resolve_proxy_config({"rules": rules}, {})  # a string where the list goes
    assert refused.value.code.startswith("INVALID_PROXY_RULES")


def test_set_on_a_rule_field_works_too() -> None:
    docs = render(
        extra=[
            "--set", "plugins.proxy.rules[0].pattern=^/x/",
            "--set", "plugins.proxy.rules[0].target=http://x:8080",
            "--set", "plugins.proxy.rules[0].redirect=302",
        ]
    )  # fmt: skip
    assert json.loads(runtime_env(docs)["PROXY_RULES"]) == [
        {"pattern": "^/x/", "target": "http://x:8080", "redirect": 302}
    ]
    assert (CHART / "values.schema.json").is_file()
    assert helm("lint", str(CHART), check=False)  # the chart still lints with a list default


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_value_set_renders_an_environment_the_runtime_accepts(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    # The runtime refuses TURSO_MODE=local next to a server or sync URL (TURSO_MODE_CONFLICT),
    # so the chart must never render that pair, and every plugin setting must resolve.
    env = runtime_env(rendered[name])
    config = resolve_config(env=env)
    assert config.topology == {"turso-server": "multi-tenant", "webhook-off": "multi-tenant"}.get(
        name, {"single-tenant-sync": "single-tenant", "everything": "multi-tenant"}.get(name, "local")
    )
    if config.topology == "multi-tenant":
        assert "TURSO_MODE" not in env
    for manifest in discover([BUILTIN_DIR]):
        resolve_settings(manifest.settings, manifest.options, env)
