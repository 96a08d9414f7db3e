"""The settings table of a plugin: its manifest's ``config`` block, parsed, typed and resolved.

One block, three readers, one parser: the host resolves it for every plugin at start (the plugin
reads :attr:`PluginContext.settings`), ``buntime --help`` lists it, and ``hack/generate-chart.py``
imports :func:`parse_settings` and :meth:`Setting.json_schema` to write the Helm values, the
ConfigMap/Secret entries, ``values.schema.json`` and the Rancher questions. So a value the chart
schema accepts is one the runtime accepts, and the other way round.

A field::

    config:
      queue.lockDuration:          # dotted path: the option queue: {lockDuration: ...}
        type: duration             # string | password | enum | int | bool | duration | list
        default: 30s
        env: KEYVAL_QUEUE_LOCK_DURATION
        label: Queue Lease Duration
        description: ...
        exclusiveMinimum: 0        # int/duration: minimum, maximum, exclusiveMinimum (seconds)
        # allowZero: true with a minimum: 0 (off) is accepted too (TURSO_SYNC_INTERVAL: 0 or >= 100ms)
        # enum: values: [...]; string: pattern: <regex>; list: items: <JSON schema of one item>
        # chart only: secret, required, showIf, example (YAML for the values.yaml comment),
        # generate (a password the chart generates when none is given, kept across upgrades)

Resolution per field: a non-blank environment variable, else the manifest option at the dotted
path (``${VAR}`` in a string option is substituted), else the default. Values are typed: ``int``
an ``int``, ``bool`` a ``bool``, ``duration`` seconds as a ``float`` in the one grammar of
:mod:`buntime.turso` (``60``, ``1h30m``, ``500ms``), ``list`` a list (JSON text in the variable);
a ``string`` option may be a list, joined with commas. Every rejection is one
:class:`PluginConfigError` line that starts with the variable's name, code ``INVALID_<VAR>``.
Used by ``_manifest`` (parsing) and ``_host`` (resolving); imports only the Turso grammar.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from ..turso import DURATION_HELP, DURATION_PATTERN, duration_seconds
from ._errors import PluginConfigError

SettingType = Literal["string", "password", "enum", "int", "bool", "duration", "list"]
SETTING_TYPES: tuple[SettingType, ...] = ("string", "password", "enum", "int", "bool", "duration", "list")
Source = Literal["env", "option", "default"]
#: A duration that is zero in any spelling (``0``, ``0s``, ``0.0ms``): what ``exclusiveMinimum: 0``
#: keeps out of a duration string in the chart schema (a JSON-schema minimum only sees numbers).
ZERO_DURATION_PATTERN = r"^(0+(\.0+)?|(0+(\.0+)?(ms|d|h|m|s))+)$"

_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
#: What a boolean variable may say (the chart renders true/false; people also write 1, yes, on).
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_PART = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum")
_KNOWN_KEYS = frozenset(
    {"type", "default", "env", "label", "description", "values", "options", "secret", "showIf", "required"}
    | {"example", "generate", "allowZero"}
    | {"pattern", "items", *_BOUNDS}
)
#: Seconds per unit of the duration grammar ("" is a bare number of seconds).
_UNIT_FRACTIONS = {"": Fraction(1), "s": Fraction(1), "ms": Fraction(1, 1000), "m": Fraction(60)}
_UNIT_FRACTIONS |= {"h": Fraction(3600), "d": Fraction(86400)}


@dataclass(frozen=True)
class Setting:
    """One field of a manifest's ``config`` block (see the module docstring for the keys)."""

    path: tuple[str, ...]
    type: SettingType
    default: Any
    env: str
    label: str
    description: str = ""
    values: tuple[str, ...] = ()
    secret: bool = False
    required: bool = False
    show_if: str = ""
    pattern: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    #: With a minimum: 0 is accepted as well (it switches the feature off).
    allow_zero: bool = False
    items: Mapping[str, Any] | None = None
    #: YAML shown under "For example:" above the key in the chart's values.yaml.
    example: str = ""
    #: A password the chart generates into the runtime Secret on first install when none is given
    #: (and reads back with ``lookup`` on upgrades); the runtime itself still defaults to empty.
    generate: bool = False

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def json_schema(self) -> dict[str, Any]:
        """The value's JSON schema in the chart (``values.schema.json``), the same rules as :meth:`parse`.

        A duration may be a string in the grammar or a number of seconds (``--set x=60`` gives an
        integer); the bounds apply to the number, ``exclusiveMinimum: 0`` also keeps a zero string
        out, and a ``minimum`` every string of one part below it (``50ms``, ``0.05s``; see
        :func:`below_duration_pattern`). A sum of parts each below the minimum (``40ms40ms``) and a
        maximum on a duration string are the runtime's alone: no regular expression adds up parts.
        """
        schema: dict[str, Any]
        if self.type == "int":
            schema = {"type": "integer"}
        elif self.type == "bool":
            schema = {"type": "boolean"}
        elif self.type == "duration":
            schema = {"type": ["string", "number"], "pattern": DURATION_PATTERN}
            if self.exclusive_minimum == 0:
                schema["not"] = {"type": "string", "pattern": ZERO_DURATION_PATTERN}
            elif self.minimum:
                below: dict[str, Any] = {"type": "string", "pattern": below_duration_pattern(self.minimum)}
                if self.allow_zero:
                    below["not"] = {"pattern": ZERO_DURATION_PATTERN}
                schema["not"] = below
        elif self.type == "list":
            schema = {"type": "array", "items": dict(self.items or {})}
        else:
            schema = {"type": "string"}
        if self.values:
            schema["enum"] = list(self.values)
        if self.pattern:
            schema["pattern"] = self.pattern
        if self.type in ("int", "duration"):
            # Never negative: the default lower bound is 0 when the manifest names none.
            if self.exclusive_minimum is not None:
                schema["exclusiveMinimum"] = _number(self.exclusive_minimum)
            elif self.allow_zero and self.minimum:
                schema["anyOf"] = [{"const": 0}, {"minimum": _number(self.minimum)}]
            else:
                schema["minimum"] = _number(self.minimum if self.minimum is not None else 0)
            if self.maximum is not None:
                schema["maximum"] = _number(self.maximum)
        return schema

    def parse(self, raw: Any, *, source: Source = "env") -> Any:
        """``raw`` (a variable's text, an option or the default) as this setting's typed value."""
        where = self.env if source == "env" else f"{self.env} (option {self.dotted})"
        if self.type == "list":
            return self._list(raw, where, source)
        if self.type == "bool":
            return self._bool(raw, where)
        if self.type in ("int", "duration"):
            number = self._int(raw, where) if self.type == "int" else self._duration(raw, where)
            self._check_bounds(number, raw, where)
            return number
        if isinstance(raw, list) and self.type == "string":
            raw = ",".join(str(item) for item in raw)  # comma-separated settings take a list option
        if isinstance(raw, Mapping | list):
            raise self.error(f"{where} must be a string (got {_shown(raw)})")
        text = str(raw).strip()
        if self.type == "enum" and text not in self.values:
            raise self.error(f"{where} must be one of {', '.join(self.values)} (got {_shown(raw)})")
        if self.pattern and not re.search(self.pattern, text):
            raise self.error(f"{where} must match {self.pattern} (got {_shown(raw)})")
        return text

    def error(self, message: str) -> PluginConfigError:
        """A one-line error naming this setting's variable, code ``INVALID_<VAR>``."""
        return PluginConfigError(" ".join(message.split()), variable=self.env)

    def _list(self, raw: Any, where: str, source: Source) -> list[Any]:
        if isinstance(raw, str) and source == "env":  # JSON in the variable, a real list elsewhere
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise self.error(f"{where} must be a JSON array: {exc}") from None
        if not isinstance(raw, list):
            raise self.error(f"{where} must be a list (got {type(raw).__name__})")
        return raw

    def _bool(self, raw: Any, where: str) -> bool:
        if isinstance(raw, bool):
            return raw
        text = raw.strip().lower() if isinstance(raw, str) else ""  # 0 or 1 from YAML is no boolean
        if text not in _TRUE | _FALSE:
            raise self.error(f"{where} must be true or false (got {_shown(raw)})")
        return text in _TRUE

    def _int(self, raw: Any, where: str) -> int:
        number = whole_number(raw)
        if number is None:
            raise self.error(f"{where} must be a whole number (got {_shown(raw)})")
        return number

    def _duration(self, raw: Any, where: str) -> float:
        if isinstance(raw, bool):
            raise self.error(f"{where}: use {DURATION_HELP} (got {_shown(raw)})")
        try:
            return duration_seconds(str(raw))
        except ValueError as exc:
            raise self.error(f"{where}: {exc}") from None

    def _check_bounds(self, number: float, raw: Any, where: str) -> None:
        unit = "s" if self.type == "duration" else ""
        low = self.minimum if self.minimum is not None else 0
        if self.allow_zero and number == 0:
            return
        if self.allow_zero and number < low:
            raise self.error(f"{where} must be 0 (off) or at least {low:g}{unit} (got {_shown(raw)})")
        if self.exclusive_minimum is not None and not number > self.exclusive_minimum:
            raise self.error(
                f"{where} must be more than {self.exclusive_minimum:g}{unit} (got {_shown(raw)})"
            )
        if self.exclusive_minimum is None and number < low:
            raise self.error(f"{where} must be at least {low:g}{unit} (got {_shown(raw)})")
        if self.maximum is not None and number > self.maximum:
            raise self.error(f"{where} must be at most {self.maximum:g}{unit} (got {_shown(raw)})")


