"""``python -m controllerbus.cli`` runs ``cbus``."""

from controllerbus.cli.main import main

main()
