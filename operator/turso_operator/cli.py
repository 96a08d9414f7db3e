"""``buntime-operator``: run the kopf operator the way it runs in its pod.

One active replica only: kopf's peering pauses other instances but is not leader election, so
the chart runs one replica with the ``Recreate`` strategy and the operator runs ``standalone``.
``--help`` is generated from the settings table (``_config.SETTINGS``); a bad flag or setting
exits with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from ._config import LOG_FORMATS, LOG_LEVELS, SETTINGS, SETTINGS_BY_ENV, OperatorConfig
from ._errors import OperatorConfigError
from ._logging import configure_logging

PROG = "buntime-operator"
DESCRIPTION = (
    "Provision TursoNamespace resources through turso-server's admin API, write their connection "
    "Secrets, repair drift, and inject connections into labelled pods (kopf, one replica)."
)
HELP_WIDTH = 100


class CliParser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line (status 2) that points at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {PROG} --help)\n")


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(choices)} (got {raw!r})")
        return value

    return parse


def _epilog() -> str:
    lines = ["environment (a flag wins over its variable; blank values count as unset):"]
    for setting in SETTINGS:
        name = f"{setting.env} ({setting.flag})" if setting.flag else setting.env
        extra = (
            " [required]" if setting.required else f" [default {setting.default}]" if setting.default else ""
        )
        lines.append(f"  {name}")
        lines.extend(
            textwrap.wrap(setting.help + extra, HELP_WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
        )
    lines.extend(
        textwrap.wrap(
            "Durations (*_SECONDS, *_TIMEOUT) are a number of seconds or d, h, m, s, ms parts (60, 1m30s). "
            "An invalid setting stops the start with status 2 and a message naming the variable.",
            HELP_WIDTH,
        )
    )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The parser; its ``--help`` lists every row of ``_config.SETTINGS``."""
    parser = CliParser(
        prog=PROG,
        description=textwrap.fill(DESCRIPTION, HELP_WIDTH),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    level, fmt = SETTINGS_BY_ENV["TURSO_LOG_LEVEL"], SETTINGS_BY_ENV["TURSO_LOG_FORMAT"]
    parser.add_argument(
        "--log-level",
        type=_choice(LOG_LEVELS),
        metavar="LEVEL",
        help=f"{level.help} [env {level.env}; default {level.default}]",
    )
    parser.add_argument(
        "--log-format",
        type=_choice(LOG_FORMATS),
        metavar="FORMAT",
        help=f"{fmt.help} [env {fmt.env}; default {fmt.default}]",
    )
    parser.add_argument("--verbose", action="store_true", help="debug logging, kopf's included")
    return parser


def _setting(
    parser: argparse.ArgumentParser, env: Mapping[str, str], name: str, choices: Sequence[str]
) -> str:
    raw = env.get(name, "").strip()
    value = raw.lower() or SETTINGS_BY_ENV[name].default
    if value not in choices:
        parser.error(f"{name} must be one of {', '.join(choices)} (got {raw!r})")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    env = os.environ
    level = (
        "debug" if args.verbose else args.log_level or _setting(parser, env, "TURSO_LOG_LEVEL", LOG_LEVELS)
    )
    log_format = args.log_format or _setting(parser, env, "TURSO_LOG_FORMAT", LOG_FORMATS)
    try:
        config = OperatorConfig.from_env()
    except OperatorConfigError as exc:
        parser.exit(2, f"{PROG}: configuration error: {exc}\n")
    configure_logging(level, log_format, env=env)

    import kopf

    from ._handlers import build_registry, operator_memo

    kopf.run(
        registry=build_registry(config),
        memo=operator_memo(config),
        standalone=True,
        clusterwide=not config.watch_namespaces,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
