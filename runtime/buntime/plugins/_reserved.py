"""Paths no plugin middleware may take over: mounted plugin bases, the probes and ``/metrics``.

The server fills this table while it assembles the app (``buntime.server._app``); plugins that
route requests by their own rules (the proxy) read it at request time and when they validate a
rule. It lives in the plugins layer so a plugin can use it without importing the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

_PARAM = re.compile(r"\{[^}]*\}")


class Searchable(Protocol):
    """A compiled pattern (``re`` or RE2): what :meth:`ReservedPaths.shadowed_by` tries."""

    def search(self, text: str, /) -> object | None: ...


@dataclass(frozen=True)
class ReservedPath:
    """``path`` and, unless ``exact``, everything below it (``path/...``) belongs to ``owner``.

    ``samples`` are concrete paths under it (a mounted sub-app's routes with ``x`` for each
    variable) that a pattern is tried against to tell whether it would shadow the owner.
    """

    path: str
    owner: str
    exact: bool = False
    samples: tuple[str, ...] = ()

    def covers(self, path: str) -> bool:
        if path == self.path:
            return True
        return not self.exact and path.startswith(self.path.rstrip("/") + "/")


def route_samples(base: str, canonicals: Iterable[str]) -> tuple[str, ...]:
    """Concrete paths for route templates such as ``/api/keys/{key:.*}`` mounted under ``base``."""
    prefix = base.rstrip("/")
    samples = {base, f"{prefix}/"}
    for canonical in canonicals:
        path = _PARAM.sub("x", canonical)
        samples.add(path if path.startswith(prefix + "/") or path == prefix else prefix + path)
    return tuple(sorted(samples))


class ReservedPaths:
    """The table. Usage::

    reserved.add("/metrics", owner="runtime", exact=True)
    reserved.add("/keyval", owner="@buntime/plugin-keyval", samples=("/keyval/api/keys/x",))
    reserved.owner_of("/keyval/api/keys/x")      # "@buntime/plugin-keyval"
    reserved.shadowed_by(re.compile("^/keyval"))  # the ReservedPath it would take over
    """

    def __init__(self) -> None:
        self._paths: list[ReservedPath] = []

    @property
    def paths(self) -> tuple[ReservedPath, ...]:
        return tuple(self._paths)

    def add(self, path: str, *, owner: str, exact: bool = False, samples: Iterable[str] = ()) -> None:
        self._paths.append(ReservedPath(path, owner, exact, tuple(samples) or (path,)))

    def owner_of(self, path: str) -> str | None:
        """Who owns ``path`` (a raw request path), or ``None`` when no one reserved it."""
        return next((r.owner for r in self._paths if r.covers(path)), None)

    def shadowed_by(self, pattern: Searchable) -> ReservedPath | None:
        """The first reserved path one of whose samples ``pattern`` is found in, else ``None``."""
        for reserved in self._paths:
            if any(pattern.search(sample) for sample in reserved.samples):
                return reserved
        return None