@dataclass(frozen=True)
class Settings(Mapping[str, Any]):
    """A plugin's resolved settings: ``settings["queue.lockDuration"]`` is the typed value.

    :meth:`source` says where each came from (``env``, ``option`` or ``default``) and :meth:`text`
    the value as written (``1m`` for a duration of 60.0), for what a plugin reports back.
    """

    resolved: Mapping[str, Any] = field(default_factory=dict)
    sources: Mapping[str, Source] = field(default_factory=dict)
    texts: Mapping[str, str] = field(default_factory=dict, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.resolved[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.resolved)

    def __len__(self) -> int:
        return len(self.resolved)

    def source(self, key: str) -> Source:
        return self.sources[key]

    def text(self, key: str) -> str:
        return self.texts[key]

    def __repr__(self) -> str:  # values may hold tokens: list the names and sources only
        return f"Settings({dict(self.sources)!r})"


def whole_number(raw: Any) -> int | None:
    """``raw`` as an ``int`` when it is one (not a bool) or ASCII digits with an optional ``-``,
    else ``None``: the one integer grammar of settings (``int()`` would also take ``8_000``,
    ``+80`` and non-ASCII digits)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    text = raw.strip() if isinstance(raw, str) else ""
    return int(text) if re.fullmatch(r"-?[0-9]+", text) else None


def below_duration_pattern(minimum: float) -> str:
    """A pattern matching every duration of one part (``50ms``, ``0.05``, ``0.05s``) below
    ``minimum`` seconds, exactly, in each unit where ``minimum`` is a finite decimal (``0.1`` is
    ``0.1s`` and ``100ms``, but ``1/600 m``: no ``m``, ``h`` or ``d`` then)."""
    low = Fraction(str(minimum))
    alternatives = []
    for unit, seconds in _UNIT_FRACTIONS.items():
        threshold = low / seconds
        if _finite_decimal(threshold):
            alternatives.append(f"({_decimal_below(threshold)}){unit}")
    return f"^({'|'.join(alternatives)})$"


def _finite_decimal(value: Fraction) -> bool:
    denominator = value.denominator
    for factor in (2, 5):
        while denominator % factor == 0:
            denominator //= factor
    return denominator == 1


def _decimal_below(threshold: Fraction) -> str:
    """A pattern for the numbers ``[0-9]+(\\.[0-9]+)?`` below ``threshold`` (a finite decimal > 0)."""
    whole, fraction = divmod(threshold, 1)
    integer = str(whole)
    digits = ""
    while fraction:
        fraction *= 10
        next_digit, fraction = divmod(fraction, 1)
        digits += str(next_digit)
    any_fraction = r"(\.[0-9]+)?"
    smaller = []  # non-zero integer parts (after leading zeros) below `integer`, then any fraction
    if integer != "0":
        if len(integer) > 1:
            smaller.append(f"[1-9][0-9]{{0,{len(integer) - 2}}}")
        for i, char in enumerate(integer):
            lowest = 1 if i == 0 else 0
            if int(char) > lowest:
                rest = len(integer) - i - 1
                smaller.append(
                    f"{integer[:i]}[{lowest}-{int(char) - 1}]" + (f"[0-9]{{{rest}}}" if rest else "")
                )
    alternatives = [f"0+{any_fraction}"] if integer != "0" else []  # a zero integer part
    if smaller:
        alternatives.append(f"0*({'|'.join(smaller)}){any_fraction}")
    if digits:  # the same integer part and a smaller fraction (or none)
        fractions = [f"{digits[:i]}[0-{int(d) - 1}][0-9]*" for i, d in enumerate(digits) if d != "0"]
        fractions += [f"{digits[:j]}0*" for j in range(1, len(digits))]
        same = "0+" if integer == "0" else f"0*{integer}"
        alternatives.append(f"{same}(\\.({'|'.join(fractions)}))?")
    return "|".join(alternatives)


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def _shown(raw: Any) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return repr(text[:60])


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _substitute(option: Any, env: Mapping[str, str]) -> Any:
    """``${VAR}`` in a string option becomes the variable's value (unset: empty), as in Turso's config."""
    if not isinstance(option, str):
        return option
    return _VAR.sub(lambda m: env.get(m.group(1), ""), option)


def _option(options: Mapping[str, Any], setting: Setting) -> Any:
    node: Any = options
    for depth, part in enumerate(setting.path):
        if node is None:
            return None
        if not isinstance(node, Mapping):
            parent = ".".join(setting.path[:depth])
            raise PluginConfigError(
                f"{setting.env}: option {parent} must be a mapping (got {type(node).__name__})",
                variable=setting.env,
            )
        node = node.get(part)
    return node


def resolve_settings(
    settings: tuple[Setting, ...], options: Mapping[str, Any], env: Mapping[str, str]
) -> Settings:
    """Every setting's typed value: non-blank env, else the option, else the default.

    Raises :class:`PluginConfigError` (one line, starting with the variable) on the first bad value.
    """
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    texts: dict[str, str] = {}
    for setting in settings:
        raw_env = env.get(setting.env, "")
        option = _option(options, setting)
        source: Source
        if not _blank(raw_env):
            raw, source = raw_env, "env"
        elif not _blank(option) and not (setting.type == "list" and option == []):
            raw, source = _substitute(option, env), "option"
        else:
            raw, source = setting.default, "default"
        if source == "default" and _blank(raw):
            values[setting.dotted] = [] if setting.type == "list" else ""
        else:
            values[setting.dotted] = setting.parse(raw, source=source)
        sources[setting.dotted] = source
        texts[setting.dotted] = raw.strip() if isinstance(raw, str) else json.dumps(raw)
    return Settings(values, sources, texts)


# -- parsing the config block ---------------------------------------------------------------------


class _Invalid(ValueError):
    """A field of the block is invalid; ``parse_settings`` adds where."""


def _typed_default(raw: Any, kind: SettingType) -> Any:
    if kind == "int":
        value = 0 if _blank(raw) else raw
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"default must be an integer (got {raw!r})")
        return value
    if kind == "bool":
        value = False if raw is None else raw
        if not isinstance(value, bool):
            raise _Invalid(f"default must be true or false (got {raw!r})")
        return value
    if kind == "list":
        value = [] if raw is None else raw
        if not isinstance(value, list):
            raise _Invalid(f"default must be a list (got {raw!r})")
        return value
    text = "" if raw is None else str(raw)
    if kind == "duration" and text:
        try:
            duration_seconds(text)
        except ValueError as exc:
            raise _Invalid(f"default: {exc}") from None
    return text


def _bound(spec: Mapping[str, Any], key: str, kind: SettingType) -> float | None:
    value = spec.get(key)
    if value is None:
        return None
    if kind not in ("int", "duration"):
        raise _Invalid(f"{key} applies to int and duration settings only")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _Invalid(f"{key} must be a number (of seconds for a duration)")
    return float(value)


def _parse_field(name: str, spec: Any) -> Setting:
    if not isinstance(spec, Mapping):
        raise _Invalid("must be a mapping")
    unknown = sorted(set(spec) - _KNOWN_KEYS)
    if unknown:
        raise _Invalid(f"unknown key(s) {', '.join(map(str, unknown))}")
    kind = spec.get("type", "string")
    if kind not in SETTING_TYPES:
        raise _Invalid(f"type must be one of {', '.join(SETTING_TYPES)} (got {kind!r})")
    env = spec.get("env")
    if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
        raise _Invalid(f"env must be an upper-case variable name (got {env!r})")
    label = spec.get("label")
    if not isinstance(label, str) or not label.strip():
        raise _Invalid("label is required")
    path = tuple(name.split("."))
    if not all(_PART.fullmatch(part) for part in path):
        raise _Invalid("each dotted part must be an identifier")
    values: tuple[str, ...] = ()
    if kind == "enum":
        raw_values = spec.get("values") or spec.get("options")
        if not isinstance(raw_values, list) or not raw_values:
            raise _Invalid("an enum needs a non-empty values list")
        values = tuple(str(v) for v in raw_values)
    pattern = str(spec.get("pattern") or "")
    if pattern:
        if kind not in ("string", "password"):
            raise _Invalid("pattern applies to string settings only")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise _Invalid(f"pattern: {exc}") from None
    items = spec.get("items")
    if items is not None and (kind != "list" or not isinstance(items, Mapping)):
        raise _Invalid("items (a JSON schema mapping) applies to list settings only")
    generate = spec.get("generate", False)
    if not isinstance(generate, bool) or (generate and kind != "password"):
        raise _Invalid("generate (true or false) applies to password settings only")
    if spec.get("allowZero") and (kind not in ("int", "duration") or not spec.get("minimum")):
        raise _Invalid("allowZero applies to an int or duration setting with a minimum above 0")
    setting = Setting(
        path=path,
        type=kind,
        default=_typed_default(spec.get("default"), kind),
        env=env,
        label=label.strip(),
        description=" ".join(str(spec.get("description") or "").split()),
        values=values,
        secret=bool(spec.get("secret")) or kind == "password",
        required=bool(spec.get("required")),
        show_if=str(spec.get("showIf") or ""),
        pattern=pattern,
        minimum=_bound(spec, "minimum", kind),
        maximum=_bound(spec, "maximum", kind),
        exclusive_minimum=_bound(spec, "exclusiveMinimum", kind),
        allow_zero=bool(spec.get("allowZero")),
        items=items,
        example=str(spec.get("example") or "").strip("\n"),
        generate=generate,
    )
    if not _blank(setting.default) and setting.default != []:
        try:
            setting.parse(setting.default, source="default")
        except PluginConfigError as exc:
            raise _Invalid(f"default {setting.default!r} is not valid: {exc}") from None
    return setting


def parse_settings(block: Any, where: str) -> tuple[Setting, ...]:
    """A manifest's ``config`` block as settings, in manifest order.

    Raises ``ValueError`` naming ``where`` and the field (``<file>: config.<name>: ...``); the
    manifest loader turns it into a :class:`ManifestError`, the chart generator into its own.
    """
    if block is None:
        return ()
    if not isinstance(block, Mapping):
        raise ValueError(f"{where}: 'config' must be a mapping of field name to schema")
    settings: list[Setting] = []
    for name, spec in block.items():
        try:
            settings.append(_parse_field(str(name), spec))
        except _Invalid as exc:
            raise ValueError(f"{where}: config.{name}: {exc}") from None
    envs = [s.env for s in settings]
    if len(envs) != len(set(envs)):
        raise ValueError(f"{where}: two config fields share an environment variable")
    seen: set[tuple[str, ...]] = set()
    for setting in settings:
        prefixes = {setting.path[:i] for i in range(1, len(setting.path))}
        if (
            setting.path in seen
            or prefixes & seen
            or any(p[: len(setting.path)] == setting.path for p in seen)
        ):
            raise ValueError(
                f"{where}: config.{setting.dotted} clashes with another field (twice, or nested)"
            )
        seen.add(setting.path)
    return tuple(settings)
