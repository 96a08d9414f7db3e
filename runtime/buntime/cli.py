"""The ``buntime`` command: ``serve`` (the runtime server), ``turso health|sql`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from .turso import TursoError, TursoService, resolve_config


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


async def _health() -> int:
    async with TursoService(resolve_config()) as service:
        await service.connect()
        health = await service.health()
        print(_json(health.as_dict()))
        return 0 if health.ok else 1


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="buntime", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    turso = sub.add_parser("turso", help="talk to the Turso service configured by the environment")
    tsub = turso.add_subparsers(dest="turso_command", required=True)
    tsub.add_parser("health", help="open the default namespace and print the health report")
    sql = tsub.add_parser("sql", help="run one statement in a namespace and print the result")
    sql.add_argument("namespace")
    sql.add_argument("statement")
    sql.add_argument("params", nargs="*", help="positional parameters (strings)")
    sub.add_parser("demo", help="a short demo on the configured database (what `make run` ran first)")
    serve = sub.add_parser("serve", help="run the runtime HTTP server with its plugins")
    serve.add_argument("--host", default=None, help="listen address (env BUNTIME_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, default=None, help="listen port (env BUNTIME_PORT, default 8000)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
    except TursoError as exc:
        print(f"buntime: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
