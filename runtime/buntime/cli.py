"""The ``buntime`` command: ``serve`` (the runtime server), ``turso health|sql`` and ``demo``.

``--help`` is generated from the settings table (``_settings``) and the built-in plugins'
manifest ``config`` blocks. A bad flag or setting exits with status 2 and one line on stderr
(never a traceback); a database that cannot be opened or used exits with status 1 and one line
(``turso health``: 0 ok, 3 degraded, 1 down). Logging is set up by ``_logging`` before any
command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NoReturn

from ._logging import configure_logging
from ._settings import LOG_FORMATS, LOG_LEVELS, SETTINGS, SETTINGS_BY_ENV
from .plugins import BUILTIN_DIR, ManifestError, discover
from .turso import TursoConfigError, TursoError, TursoService, resolve_config

PROG = "buntime"
DESCRIPTION = (
    "The buntime runtime: serve runs the HTTP server with its plugins on the Turso service; "
    "turso health|sql and demo talk to the Turso service the environment configures."
)
HELP_WIDTH = 100
GROUP_TITLES = {
    "logging": "logging",
    "server": "server (buntime serve)",
    "turso": "Turso service (local file, or a replica synced with turso-server)",
    "worker": "worker apps (buntime.worker.open_turso; the runtime forwards these to them)",
}


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


async def _health() -> int:
    async with TursoService(resolve_config()) as service:
        await service.connect()
        health = await service.health()
        print(_json(health.as_dict()))
        return 0 if health.ok else 3 if health.usable else 1


async def _sql(namespace: str, statement: str, params: list[Any]) -> int:
    async with TursoService(resolve_config()) as service:
        db = await service.connect(namespace)
        result = await db.execute(statement, params)
        if result.columns:
            print(_json(result.rows))
        else:
            print(_json({"changes": result.changes, "last_insert_rowid": result.last_insert_rowid}))
        return 0


async def _demo() -> int:
    """Real work on a real file: schema, concurrent transactions, a read back, health."""
    async with TursoService(resolve_config()) as service:
        cfg = service.config
        print(f"buntime demo: mode={cfg.mode} topology={cfg.topology} local_path={cfg.local_path}")
        await service.transaction(
            lambda db: db.exec(
                "CREATE TABLE IF NOT EXISTS demo_runs(id INTEGER PRIMARY KEY, started REAL NOT NULL);"
                "CREATE TABLE IF NOT EXISTS demo_counter(id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
                "INSERT OR IGNORE INTO demo_counter VALUES (1, 0)"
            ),
            namespace="demo",
            type="exclusive",
        )
        await service.transaction(
            lambda db: db.run("INSERT INTO demo_runs(started) VALUES (?)", [time.time()]), namespace="demo"
        )

        async def bump(db: Any) -> None:
            row = await db.get("SELECT n FROM demo_counter WHERE id = 1")
            await db.run("UPDATE demo_counter SET n = ? WHERE id = 1", [row["n"] + 1])

        await asyncio.gather(
            *(service.transaction(bump, namespace="demo", max_retries=50) for _ in range(20))
        )
        db = await service.connect("demo")
        runs = await db.get("SELECT count(*) AS runs FROM demo_runs")
        counter = await db.get("SELECT n FROM demo_counter WHERE id = 1")
        print(
            f"runs so far: {runs['runs'] if runs else 0}; counter after 20 concurrent increments: {counter}"
        )
        print(_json((await service.health()).as_dict()))
    return 0


class CliParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (status 2) that points at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {PROG} --help)\n")


def _choice(name: str, choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type`` that lower-cases and checks ``choices``, naming the flag in the error."""

    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)} (got {raw!r})")
        return value

    parse.__name__ = name
    return parse


def _rows() -> Iterator[tuple[str, str, str, str]]:
    """(group, name, default, help) for every setting, the plugins' after the runtime's own."""
    for setting in SETTINGS:
        name = f"{setting.env} ({setting.flag})" if setting.flag else setting.env
        yield setting.group, name, setting.default, setting.help
    try:
        manifests = discover([BUILTIN_DIR])
    except ManifestError:  # --help must work even with a broken manifest; serve reports it
        manifests = []
    for manifest in manifests:
        for field in manifest.settings:
            if field.env not in SETTINGS_BY_ENV:
                default = "" if field.secret or field.default in ("", []) else str(field.default)
                yield f"plugin {manifest.name}", field.env, default, field.description or field.label


