"""``python -m turso_server`` runs the same entry point as the ``turso-server`` script."""

from .cli import main

main()
