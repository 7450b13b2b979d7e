"""What the click front-ends share: logging set-up and error mapping."""

from __future__ import annotations

import logging
import sys

import click

from controllerbus.errors import ControllerBusError

__all__ = ["fail", "setup_logging"]


def setup_logging(verbose: int, *, quiet: bool = False) -> None:
    """Log to stderr, the one set-up of every ``cbus*`` command.

    ``quiet=False`` (``cbus``, a long-running daemon): INFO by default, DEBUG with
    ``-v``. ``quiet=True`` (``cbus-compile``, a one-shot tool whose output is its
    result): WARNING by default, INFO with ``-v``, DEBUG with ``-vv``. asyncio's own
    debug lines only one ``-v`` beyond DEBUG.
    """
    steps = (
        [logging.WARNING, logging.INFO, logging.DEBUG] if quiet else [logging.INFO, logging.DEBUG]
    )
    level = steps[min(max(verbose, 0), len(steps) - 1)]
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if quiet:
        # A one-shot tool may run where logging is configured already (a test's
        # CliRunner): its -v must still reach the package's loggers.
        logging.getLogger("controllerbus").setLevel(level)
    if verbose < len(steps):
        logging.getLogger("asyncio").setLevel(logging.WARNING)


def fail(exc: ControllerBusError) -> click.ClickException:
    """Map an expected error to a one-line CLI failure (exit 1, no traceback)."""
    return click.ClickException(str(exc))
