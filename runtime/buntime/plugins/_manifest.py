"""Plugin manifests: ``manifest.yaml`` files that name a plugin, its entry point and its needs.

A manifest's top-level keys other than the reserved ones below are the plugin's options and are
handed to its factory. The ``config`` block is the plugin's settings table (``_settings``): the
host resolves it into :attr:`PluginContext.settings` (env over option over default, typed), and
``hack/generate-chart.py`` turns the same parsed fields into Helm values, schema and questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._errors import ManifestError
from ._settings import Setting, parse_settings

MANIFEST_NAMES = ("manifest.yaml", "manifest.yml")
RESERVED_KEYS = frozenset(
    {
        "name",
        "version",
        "enabled",
        "optional",
        "entry",
        "base",
        "dependencies",
        "optionalDependencies",
        "config",
    }
)
#: Matched whole (``fullmatch``): ``$`` would also accept a trailing newline ("/api\n").
_BASE = re.compile(r"/[a-zA-Z0-9_-]+")
_ENTRY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
RESERVED_BASES = frozenset({"/api", "/metrics", "/healthz", "/readyz"})


@dataclass(frozen=True)
class Manifest:
    """A parsed, validated plugin manifest."""

    name: str
    entry: str
    path: Path
    version: str = "0.0.0"
    enabled: bool = True
    base: str | None = None
    dependencies: tuple[str, ...] = ()
    optional_dependencies: tuple[str, ...] = ()
    #: ``optional: true``: when it fails or is skipped, the pod stays ready (readiness lists it).
    optional: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    #: The ``config`` block, parsed: what the host resolves and the chart generator renders.
    settings: tuple[Setting, ...] = ()

    @property
    def directory(self) -> Path:
        return self.path.parent


def _names(raw: Any, key: str, path: Path) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise ManifestError(f"{path}: '{key}' must be a list of plugin names", path=path)
    return tuple(raw)


def load_manifest(path: Path) -> Manifest:
    """Read and validate ``path``; every problem is a :class:`ManifestError` naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}", path=path) from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a manifest must be a mapping", path=path)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ManifestError(f"{path}: 'name' is required", path=path)
    entry = data.get("entry")
    if not isinstance(entry, str) or not _ENTRY.fullmatch(entry):
        raise ManifestError(
            f"{path}: 'entry' must look like 'package.module:factory' (got {entry!r})", path=path
        )
    base = data.get("base")
    if base is not None and (not isinstance(base, str) or not (base == "/" or _BASE.fullmatch(base))):
        raise ManifestError(
            f"{path}: 'base' must be '/' or '/<letters, digits, - or _>' (got {base!r})", path=path
        )
    if base in RESERVED_BASES:
        raise ManifestError(f"{path}: base {base!r} is reserved by the runtime", path=path)
    enabled = data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ManifestError(f"{path}: 'enabled' must be true or false", path=path)
    optional = data.get("optional", False)
    if not isinstance(optional, bool):
        raise ManifestError(f"{path}: 'optional' must be true or false", path=path)
    try:
        settings = parse_settings(data.get("config"), str(path))
    except ValueError as exc:
        raise ManifestError(str(exc), path=path) from None
    return Manifest(
        name=name.strip(),
        entry=entry,
        path=path,
        version=str(data.get("version", "0.0.0")),
        enabled=enabled,
        optional=optional,
        base=base,
        dependencies=_names(data.get("dependencies"), "dependencies", path),
        optional_dependencies=_names(data.get("optionalDependencies"), "optionalDependencies", path),
        options={k: v for k, v in data.items() if k not in RESERVED_KEYS},
        settings=settings,
    )


def discover(dirs: list[Path], errors: list[ManifestError] | None = None) -> list[Manifest]:
    """Manifests under each dir: ``<dir>/<name>/manifest.yaml`` and ``<dir>/@scope/<name>/...``.

    Hidden entries are skipped; for duplicate names the first found wins (callers log it). With
    ``errors`` given, an invalid manifest is collected there instead of stopping discovery.
    """
    found: list[Manifest] = []
    for root in dirs:
        if not root.is_dir():
            continue
        candidates: list[Path] = []
        for child in sorted(root.iterdir()):
            if child.name.startswith((".", "_")) or not child.is_dir():
                continue
            if child.name.startswith("@"):
                candidates.extend(
                    sorted(p for p in child.iterdir() if p.is_dir() and not p.name.startswith("."))
                )
            else:
                candidates.append(child)
        for directory in candidates:
            for manifest_name in MANIFEST_NAMES:
                if (directory / manifest_name).is_file():
                    try:
                        found.append(load_manifest(directory / manifest_name))
                    except ManifestError as exc:
                        if errors is None:
                            raise
                        errors.append(exc)
                    break
    return found
