"""What the click front-ends share: logging set-up and error mapping."""

from __future__ import annotations

import logging
import sys

import click

from controllerbus.errors import ControllerBusError

__all__ = ["fail", "setup_logging"]


def setup_logging(verbose: int) -> None:
    """Log to stderr: INFO by default, DEBUG with ``-v``; ``-vv`` includes asyncio."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if verbose < 2:
        logging.getLogger("asyncio").setLevel(logging.WARNING)


def fail(exc: ControllerBusError) -> click.ClickException:
    """Map an expected error to a one-line CLI failure (exit 1, no traceback)."""
    return click.ClickException(str(exc))
