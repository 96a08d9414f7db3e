"""The plugin host: discovery, ordering, lifecycle and the turso plugin as a provider.

Plugins are real modules written into a temp dir and imported by the host; the turso plugin
opens a real local database.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
from pathlib import Path

import pytest

from buntime._settings import SETTINGS_BY_ENV
from buntime.plugins import (
    BUILTIN_DIR,
    LoadedPlugin,
    ManifestError,
    PluginHost,
    discover,
    load_manifest,
    order_plugins,
)
from buntime.plugins.turso import TURSO_PLUGIN_NAME
from buntime.turso import TursoConfigError, TursoService, resolve_config
from buntime.turso._config import EXECUTORS

CONSUMER = """
from buntime.plugins import Plugin

EVENTS = []

class Consumer(Plugin):
    def __init__(self, options):
        self.options = options
        self.turso = None

    async def on_init(self, ctx):
        self.turso = ctx.get_plugin("@buntime/plugin-turso")
        await self.turso.transaction(
            lambda db: db.exec("CREATE TABLE IF NOT EXISTS consumer_rows(v TEXT)"),
            namespace="consumer", type="exclusive",
        )
        await self.turso.transaction(
            lambda db: db.run("INSERT INTO consumer_rows VALUES (?)", [self.options["greeting"]]),
            namespace="consumer",
        )
        EVENTS.append(("init", ctx.name))

    def provides(self):
        return self

    async def on_shutdown(self):
        EVENTS.append(("shutdown", "consumer"))

def create(options):
    return Consumer(options)
