"""The plugin host: discover manifests, order plugins by dependencies, run their lifecycle.

Built-in plugins live beside this module (``buntime/plugins/<name>/manifest.yaml``); more come
from ``BUNTIME_PLUGIN_DIRS`` (``os.pathsep``-separated). Order is topological over required and
present optional dependencies; a plugin whose required dependency is missing, disabled or failed
is skipped with a log line, and so are its dependents.

A plugin whose ``on_init`` failed (a dependency that was down, a timeout) is not given up on:
:meth:`PluginHost.recover` retries it with exponential backoff, together with the plugins that
were skipped only because it failed, and reports each one that starts late to the server, which
mounts it. A plugin whose entry cannot be loaded, whose settings are invalid, or whose manifest is
broken, missing a required dependency or in a cycle is not retried: nothing but a new image,
manifest or environment fixes it.

A manifest that did not parse has no plugin name, so the host names it (in :attr:`PluginHost.failed`,
:meth:`PluginHost.blocking` and so in the readiness body) by :func:`broken_manifest_name`: its
directory's name, made unique. Its file's path is only in the error text (the value) and the log.
"""

from __future__ import annotations

import asyncio
import graphlib
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ..turso import TursoConfigError
from ._errors import ManifestError, PluginConfigError, PluginInitError, PluginLoadError
from ._manifest import Manifest, discover
from ._plugin import Plugin, PluginContext
from ._reserved import ReservedPaths
from ._settings import resolve_settings

log = logging.getLogger("buntime.plugins")
BUILTIN_DIR = Path(__file__).resolve().parent
DEFAULT_INIT_TIMEOUT = 30.0
#: First and longest pause between two rounds of :meth:`PluginHost.recover`, in seconds.
DEFAULT_RETRY_INITIAL = 1.0
DEFAULT_RETRY_MAX = 30.0
#: The ``skipped`` reason of a plugin whose required dependency failed (retried with it).
DEPENDENCY_FAILED = "required dependency failed"


@dataclass
class LoadedPlugin:
    """A plugin that initialised: its manifest, instance and provided value."""

    manifest: Manifest
    plugin: Plugin
    provided: Any


def plugin_dirs(env: Mapping[str, str], *, builtin: bool = True) -> list[Path]:
    dirs = [BUILTIN_DIR] if builtin else []
    raw = env.get("BUNTIME_PLUGIN_DIRS", "")
    dirs.extend(Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip())
    return dirs


def order_plugins(manifests: list[Manifest]) -> tuple[list[Manifest], dict[str, str]]:
    """The load order (``graphlib``) and ``{name: why it was skipped}``.

    Edges are the required and the present optional dependencies. A plugin whose required
    dependency is absent is skipped (``missing required dependency ...``), transitively; the
    members of a cycle, and whatever depends on one, are skipped as ``dependency cycle``. Among
    plugins that are ready at the same time, discovery order decides.
    """
    by_name: dict[str, Manifest] = {}
    skipped: dict[str, str] = {}
    for manifest in manifests:
        if manifest.name in by_name:
            log.warning("duplicate plugin %s at %s ignored (first found wins)", manifest.name, manifest.path)
        elif not manifest.enabled:
            skipped[manifest.name] = "disabled"
        else:
            by_name[manifest.name] = manifest
    # Drop plugins whose required dependencies are absent, transitively.
    changed = True
    while changed:
        changed = False
        for name, manifest in list(by_name.items()):
            missing = [d for d in manifest.dependencies if d not in by_name]
            if missing:
                skipped[name] = f"missing required dependency {', '.join(missing)}"
                del by_name[name]
                changed = True
    rank = {name: index for index, name in enumerate(by_name)}
    edges = {
        name: {d for d in (*m.dependencies, *m.optional_dependencies) if d in by_name}
        for name, m in by_name.items()
    }
    while True:
        sorter = graphlib.TopologicalSorter(edges)
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            # Take the reported cycle out, with everything that (transitively) needs one of it.
            out = set(exc.args[1])
            while grown := {n for n, deps in edges.items() if n not in out and deps & out}:
                out |= grown
            for name in sorted(out, key=rank.__getitem__):
                skipped[name] = "dependency cycle"
                del edges[name]
            continue
        ordered: list[Manifest] = []
        while sorter.is_active():
            ready = sorted(sorter.get_ready(), key=rank.__getitem__)
            ordered.extend(by_name[name] for name in ready)
            sorter.done(*ready)
        return ordered, skipped


def broken_manifest_name(path: Path, taken: Collection[str]) -> str:
    """The name a manifest that did not parse (``path``) goes by: its directory's name.

    No path: the name reaches the unauthenticated readiness body. It is unique: when a name in
    ``taken`` (every discovered plugin's, every broken manifest named before it) already is the
    directory's name, the first free of ``<dir>#2``, ``<dir>#3``, ... So two broken manifests in
    directories of the same name (under two plugin dirs, or ``@a/x`` and ``x``) are listed apart,
    and a broken manifest never shares a name with a real plugin (whose own failure, optional
    flag or recovery would otherwise be mixed up with it).
    """
    name, n = path.parent.name, 1
    while name in taken:
        n += 1
        name = f"{path.parent.name}#{n}"
    return name


