"""``cbus``: run the daemon, list plugins, run the demo."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from controllerbus.cli._common import fail, setup_logging
from controllerbus.daemon import DEFAULT_CONFIG, DaemonOptions, run_daemon
from controllerbus.errors import ControllerBusError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v debug, -vv asyncio too).")
@click.version_option(package_name="controllerbus")
def cli(verbose: int) -> None:
    """controllerbus: a hot-reloading plugin pipeline for asyncio services."""
    setup_logging(verbose)


async def _run_until_signal(options: DaemonOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_daemon(options, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONFIG,
    show_default=True,
    envvar="CONTROLLER_BUS_CONFIG",
    show_envvar=True,
    help="Config-set file (YAML; JSON if it ends in .json). Example: -c examples/daemon.yaml",
)
@click.option(
    "--write-config",
    is_flag=True,
    envvar="CONTROLLER_BUS_WRITE_CONFIG",
    show_envvar=True,
    help="Create the config file if missing and write the parsed set back (sorted YAML).",
)
def daemon(config_path: Path, write_config: bool) -> None:
    """Run the controllers of a config set until SIGINT or SIGTERM.

    \b
    Example:
      cbus daemon -c controllerbus_daemon.yaml
    """
    options = DaemonOptions(config_path=config_path, write_config=write_config)
    try:
        asyncio.run(_run_until_signal(options))
    except ControllerBusError as exc:
        raise fail(exc) from exc


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cbus")