"""


def write_plugin(root: Path, dirname: str, manifest: str, module: str | None = None) -> None:
    plugin_dir = root / dirname
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "manifest.yaml").write_text(textwrap.dedent(manifest))
    if module is not None:
        (plugin_dir / f"{dirname.replace('-', '_').lstrip('@')}_mod.py").write_text(module)


async def test_consumer_gets_the_turso_service_through_get_plugin(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    write_plugin(
        plugins,
        "consumer",
        """
        name: "@acme/consumer"
        entry: consumer_mod:create
        base: /consumer
        dependencies: ["@buntime/plugin-turso"]
        greeting: hello
        """,
        CONSUMER,
    )
    env = {"BUNTIME_PLUGIN_DIRS": str(plugins), "TURSO_LOCAL_PATH": str(tmp_path / "db" / "runtime.db")}
    host = PluginHost.from_env(env)
    await host.start()
    try:
        assert host.ready
        names = [p.manifest.name for p in host.loaded]
        assert "@acme/consumer" in names
        assert names.index("@buntime/plugin-turso") < names.index("@acme/consumer")
        service = host.get_plugin("@buntime/plugin-turso")
        assert isinstance(service, TursoService)
        consumer = host.get_plugin("@acme/consumer")
        assert consumer.turso is service and consumer.options == {"greeting": "hello"}
        rows = await (await service.connect("consumer")).all("SELECT v FROM consumer_rows")
        assert rows == [{"v": "hello"}]
    finally:
        await host.stop()
    import consumer_mod  # type: ignore[import-not-found]

    assert consumer_mod.EVENTS == [("init", "@acme/consumer"), ("shutdown", "consumer")]
    assert host.loaded == []


async def test_missing_required_dependency_skips_dependents(tmp_path: Path) -> None:
    plugins = tmp_path / "p"
    write_plugin(plugins, "a", 'name: a\nentry: a_mod:create\ndependencies: ["ghost"]\n', "")
    write_plugin(plugins, "b", 'name: b\nentry: b_mod:create\ndependencies: ["a"]\n', "")
    host = PluginHost(discover([plugins]), env={})
    await host.start()
    assert host.loaded == []
    assert host.skipped["a"] == "missing required dependency ghost"
    assert "missing required dependency a" in host.skipped["b"]
    assert not host.ready


async def test_failed_init_skips_dependents_and_timeouts_count_as_failures(tmp_path: Path) -> None:
    plugins = tmp_path / "p"
    slow = (
        "import asyncio\nfrom buntime.plugins import Plugin\n"
        "class P(Plugin):\n    async def on_init(self, ctx):\n        await asyncio.sleep(10)\n"
        "def create(o):\n    return P()\n"
    )
    write_plugin(plugins, "slow", "name: slow\nentry: slow_mod:create\n", slow)
    write_plugin(
        plugins, "after", 'name: after\nentry: after_mod:create\ndependencies: ["slow"]\n', "create = None"
    )
    host = PluginHost(discover([plugins]), env={}, init_timeout=0.2)
    await host.start()
    assert "timed out" in host.failed["slow"]
    assert "required dependency failed" in host.skipped["after"]


def test_order_is_topological_with_optional_dependencies(tmp_path: Path) -> None:
    plugins = tmp_path / "p"
    write_plugin(plugins, "gw", 'name: gw\nentry: m:c\noptionalDependencies: ["db", "absent"]\n')
    write_plugin(plugins, "db", "name: db\nentry: m:c\n")
    write_plugin(plugins, "kv", 'name: kv\nentry: m:c\ndependencies: ["db"]\n')
    write_plugin(plugins, "off", 'name: "off"\nentry: m:c\nenabled: false\n')
    write_plugin(plugins, "x", 'name: x\nentry: m:c\ndependencies: ["y"]\n')
    write_plugin(plugins, "y", 'name: y\nentry: m:c\ndependencies: ["x"]\n')
    ordered, skipped = order_plugins(discover([plugins]))
    names = [m.name for m in ordered]
    assert names.index("db") < names.index("gw") and names.index("db") < names.index("kv")
    assert skipped == {"off": "disabled", "x": "dependency cycle", "y": "dependency cycle"}


def test_order_is_graphlib_topological_with_the_same_skip_reasons(tmp_path: Path) -> None:
    plugins = tmp_path / "p"
    specs = {
        "a": "",
        "b": 'dependencies: ["a"]',
        "c": 'optionalDependencies: ["b", "absent"]',  # an absent optional dependency is no edge
        "d": 'dependencies: ["c", "a"]',
        # Two disjoint cycles (graphlib reports one at a time) and what needs them.
        "x": 'dependencies: ["y"]',
        "y": 'dependencies: ["x"]',
        "p": 'dependencies: ["q"]',
        "q": 'optionalDependencies: ["p"]',
        "needs-x": 'optionalDependencies: ["x"]',
        "needs-needs-x": 'dependencies: ["needs-x"]',
        "m": 'dependencies: ["ghost"]',
        "needs-m": 'dependencies: ["m"]',
    }
    for name, deps in specs.items():
        write_plugin(plugins, name, f"name: {name}\nentry: m:c\n{deps}\n")
    ordered, skipped = order_plugins(discover([plugins]))
    assert [m.name for m in ordered] == ["a", "b", "c", "d"]
    cycle = "dependency cycle"
    assert skipped == {
        "m": "missing required dependency ghost",
        "needs-m": "missing required dependency m",
        **{name: cycle for name in ("x", "y", "p", "q", "needs-x", "needs-needs-x")},
    }


def test_the_builtin_plugins_load_turso_first() -> None:
    ordered, skipped = order_plugins(discover([BUILTIN_DIR]))
    names = [m.name for m in ordered]
    assert names[0] == "@buntime/plugin-turso" and skipped == {}
    assert names[1:] == sorted(names[1:])  # ready together: discovery (directory) order


def test_a_broken_manifest_fails_readiness_but_not_the_host(tmp_path: Path) -> None:
    plugins = tmp_path / "p"
    write_plugin(plugins, "broken", "entry: m:c\n")
    host = PluginHost.from_env({"BUNTIME_PLUGIN_DIRS": str(plugins)})
    assert "@buntime/plugin-turso" in [m.name for m in host.manifests]
    assert not any(str(plugins) in str(m.path) for m in host.manifests)
    assert not host.ready and "'name' is required" in next(iter(host.failed.values()))


def test_scoped_directories_and_duplicates(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    write_plugin(first, "@acme/thing", "name: thing\nentry: m:c\nversion: '1'\n")
    write_plugin(second, "thing", "name: thing\nentry: m:c\nversion: '2'\n")
    found = discover([first, second])
    assert [(m.name, m.version) for m in found] == [("thing", "1"), ("thing", "2")]
    ordered, _ = order_plugins(found)
    assert [(m.name, m.version) for m in ordered] == [("thing", "1")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("entry: m:c\n", "'name' is required"),
        ("name: x\n", "'entry'"),
        ("name: x\nentry: nocolon\n", "'entry'"),
        ("name: x\nentry: m:c\nbase: no-slash\n", "'base'"),
        ('name: x\nentry: m:c\nbase: "/app\\n"\n', "'base'"),  # not mounted as /app%0A
        ('name: x\nentry: "m:c\\n"\n', "'entry'"),
        ("name: x\nentry: m:c\nbase: /api\n", "reserved"),
        ("name: x\nentry: m:c\ndependencies: a\n", "dependencies"),
        ("- not a mapping\n", "mapping"),
        ("name: [unclosed\n", "cannot read"),
    ],
)
def test_bad_manifests_are_clear_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(body)
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(path)
    assert str(path) in str(info.value)


def test_the_turso_manifest_declares_its_config_schema() -> None:
    host = PluginHost.from_env({})
    turso = next(m for m in host.manifests if m.name == "@buntime/plugin-turso")
    schema = {setting.dotted: setting for setting in turso.settings}
    assert {"mode", "localPath", "sync.url", "sync.authToken"} <= set(schema)
    assert schema["mode"].env == "TURSO_MODE" and schema["mode"].values == ("local", "sync")
    assert schema["sync.authToken"].type == "password" and schema["sync.authToken"].secret is True
    assert schema["syncInterval"].type == "duration"
    for field in schema.values():
        assert field.env and field.label


def flaky_plugin(failures: int, methods: str = "") -> str:
    """A plugin module whose ``on_init`` raises ``ConnectionError`` ``failures`` times (counted
    in ``EVENTS``), then starts; ``methods`` are more methods of its class."""
    return (
        "from buntime.plugins import Plugin\nEVENTS = []\n"
        "class P(Plugin):\n"
        "    async def on_init(self, ctx):\n"
        "        EVENTS.append('init')\n"
        f"        if EVENTS.count('init') <= {failures}:\n            raise ConnectionError('down')\n"
        f"{methods}"
        "def create(o):\n    return P()\n"
    )


async def test_recover_retries_failed_inits_and_their_dependents_but_not_load_errors(tmp_path: Path) -> None:
    plugins = tmp_path / "p"
    flaky = flaky_plugin(
        2,
        "    async def on_shutdown(self):\n        EVENTS.append('shutdown')\n"
        "    def provides(self):\n        return 'up'\n",
    )
    write_plugin(plugins, "flaky", "name: flaky\nentry: flaky_mod:create\n", flaky)
    user = (
        "from buntime.plugins import Plugin\n"
        "class P(Plugin):\n    async def on_init(self, ctx):\n        self.dep = ctx.get_plugin('flaky')\n"
        "    def provides(self):\n        return self.dep\n"
        "def create(o):\n    return P()\n"
    )
    write_plugin(plugins, "user", 'name: user\nentry: user_mod:create\ndependencies: ["flaky"]\n', user)
    write_plugin(plugins, "gone", "name: gone\nentry: no_such_mod:create\n")
    host = PluginHost(discover([plugins]), env={}, retry_initial=0.01, retry_max=0.02)
    await host.start()
    assert set(host.retrying) == {"flaky", "user"}  # "gone" cannot be imported: never retried
    started: list[str] = []

    async def on_started(loaded: LoadedPlugin) -> None:
        started.append(loaded.manifest.name)

    await asyncio.wait_for(host.recover(on_started), 5)
    assert started == ["flaky", "user"]
    assert host.get_plugin("user") == "up"
    assert set(host.failed) == {"gone"} and host.skipped == {} and host.retrying == {}
    import flaky_mod  # type: ignore[import-not-found]

    # every failed instance was shut down before the next try opened its resources again
    assert flaky_mod.EVENTS == ["init", "shutdown", "init", "shutdown", "init"]
    await host.stop()


async def test_recover_gives_up_on_a_bad_setting_or_entry_met_late_and_on_their_dependents(
    tmp_path: Path,
) -> None:
    """Plugins first skipped only because ``flaky`` failed: once it is up, one has an invalid
    setting and one an entry that cannot load. Neither is retried, nor what needs them."""
    plugins = tmp_path / "p"
    flaky = flaky_plugin(1)
    write_plugin(plugins, "flaky-late", "name: flaky\nentry: flaky_late_mod:create\n", flaky)
    fine = "from buntime.plugins import Plugin\nclass P(Plugin):\n    pass\ndef create(o):\n    return P()\n"
    setting = "config:\n  n:\n    type: int\n    default: 1\n    env: BADSET_N\n    label: N\n"
    write_plugin(
        plugins, "badset", f"name: badset\nentry: badset_mod:create\ndependencies: [flaky]\n{setting}", fine
    )
    write_plugin(plugins, "noentry", "name: noentry\nentry: no_such_late_mod:create\ndependencies: [flaky]\n")
    write_plugin(plugins, "above", "name: above\nentry: above_mod:create\ndependencies: [badset]\n", fine)
    host = PluginHost(discover([plugins]), env={"BADSET_N": "many"}, retry_initial=0.01, retry_max=0.02)
    await host.start()
    assert set(host.retrying) == {"flaky", "badset", "noentry", "above"}
    started: list[str] = []

    async def on_started(loaded: LoadedPlugin) -> None:
        started.append(loaded.manifest.name)

    await asyncio.wait_for(host.recover(on_started), 5)  # returns: nothing left to retry
    assert started == ["flaky"] and host.retrying == {}
    assert set(host.failed) == {"badset", "noentry"}
    assert "BADSET_N must be a whole number" in host.failed["badset"]
    assert "cannot load entry" in host.failed["noentry"]
    assert host.skipped == {"above": "required dependency failed: badset"}
    assert not host.ready
    await host.stop()


def _refusal(env: dict[str, str]) -> str | None:
    """``resolve_config``'s answer (what ``buntime turso health`` starts from): the code, or None."""
    try:
        resolve_config(env=env)
    except TursoConfigError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    "settings",
    [
        {"TURSO_MODE": "SYNC", "TURSO_SYNC_URL": "http://127.0.0.1:9"},  # serve refused it, health took it
        {"TURSO_EXECUTOR": "Thread"},
        {"TURSO_SYNC_URL": "turso-server:8080"},  # health took it, then sent the token to localhost:80
        {"TURSO_SERVER_URL": "turso-server:8080"},
        {"TURSO_SYNC_URL": "http://h:99999"},
        {"TURSO_SYNC_URL": "libsql://127.0.0.1:9"},
        {"TURSO_SYNC_URL": "http://user:pw@127.0.0.1:9"},  # the chart's pattern took it, unused
        {"TURSO_SYNC_URL": "http://127.0.0.1:9/?token=x"},
        {"TURSO_SYNC_INTERVAL": "1ms"},
        {"TURSO_MODE": "sync", "TURSO_SYNC_URL": "http://127.0.0.1:9"},
        {"TURSO_EXECUTOR": "inline"},
    ],
)
async def test_serve_and_turso_health_accept_and_refuse_the_same_turso_settings(
    tmp_path: Path, settings: dict[str, str]
) -> None:
    env = {"TURSO_LOCAL_PATH": str(tmp_path / "rt.db"), **settings}
    refused = _refusal(env)
    turso = [m for m in discover([BUILTIN_DIR]) if m.name == TURSO_PLUGIN_NAME]
    host = PluginHost(turso, env=env)
    await host.start()
    try:
        # A config error fails the plugin for good; anything else started it or left it retrying
        # (nothing listens on port 9, so a sync setting the config accepts is retried, not refused).
        served_refused = TURSO_PLUGIN_NAME in host.failed and TURSO_PLUGIN_NAME not in host.retrying
        assert served_refused == (refused is not None), (host.failed, refused)
        if refused is not None:
            assert any(name in host.failed[TURSO_PLUGIN_NAME] for name in settings), host.failed
    finally:
        await host.stop()


