"""The settings table (``buntime.plugins._settings``): one parser and resolver for every plugin.

Feeds in: config blocks (the built-in manifests and small ones written here) and environments.
Checks: env over option over default, typed values in the one duration grammar, bounds and enums,
every rejection one line starting with the variable and coded ``INVALID_<VAR>``, and that the JSON
schema the chart gets from a field accepts exactly what the runtime accepts (checked with
``jsonschema`` here, with helm itself in ``tests/chart/test_values.py``). The host is real too: a
bad setting fails its plugin before ``on_init``, once, without retries.
Leaves unmocked: the manifests on disk, the duration parser, the host.
"""

from __future__ import annotations

import asyncio
import random
import re
import sys
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from buntime.plugins import (
    BUILTIN_DIR,
    ManifestError,
    PluginConfigError,
    PluginHost,
    Setting,
    discover,
    load_manifest,
    parse_settings,
    resolve_settings,
)
from buntime.plugins._settings import below_duration_pattern

BLOCK = {
    "name": {"type": "string", "default": "anon", "env": "T_NAME", "label": "Name"},
    "url": {"type": "string", "default": "", "env": "T_URL", "label": "URL", "pattern": "^(https?://\\S+)?$"},
    "mode": {"type": "enum", "values": ["a", "b"], "default": "a", "env": "T_MODE", "label": "Mode"},
    "count": {"type": "int", "default": 3, "env": "T_COUNT", "label": "Count", "minimum": 1, "maximum": 10},
    "flag": {"type": "bool", "default": False, "env": "T_FLAG", "label": "Flag"},
    "every": {"type": "duration", "default": "5s", "env": "T_EVERY", "label": "Every"},
    "lease.ttl": {
        "type": "duration",
        "default": "30s",
        "env": "T_LEASE_TTL",
        "label": "Lease",
        "exclusiveMinimum": 0,
        "maximum": 3600,
    },
    "rules": {"type": "list", "default": [], "env": "T_RULES", "label": "Rules", "items": {"type": "object"}},
}
SETTINGS = parse_settings(BLOCK, "test")
BY_NAME = {setting.dotted: setting for setting in SETTINGS}


def test_defaults_are_typed() -> None:
    resolved = resolve_settings(SETTINGS, {}, {})
    assert dict(resolved) == {
        "name": "anon",
        "url": "",
        "mode": "a",
        "count": 3,
        "flag": False,
        "every": 5.0,
        "lease.ttl": 30.0,
        "rules": [],
    }
    assert {resolved.source(key) for key in resolved} == {"default"}


def test_env_wins_over_options_which_win_over_defaults() -> None:
    options = {
        "name": "opt",
        "count": 4,
        "every": 60,
        "lease": {"ttl": "1m"},
        "rules": [{"x": 1}],
        "flag": True,
    }
    env = {"T_NAME": "  env  ", "T_EVERY": "1h30m", "T_COUNT": " ", "T_RULES": '[{"y": 2}]'}
    resolved = resolve_settings(SETTINGS, options, env)
    assert resolved["name"] == "env" and resolved.source("name") == "env"
    assert resolved["every"] == 5400.0 and resolved.text("every") == "1h30m"
    assert resolved["count"] == 4 and resolved.source("count") == "option"  # a blank variable does not count
    assert resolved["lease.ttl"] == 60.0 and resolved.text("lease.ttl") == "1m"
    assert resolved["rules"] == [{"y": 2}] and resolved["flag"] is True


