"""``buntime-operator``: run the kopf operator the way it runs in its pod.

One active replica only: kopf's peering pauses other instances but is not leader election, so
the chart runs one replica with the ``Recreate`` strategy and the operator runs ``standalone``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._config import OperatorConfig, OperatorConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="buntime-operator", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--verbose", action="store_true", help="kopf debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = OperatorConfig.from_env()
    except OperatorConfigError as exc:
        print(f"buntime-operator: configuration error: {exc}", file=sys.stderr)
        return 2

    import kopf

    from . import _handlers  # noqa: F401 - registers the handlers with kopf

    kopf.run(
        standalone=True,
        clusterwide=not config.watch_namespaces,
        namespaces=list(config.watch_namespaces),
        liveness_endpoint=f"http://0.0.0.0:{config.liveness_port}/healthz",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
