"""The plugin around the store: manifest, dependency on turso, settings, provides/routes/shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest

from buntime.plugins import BUILTIN_DIR, PluginConfigError, PluginContext, PluginHost, discover, load_manifest
from buntime.plugins.keyval import (
    KEYVAL_PLUGIN_NAME,
    KeyValConfigError,
    KeyValPlugin,
    Kv,
    resolve_settings,
)
from buntime.plugins.keyval._config import (
    ENV_QUEUE_CLEANUP_INTERVAL,
    ENV_QUEUE_LOCK_DURATION,
    ENV_SWEEP_INTERVAL,
)

MANIFEST = BUILTIN_DIR / "keyval" / "manifest.yaml"


def test_manifest_is_discovered_and_declares_its_settings() -> None:
    manifest = load_manifest(MANIFEST)
    assert manifest.name == KEYVAL_PLUGIN_NAME
    assert manifest.base == "/keyval"
    assert manifest.dependencies == ("@buntime/plugin-turso",)
    assert manifest.entry == "buntime.plugins.keyval:create"
    assert any(m.name == KEYVAL_PLUGIN_NAME for m in discover([BUILTIN_DIR]))
    envs = {field.env for field in manifest.settings}
    assert {ENV_SWEEP_INTERVAL, ENV_QUEUE_LOCK_DURATION, ENV_QUEUE_CLEANUP_INTERVAL} <= envs
    for field in manifest.settings:
        assert field.type in ("duration", "bool") and field.label and field.description


def test_settings_env_wins_over_options() -> None:
    options = load_manifest(MANIFEST).options
    defaults = resolve_settings(options, {})
    assert (defaults.sweep_interval, defaults.queue_lock_duration, defaults.queue_cleanup_interval) == (
        60,
        30,
        60,
    )
    tuned = resolve_settings(options, {ENV_SWEEP_INTERVAL: "500ms", ENV_QUEUE_LOCK_DURATION: "2m"})
    assert (tuned.sweep_interval, tuned.queue_lock_duration) == (0.5, 120)
    with pytest.raises(PluginConfigError, match=f"^{ENV_SWEEP_INTERVAL}: invalid duration 'soon'") as bad:
        resolve_settings(options, {ENV_SWEEP_INTERVAL: "soon"})
    assert bad.value.code == f"INVALID_{ENV_SWEEP_INTERVAL}"
    with pytest.raises(PluginConfigError, match=f"^{ENV_QUEUE_LOCK_DURATION} must be more than 0s") as zero:
        resolve_settings(options, {ENV_QUEUE_LOCK_DURATION: "0"})
    assert zero.value.code == f"INVALID_{ENV_QUEUE_LOCK_DURATION}"


async def test_requires_the_turso_plugin(tmp_path: Path) -> None:

    plugin = KeyValPlugin({})
    ctx = PluginContext(
        name=KEYVAL_PLUGIN_NAME,
        config={},
        logger=__import__("logging").getLogger("t"),
        get_plugin=lambda _: None,
    )
    with pytest.raises(KeyValConfigError) as info:
        await plugin.on_init(ctx)
    assert info.value.code == "MISSING_TURSO_SERVICE"
    assert plugin.routes() is None and plugin.provides() is None
    host = PluginHost([load_manifest(MANIFEST)], env={"TURSO_LOCAL_PATH": str(tmp_path / "x.db")})
    await host.start()
    assert KEYVAL_PLUGIN_NAME in host.skipped and not host.ready
    await host.stop()


async def test_lifecycle(host: PluginHost, kv: Kv) -> None:
    plugin = next(p.plugin for p in host.loaded if p.manifest.name == KEYVAL_PLUGIN_NAME)
    assert isinstance(plugin, KeyValPlugin) and plugin.provides() is kv
    assert plugin.routes() is not plugin.routes()  # a fresh sub-app per mount
    states = [kv.state]
    await host.stop()
    states.append(kv.state)
    assert states == ["opened", "closed"]