def test_string_options_substitute_variables_and_lists_join_with_commas() -> None:
    resolved = resolve_settings(
        SETTINGS, {"name": "${WHO}-x", "url": "http://${HOST}/"}, {"WHO": "me", "HOST": "h"}
    )
    assert (resolved["name"], resolved["url"]) == ("me-x", "http://h/")
    assert resolve_settings(SETTINGS, {"name": ["a", "b"]}, {})["name"] == "a,b"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"T_EVERY": "soon"}, "T_EVERY: invalid duration 'soon'"),
        ({"T_EVERY": "-1s"}, "T_EVERY: invalid duration '-1s'"),
        ({"T_EVERY": "5us"}, "T_EVERY: invalid duration '5us'"),
        ({"T_LEASE_TTL": "0"}, "T_LEASE_TTL must be more than 0s (got '0')"),
        ({"T_LEASE_TTL": "0ms"}, "T_LEASE_TTL must be more than 0s"),
        ({"T_LEASE_TTL": "2h"}, "T_LEASE_TTL must be at most 3600s (got '2h')"),
        ({"T_COUNT": "0"}, "T_COUNT must be at least 1 (got '0')"),
        ({"T_COUNT": "11"}, "T_COUNT must be at most 10"),
        ({"T_COUNT": "2.5"}, "T_COUNT must be a whole number (got '2.5')"),
        ({"T_COUNT": "many"}, "T_COUNT must be a whole number"),
        ({"T_MODE": "c"}, "T_MODE must be one of a, b (got 'c')"),
        ({"T_MODE": "A"}, "T_MODE must be one of a, b (got 'A')"),  # exact, like the chart's enum
        ({"T_FLAG": "maybe"}, "T_FLAG must be true or false (got 'maybe')"),
        ({"T_URL": "ftp://x"}, "T_URL must match"),
        ({"T_RULES": "[{"}, "T_RULES must be a JSON array"),
        ({"T_RULES": '{"a": 1}'}, "T_RULES must be a list (got dict)"),
    ],
)
def test_each_rejection_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    variable = next(iter(env))
    with pytest.raises(PluginConfigError) as info:
        resolve_settings(SETTINGS, {}, env)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text
    assert info.value.code == f"INVALID_{variable}" and info.value.variable == variable


def test_a_bad_option_names_the_variable_and_the_option() -> None:
    with pytest.raises(PluginConfigError, match=r"^T_EVERY \(option every\): invalid duration 'soon'"):
        resolve_settings(SETTINGS, {"every": "soon"}, {})
    with pytest.raises(PluginConfigError, match=r"^T_LEASE_TTL: option lease must be a mapping") as info:
        resolve_settings(SETTINGS, {"lease": "30s"}, {})
    assert info.value.code == "INVALID_T_LEASE_TTL"
    with pytest.raises(PluginConfigError, match=r"^T_COUNT \(option count\) must be a whole number"):
        resolve_settings(SETTINGS, {"count": True}, {})


@pytest.mark.parametrize(
    ("field", "spec", "message"),
    [
        ("x", {"type": "seconds", "env": "X", "label": "X"}, "type must be one of"),
        ("x", {"type": "int", "env": "lower", "label": "X"}, "env must be an upper-case variable name"),
        ("x", {"type": "int", "env": "X"}, "label is required"),
        ("x", {"type": "int", "env": "X", "label": "X", "default": "3"}, "default must be an integer"),
        ("x", {"type": "duration", "env": "X", "label": "X", "default": "soon"}, "default: invalid duration"),
        ("x", {"type": "enum", "env": "X", "label": "X"}, "an enum needs a non-empty values list"),
        ("x", {"type": "enum", "env": "X", "label": "X", "values": ["a"], "default": "b"}, "is not valid"),
        ("x", {"type": "int", "env": "X", "label": "X", "default": 0, "minimum": 1}, "is not valid"),
        ("x", {"type": "int", "env": "X", "label": "X", "pattern": "^1"}, "pattern applies to string"),
        ("x", {"type": "string", "env": "X", "label": "X", "minimum": 1}, "applies to int and duration"),
        ("x", {"type": "string", "env": "X", "label": "X", "item": {}}, "unknown key(s) item"),
        ("x", {"type": "string", "env": "X", "label": "X", "items": {}}, "applies to list settings only"),
        ("a-b", {"type": "string", "env": "X", "label": "X"}, "each dotted part must be an identifier"),
        ("x", {"type": "string", "env": "X", "label": "X", "generate": True}, "applies to password settings"),
        ("x", {"type": "password", "env": "X", "label": "X", "generate": "yes"}, "generate (true or false)"),
    ],
)
def test_a_bad_config_block_is_an_error_naming_the_field(
    field: str, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=r"^m\.yaml: config\.") as info:
        parse_settings({field: spec}, "m.yaml")
    assert message in str(info.value)


def test_clashing_fields_are_refused() -> None:
    one = {"type": "string", "env": "A", "label": "A"}
    with pytest.raises(ValueError, match="clashes"):
        parse_settings({"a": one, "a.b": {**one, "env": "B"}}, "m.yaml")
    with pytest.raises(ValueError, match="share an environment variable"):
        parse_settings({"a": one, "b": one}, "m.yaml")


