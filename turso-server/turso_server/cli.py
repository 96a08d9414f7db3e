"""``turso-server``: the multi-tenant supervisor around ``tursodb --sync-server``.

Parses flags (every flag mirrors an environment variable; ``--help`` lists both), validates the
configuration before anything starts (an invalid value or flag exits with status 2 and one line
naming it, never a traceback), sets up structured logging on stderr and serves until SIGTERM or
SIGINT. This is the console script declared in ``pyproject.toml`` and what ``python -m
turso_server`` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

from ._app import serve
from ._config import SETTINGS, Kind, ServerConfig, Setting, load_config
from ._errors import ConfigError, StateError
from ._logging import configure_logging, get_logger

PROG = "turso-server"
DESCRIPTION = (
    "Run one tursodb sync server per namespace behind one data port (/<namespace>/...) and an admin "
    "API. Each flag mirrors the environment variable shown with it; flags win over the environment."
)
EPILOG = (
    "Durations are a number of seconds or d, h, m, s, ms parts (60, 30d, 1h30m, 500ms). Secrets are "
    "never flag values (argv is world-readable): set the variable, or pass the --*-file flag pointing "
    "to a file that holds the value. Empty tokens are refused unless --insecure-dev is given."
)

log = get_logger("cli")


class CliParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (status 2) that points at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {PROG} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, generated from the settings table so help and parsing cannot drift."""
    parser = CliParser(prog=PROG, description=DESCRIPTION, epilog=EPILOG)
    for setting in SETTINGS:
        help_text = f"{setting.help} [env {setting.env}; default {setting.default!r}]"
        if setting.kind is Kind.BOOL:
            parser.add_argument(
                setting.flag, dest=setting.env, action=argparse.BooleanOptionalAction, help=help_text
            )
        elif setting.kind is Kind.SWITCH:
            parser.add_argument(
                setting.flag, dest=setting.env, action="store_const", const="true", help=help_text
            )
        else:
            metavar = "FILE" if setting.kind is Kind.SECRET else setting.kind.value.upper()
            parser.add_argument(setting.flag, dest=setting.env, metavar=metavar, help=help_text)
    return parser


def _flag_value(namespace: argparse.Namespace, setting: Setting) -> str | None:
    value = getattr(namespace, setting.env)
    if isinstance(value, bool):
        return "true" if value else "false"
    return None if value is None else str(value)


def _use_pidfd_child_watcher() -> None:
    """On Python 3.11 asyncio waits for each child in a thread of its own (256 namespaces, 256
    threads); a pidfd watcher waits in the event loop instead. 3.12+ picks it by itself."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        try:
            os.close(os.pidfd_open(os.getpid()))
        except OSError:  # kernel without pidfd: keep the default watcher
            return
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)


async def _run(config: ServerConfig) -> None:
    _use_pidfd_child_watcher()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(config, stop)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``turso-server`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    flags = {setting.env: _flag_value(args, setting) for setting in SETTINGS}
    try:
        config = load_config(flags, os.environ)
    except ConfigError as exc:
        parser.exit(2, f"{PROG}: configuration error: {exc}\n")
    configure_logging(config.log_level, config.log_format, secrets=config.secrets)
    try:
        asyncio.run(_run(config))
    except StateError as exc:
        log.error("cannot load state", extra={"error": str(exc)})
        sys.exit(1)
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        sys.exit(1)