def _epilog() -> str:
    lines = ["environment (a flag wins over its variable; blank values count as unset):"]
    group = None
    for row_group, name, default, text in _rows():
        if row_group != group:
            group = row_group
            lines.append(f"  {GROUP_TITLES.get(group, group)}:")
        suffix = f" [default {default}]" if default else ""
        lines.append(f"    {name}")
        lines.extend(
            textwrap.wrap(text + suffix, HELP_WIDTH, initial_indent=" " * 8, subsequent_indent=" " * 8)
        )
    lines.extend(
        textwrap.wrap(
            "Durations are a number of seconds or d, h, m, s, ms parts (60, 1h30m, 1d12h, 500ms). An "
            "invalid setting stops the command with status 2 and a message naming the variable.",
            HELP_WIDTH,
        )
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The parser; its ``--help`` lists every setting of ``_settings`` and of the built-in plugins."""
    parser = CliParser(
        prog=PROG,
        description=textwrap.fill(DESCRIPTION, HELP_WIDTH),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    level, fmt = SETTINGS_BY_ENV["BUNTIME_LOG_LEVEL"], SETTINGS_BY_ENV["BUNTIME_LOG_FORMAT"]
    parser.add_argument(
        "--log-level",
        type=_choice("log level", LOG_LEVELS),
        default=None,
        metavar="LEVEL",
        help=f"{level.help} [env {level.env}; default {level.default}]",
    )
    parser.add_argument(
        "--log-format",
        type=_choice("log format", LOG_FORMATS),
        default=None,
        metavar="FORMAT",
        help=f"{fmt.help} [env {fmt.env}; default {fmt.default}]",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    turso = sub.add_parser("turso", help="talk to the Turso service configured by the environment")
    tsub = turso.add_subparsers(dest="turso_command", required=True, metavar="COMMAND")
    tsub.add_parser("health", help="open the default namespace and print the health report")
    sql = tsub.add_parser("sql", help="run one statement in a namespace and print the result")
    sql.add_argument("namespace")
    sql.add_argument("statement")
    sql.add_argument("params", nargs="*", help="positional parameters (strings)")
    sub.add_parser("demo", help="a short demo on the configured database (what make demo runs)")
    serve = sub.add_parser("serve", help="run the runtime HTTP server with its plugins")
    host, port = SETTINGS_BY_ENV["BUNTIME_HOST"], SETTINGS_BY_ENV["BUNTIME_PORT"]
    serve.add_argument(
        "--host", default=None, help=f"listen address [env {host.env}; default {host.default}]"
    )
    serve.add_argument(
        "--port", type=int, default=None, help=f"listen port [env {port.env}; default {port.default}]"
    )
    return parser


def _setting(
    parser: argparse.ArgumentParser, env: Mapping[str, str], name: str, choices: Sequence[str]
) -> str:
    """A logging setting from the environment, checked like its flag (status 2 when wrong)."""
    raw = env.get(name, "").strip()
    value = raw.lower() or SETTINGS_BY_ENV[name].default
    if value not in choices:
        parser.error(f"{name} must be one of {', '.join(choices)} (got {raw!r})")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ
    level = args.log_level or _setting(parser, env, "BUNTIME_LOG_LEVEL", LOG_LEVELS)
    log_format = args.log_format or _setting(parser, env, "BUNTIME_LOG_FORMAT", LOG_FORMATS)
    configure_logging(level, log_format, env=env)
    try:
        if args.command == "turso" and args.turso_command == "health":
            return asyncio.run(_health())
        if args.command == "turso" and args.turso_command == "sql":
            return asyncio.run(_sql(args.namespace, args.statement, list(args.params)))
        if args.command == "demo":
            return asyncio.run(_demo())
        if args.command == "serve":
            from .server import run_server

            return int(run_server(host=args.host, port=args.port))
    except TursoConfigError as exc:  # a bad setting: status 2, like a bad flag
        print(f"{PROG}: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except TursoError as exc:  # the database cannot be opened or used: down, status 1
        print(f"{PROG}: error [{exc.code}]: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the local path (permissions, a file where a directory should be)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