def test_a_manifest_with_a_bad_config_block_is_a_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "manifest.yaml"
    path.write_text(
        "name: x\nentry: x:create\nconfig:\n  every: {type: duration, env: X, label: X, default: 5x}\n"
    )
    with pytest.raises(ManifestError, match=r"config\.every: default: invalid duration '5x'") as info:
        load_manifest(path)
    assert info.value.code == "INVALID_MANIFEST"


# -- the chart's schema says what the runtime says ------------------------------------------------

SAMPLES: list[Any] = [
    *("0", "0s", "0.0ms", "5", "2.5", "5s", "500ms", "1h30m", "1d12h", "2h", "soon", "5us", "-1", " 5s", ""),
    *("50ms", "99.9ms", "100ms", "0.05", "0.09s", "0.1", "0.001m", "50ms50ms", "40ms40ms"),
    *(
        0,
        5,
        2.5,
        -1,
        1,
        11,
        3600,
        3601,
        True,
        "true",
        "false",
        "a",
        "b",
        "A",
        "http://x",
        "ftp://x",
        [],
        [{}],
        {},
    ),
]


def _runtime_accepts(setting: Setting, value: Any) -> bool:
    try:
        setting.parse(value, source="option")
    except PluginConfigError:
        return False
    return True


def _schema_accepts(setting: Setting, value: Any) -> bool:
    try:
        jsonschema.validate(value, setting.json_schema(), cls=jsonschema.Draft7Validator)
    except jsonschema.ValidationError:
        return False
    return True


def _every_setting() -> list[Setting]:
    builtin = [s for m in discover([BUILTIN_DIR]) for s in m.settings]
    return [*SETTINGS, *builtin]


@pytest.mark.parametrize("setting", _every_setting(), ids=lambda s: s.env)
def test_the_schema_accepts_exactly_what_the_runtime_accepts(setting: Setting) -> None:
    for value in SAMPLES:
        if value == "" or (isinstance(value, str) and value != value.strip()):
            continue  # blank is "unset" (the chart renders nothing); the chart never pads values
        if isinstance(value, str) and setting.type in ("int", "bool", "list"):
            continue  # the chart wants a YAML integer/boolean/list; the runtime reads the variable's text
        if not isinstance(value, str) and setting.type in ("string", "password", "enum"):
            continue  # the chart wants a string; the runtime reads any option as text
        if isinstance(value, list) and setting.type == "list":
            continue  # the items are the plugin's to check (the proxy's rules: tests/chart)
        runtime, schema = _runtime_accepts(setting, value), _schema_accepts(setting, value)
        bounded_text = setting.type == "duration" and isinstance(value, str) and setting.maximum is not None
        if bounded_text and schema and not runtime:
            continue  # an upper bound on a duration *string* is the runtime's alone (documented)
        if setting.minimum and isinstance(value, str) and not _one_part(value) and schema and not runtime:
            continue  # so is a minimum on a sum (40ms40ms) or in m, h, d (documented)
        assert runtime == schema, (setting.env, value, runtime, schema)


def _one_part(text: str) -> bool:
    return re.fullmatch(r"[0-9]+(\.[0-9]+)?(s|ms)?", text) is not None


def test_allow_zero_takes_zero_or_at_least_the_minimum() -> None:
    spec = {"type": "duration", "default": "5s", "env": "T_POLL", "label": "Poll", "minimum": 0.1}
    (setting,) = parse_settings({"poll": {**spec, "allowZero": True}}, "m.yaml")
    assert [setting.parse(text) for text in ("0", "0ms", "100ms", "0.1", "1m")] == [0, 0, 0.1, 0.1, 60]
    with pytest.raises(
        PluginConfigError, match=r"^T_POLL must be 0 \(off\) or at least 0.1s \(got '50ms'\)$"
    ):
        setting.parse("50ms")
    for accepted in ("0", "0.0s", 0, "100ms", 0.1, "5s"):
        assert _schema_accepts(setting, accepted), accepted
    for refused in ("50ms", "0.05", "0.09s", 0.05):
        assert not _schema_accepts(setting, refused), refused
    for bad in ({**spec, "minimum": 0, "allowZero": True}, {**spec, "type": "string", "allowZero": True}):
        with pytest.raises(
            ValueError, match="allowZero applies to an int or duration setting with a minimum"
        ):
            parse_settings({"poll": bad}, "m.yaml")