def test_the_turso_manifest_lists_the_choices_resolve_config_takes() -> None:
    (turso,) = [m for m in discover([BUILTIN_DIR]) if m.name == TURSO_PLUGIN_NAME]
    fields = {setting.env: setting for setting in turso.settings}
    assert fields["TURSO_MODE"].values == ("local", "sync")
    assert fields["TURSO_EXECUTOR"].values == EXECUTORS
    for setting in turso.settings:  # every variable of the chart's table is one resolve_config reads
        assert setting.env in SETTINGS_BY_ENV and SETTINGS_BY_ENV[setting.env].group == "turso"


@pytest.mark.parametrize(
    "url",
    ["turso-server:8080", "ftp://h", "http:/h", "http://", "http://u:pw@h", "http://h/?t=x", "http://h/#x"],
)
def test_the_chart_pattern_of_the_sync_url_refuses_what_resolve_config_refuses(url: str) -> None:
    (turso,) = [m for m in discover([BUILTIN_DIR]) if m.name == TURSO_PLUGIN_NAME]
    (field,) = [setting for setting in turso.settings if setting.env == "TURSO_SYNC_URL"]
    with pytest.raises(TursoConfigError):
        resolve_config(env={"TURSO_SYNC_URL": url})
    assert not re.search(field.pattern, url), (field.pattern, url)


def test_the_chart_pattern_of_the_sync_url_takes_the_scheme_in_lower_case_only() -> None:
    """Stricter than resolve_config, which reads a scheme in any case (RFC 3986) and sends it in
    lower case: the chart renders what it is given, so it asks for the spelling that is sent."""
    (turso,) = [m for m in discover([BUILTIN_DIR]) if m.name == TURSO_PLUGIN_NAME]
    (field,) = [setting for setting in turso.settings if setting.env == "TURSO_SYNC_URL"]
    assert resolve_config(env={"TURSO_SYNC_URL": "HTTP://h"}).sync_url == "http://h"
    assert not re.search(field.pattern, "HTTP://h") and re.search(field.pattern, "http://h")