def _load_factory(manifest: Manifest) -> Any:
    module_name, _, attr = manifest.entry.partition(":")
    directory = str(manifest.directory)
    if manifest.directory.parent != BUILTIN_DIR and directory not in sys.path:
        sys.path.insert(0, directory)  # external plugins import their own modules by name
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise PluginLoadError(f"{manifest.name}: cannot load entry {manifest.entry!r}: {exc}") from exc


class PluginHost:
    """Loads and runs plugins. Usage::

        host = PluginHost.from_env()
        await host.start()
        turso = host.get_plugin("@buntime/plugin-turso")
        await host.stop()

    Parameters:

    * **manifests** — what to load (see :func:`discover`).
    * **env** *(optional)* — the environment plugins see, default ``os.environ``.
    * **init_timeout** *(optional)* — seconds each ``on_init`` may take, default 30.
    * **retry_initial** / **retry_max** *(optional)* — the first and the longest pause between
      two rounds of :meth:`recover`, default 1 and 30 seconds (doubling in between).
    """

    def __init__(
        self,
        manifests: list[Manifest],
        *,
        env: Mapping[str, str] | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        retry_initial: float = DEFAULT_RETRY_INITIAL,
        retry_max: float = DEFAULT_RETRY_MAX,
    ) -> None:
        self.manifests = manifests
        self.env = os.environ if env is None else env
        self.init_timeout = init_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.metrics = CollectorRegistry()
        #: Filled by the server as it mounts routes; shared with every plugin's context.
        self.reserved = ReservedPaths()
        self.loaded: list[LoadedPlugin] = []
        #: ``{name: why}``; a manifest that did not parse is under :func:`broken_manifest_name`
        #: and its error (which starts with the file's path).
        self.failed: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        #: Plugins :meth:`recover` will try again, in load order (failed ``on_init`` or skipped
        #: only because such a plugin failed).
        self.retrying: dict[str, Manifest] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, builtin: bool = True, **kw: Any) -> PluginHost:
        env = os.environ if env is None else env
        errors: list[ManifestError] = []
        host = cls(discover(plugin_dirs(env, builtin=builtin), errors), env=env, **kw)
        taken = {m.name for m in host.manifests}
        for error in errors:  # a broken manifest fails readiness instead of the whole runtime
            name = broken_manifest_name(error.path, taken)
            taken.add(name)
            host.failed[name] = str(error)
            log.error("invalid plugin manifest %s: %s", name, error)  # the name, then the file and why
        return host

    def get_plugin(self, name: str) -> Any:
        """The value ``name``'s ``provides()`` returned, or ``None``."""
        for loaded in self.loaded:
            if loaded.manifest.name == name:
                return loaded.provided
        return None

    def provides(self) -> dict[str, Any]:
        return {p.manifest.name: p.provided for p in self.loaded}

    def is_optional(self, name: str) -> bool:
        """``optional: true`` in the plugin's manifest (a broken manifest is never optional)."""
        return any(m.name == name and m.optional for m in self.manifests)

    def blocking(self) -> dict[str, str]:
        """``{name: why}`` for every required plugin that failed or was skipped (not disabled)."""
        problems = {name: f"failed: {why}" for name, why in self.failed.items()}
        problems.update({name: f"skipped: {why}" for name, why in self.skipped.items() if why != "disabled"})
        return {name: why for name, why in problems.items() if not self.is_optional(name)}

    @property
    def ready(self) -> bool:
        """Every enabled, required plugin initialised (optional ones may have failed)."""
        return not self.blocking()

    async def start(self) -> None:
        ordered, self.skipped = order_plugins(self.manifests)
        for why_name, why in self.skipped.items():
            if why != "disabled":
                log.error("plugin %s skipped: %s", why_name, why)
        for manifest in ordered:
            blocked = [d for d in manifest.dependencies if d in self.failed or d in self.skipped]
            if blocked:
                self.skipped[manifest.name] = f"{DEPENDENCY_FAILED}: {', '.join(blocked)}"
                log.error("plugin %s skipped: %s", manifest.name, self.skipped[manifest.name])
                if all(d in self.retrying for d in blocked):
                    self.retrying[manifest.name] = manifest
                continue
            try:
                self.loaded.append(await self._init(manifest))
            except PluginInitError as exc:
                self.failed[manifest.name] = str(exc)
                self.retrying[manifest.name] = manifest
                log.error("plugin %s failed to start (will retry): %s", manifest.name, exc)
            except Exception as exc:
                self.failed[manifest.name] = str(exc)
                log.error("plugin %s failed to start: %s", manifest.name, exc)

    async def recover(self, on_started: Callable[[LoadedPlugin], Awaitable[None]]) -> None:
        """Retry :attr:`retrying` until every one started; ``await on_started(p)`` for each.

        Rounds are ``retry_initial`` seconds apart at first, doubling up to ``retry_max``; a
        round tries the plugins in load order, each once its required dependencies are up, so
        the turso plugin and then its dependents start in the same round. Only a failed
        ``on_init`` (:class:`PluginInitError`) is tried again: a bad setting or an entry that
        cannot load (met once the dependency is up) moves the plugin to :attr:`failed` for good,
        and the plugins waiting for it stay skipped, exactly as :meth:`start` treats them.
        Returns at once when nothing failed; the server runs it as a task for the app's
        lifetime and cancels it.
        """
        delay = self.retry_initial
        while self.retrying:
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)
            for name, manifest in list(self.retrying.items()):
                if name not in self.retrying:
                    continue  # given up on this round, with a dependency that cannot start
                if any(d not in {p.manifest.name for p in self.loaded} for d in manifest.dependencies):
                    continue  # its dependency is still down: it stays skipped
                try:
                    loaded = await self._init(manifest)
                except PluginInitError as exc:
                    self.skipped.pop(name, None)
                    self.failed[name] = str(exc)
                    log.warning("plugin %s still failing (next try in %.1fs): %s", name, delay, exc)
                    continue
                except Exception as exc:
                    self._give_up(name, exc)
                    continue
                self.failed.pop(name, None)
                self.skipped.pop(name, None)
                del self.retrying[name]
                self.loaded.append(loaded)
                log.info("plugin %s recovered", name)
                await on_started(loaded)

    def _give_up(self, name: str, exc: Exception) -> None:
        """``name`` failed in a way no retry fixes (as in :meth:`start`): stop retrying it and
        every plugin waiting for it (they stay skipped, as if it had failed at boot)."""
        del self.retrying[name]
        self.skipped.pop(name, None)
        self.failed[name] = str(exc)
        log.error("plugin %s failed to start (not retried): %s", name, exc)
        out = {name}
        while dependents := [n for n, m in self.retrying.items() if out & set(m.dependencies)]:
            for dependent in dependents:
                blocked = sorted(out & set(self.retrying.pop(dependent).dependencies))
                self.skipped[dependent] = f"{DEPENDENCY_FAILED}: {', '.join(blocked)}"
                log.error("plugin %s skipped (not retried): %s", dependent, self.skipped[dependent])
                out.add(dependent)

    async def _init(self, manifest: Manifest) -> LoadedPlugin:
        # The settings first: a bad value fails the plugin with one line naming the variable,
        # before anything is imported or opened, and is never retried (it cannot fix itself).
        settings = resolve_settings(manifest.settings, manifest.options, self.env)
        factory = _load_factory(manifest)
        try:
            plugin = factory(dict(manifest.options))
        except Exception as exc:
            raise PluginLoadError(f"{manifest.name}: factory failed: {exc}") from exc
        if not isinstance(plugin, Plugin):
            raise PluginLoadError(f"{manifest.name}: factory must return a buntime.plugins.Plugin")
        ctx = PluginContext(
            name=manifest.name,
            config=manifest.options,
            logger=logging.getLogger(f"buntime.plugin.{manifest.name.rsplit('/', 1)[-1]}"),
            get_plugin=self.get_plugin,
            env=self.env,
            metrics=self.metrics,
            reserved=self.reserved,
            settings=settings,
        )
        try:
            await asyncio.wait_for(plugin.on_init(ctx), self.init_timeout)
        except Exception as exc:
            await self._release(manifest, plugin)  # before a retry opens the same resources again
            if isinstance(exc, PluginConfigError | TursoConfigError):
                raise PluginConfigError(str(exc), code=exc.code) from exc  # not retried either
            if isinstance(exc, TimeoutError):
                raise PluginInitError(
                    f"{manifest.name}: on_init timed out after {self.init_timeout}s"
                ) from exc
            raise PluginInitError(f"{manifest.name}: on_init failed: {exc}") from exc
        provided = plugin.provides()
        if asyncio.iscoroutine(provided):
            provided = await provided
        log.info("plugin %s started", manifest.name)
        return LoadedPlugin(manifest, plugin, provided)

    async def _release(self, manifest: Manifest, plugin: Plugin) -> None:
        """``on_shutdown`` of an instance whose ``on_init`` failed, bounded and never raising."""
        try:
            await asyncio.wait_for(plugin.on_shutdown(), self.init_timeout)
        except Exception as exc:
            log.warning("plugin %s: on_shutdown after a failed on_init failed: %s", manifest.name, exc)

    async def stop(self) -> None:
        """``on_shutdown`` in reverse load order; one failure does not stop the others."""
        while self.loaded:
            loaded = self.loaded.pop()
            try:
                await loaded.plugin.on_shutdown()
            except Exception:
                log.exception("plugin %s failed to shut down", loaded.manifest.name)