@pytest.mark.parametrize("minimum", [0.1, 0.05, 0.001, 1, 5, 60, 123.45, 3600])
def test_the_below_minimum_pattern_matches_exactly_the_one_part_durations_below_it(minimum: float) -> None:
    """Every one-part duration (bare, s, ms, and m/h/d where the minimum is a finite decimal of
    them) matches :func:`below_duration_pattern` exactly when its value is below the minimum."""
    pattern = re.compile(below_duration_pattern(minimum))
    rng = random.Random(minimum)
    low = Fraction(str(minimum))
    units = {"": 1, "s": 1, "ms": Fraction(1, 1000), "m": 60, "h": 3600, "d": 86400}
    for _ in range(3000):
        unit = rng.choice(list(units))
        whole = "0" * rng.randint(0, 2) + str(
            rng.choice([0, 1, 4, 5, 9, 50, 60, 99, 100, 101, rng.randint(0, 10**6)])
        )
        text = whole + (
            "." + "".join(rng.choices("0123456789", k=rng.randint(1, 6))) if rng.random() < 0.6 else ""
        )
        text += unit
        below = Fraction(text.removesuffix(unit)) * units[unit] < low
        exact = unit in ("", "s", "ms") or (low / units[unit]).denominator in (
            1,
            2,
            4,
            5,
            8,
            10,
            20,
            25,
            50,
            100,
        )
        if exact:
            assert bool(pattern.match(text)) == below, (minimum, text)
        else:
            assert not pattern.match(text) or below, (minimum, text)  # never refuses a valid value


def test_the_builtin_manifests_resolve_with_no_environment() -> None:
    for manifest in discover([BUILTIN_DIR]):
        resolve_settings(manifest.settings, manifest.options, {})


# -- the host applies it --------------------------------------------------------------------------

PLUGIN = """
from buntime.plugins import Plugin

SEEN = []

class P(Plugin):
    async def on_init(self, ctx):
        SEEN.append(dict(ctx.settings))

def create(options):
    return P()
"""


def _write(root: Path) -> None:
    directory = root / "tuned"
    directory.mkdir(parents=True)
    (directory / "tuned_mod.py").write_text(PLUGIN)
    (directory / "manifest.yaml").write_text(
        textwrap.dedent(
            """
            name: "@acme/tuned"
            entry: tuned_mod:create
            every: 1m
            config:
              every: {type: duration, default: 5s, env: TUNED_EVERY, label: Every, exclusiveMinimum: 0}
              count: {type: int, default: 2, env: TUNED_COUNT, label: Count}
            """
        )
    )


async def test_the_host_hands_plugins_their_resolved_settings(tmp_path: Path) -> None:
    _write(tmp_path / "p")
    host = PluginHost.from_env(
        {"BUNTIME_PLUGIN_DIRS": str(tmp_path / "p"), "TUNED_COUNT": "7"}, builtin=False
    )
    await host.start()
    try:
        assert host.ready
        assert sys.modules["tuned_mod"].SEEN[-1] == {"every": 60.0, "count": 7}
    finally:
        await host.stop()


async def test_a_bad_setting_fails_the_plugin_once_before_on_init(tmp_path: Path) -> None:
    _write(tmp_path / "p")
    env = {"BUNTIME_PLUGIN_DIRS": str(tmp_path / "p"), "TUNED_EVERY": "0s"}
    host = PluginHost.from_env(env, builtin=False, retry_initial=0.01, retry_max=0.01)
    before = len(getattr(sys.modules.get("tuned_mod"), "SEEN", []))
    await host.start()
    await asyncio.wait_for(host.recover(lambda _: asyncio.sleep(0)), 1)  # nothing to retry: returns
    assert not host.ready and host.retrying == {}
    assert host.failed["@acme/tuned"] == "TUNED_EVERY must be more than 0s (got '0s')"
    assert len(getattr(sys.modules.get("tuned_mod"), "SEEN", [])) == before  # on_init never ran
    await host.stop()
