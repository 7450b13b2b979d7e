"""``cbus``: run the daemon, list plugins, run the demo."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from controllerbus.cli._common import fail, setup_logging
from controllerbus.daemon import DEFAULT_CONFIG, DEFAULT_STATE_DIR, DaemonOptions
from controllerbus.errors import ControllerBusError
from controllerbus.example import boilerplate, hello_probe
from controllerbus.loader.sandbox import DEFAULT_LIMITS, TrialLimits

if TYPE_CHECKING:
    from controllerbus.loader.manifest import ManifestRecord

__all__ = ["cli", "format_manifest", "main"]


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_STATE_DIR,
    show_default=True,
    envvar="CBUS_STATE_DIR",
    show_envvar=True,
    help="Where plugin generations (venvs) and manifest.json live; one daemon per directory.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v debug, -vv asyncio too).")
@click.version_option(package_name="controllerbus")
def cli(verbose: int) -> None:
    """controllerbus: a hot-reloading plugin pipeline for asyncio services."""
    setup_logging(verbose)


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="CONTROLLER_BUS_CONFIG",
    show_envvar=True,
    help=f"Config-set file (YAML; JSON if it ends in .json). Default: ./{DEFAULT_CONFIG} if "
    "present, else the first --hot target's own, else none (no config-set controllers). "
    "Example: -c examples/controllerbus_daemon.yaml",
)
@click.option(
    "--write-config",
    is_flag=True,
    envvar="CONTROLLER_BUS_WRITE_CONFIG",
    show_envvar=True,
    help="Create the config file if missing and write the parsed set back (sorted YAML).",
)
@click.option(
    "--plugins-dir",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    envvar="CBUS_PLUGINS_DIR",
    show_envvar=True,
    help="Load every plugin wheel in this directory (and reload on change). "
    "Example: --plugins-dir dist-plugins",
)
@click.option(
    "--hot",
    "hot_specs",
    multiple=True,
    metavar="DIR[,DIR...]",
    help="Compile this plugin project in-process, load it, and hot-reload it on every "
    "save (state carried over). Comma-separated directories make one wheel; repeat for "
    "more plugins. Example: --hot plugins/hot-demo",
)
@state_dir_option
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    envvar="CBUS_WATCH",
    show_envvar=True,
    help="Watch the plugins directory and hot-reload changed wheels.",
)
@click.option(
    "--trust",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="CBUS_TRUST",
    show_envvar=True,
    help="Trust file (pip requirements syntax with --hash=sha256:...): only wheels it "
    "pins load, dependency wheels included; re-read when it changes. "
    "Example: --trust dist-plugins/trust.txt",
)
@click.option(
    "--find-links",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    multiple=True,
    help="Directory of dependency wheels for plugins' Requires-Dist the host lacks "
    "(repeatable; default: the plugins directory). Pure wheels only, never sdists.",
)
@click.option(
    "--index-url",
    envvar="CBUS_INDEX_URL",
    show_envvar=True,
    help="PEP 503/691 simple index (pypiserver, devpi) to fetch the wheels the trust file "
    "pins from, into the plugins directory (default <state-dir>/wheelhouse). Needs --trust. "
    "Example: --index-url http://pypi.internal:8080/simple/",
)
@click.option(
    "--index-poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between checks of the trust file for new wheels to fetch from the index.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds from SIGTERM/SIGINT to exit, at most (then exit status 4).",
)
@click.option(
    "--trial-timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_LIMITS.deadline,
    show_default=True,
    help="Seconds a plugin's trial import (import + factories, in a child process) may "
    "take before it and every process it started are killed.",
)
@click.option(
    "--trial-memory",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMITS.memory_mib,
    show_default=True,
    help="Address-space limit of a trial import in MiB (0: none).",
)
@click.option(
    "--trial-files",
    type=click.IntRange(min=0),
    default=DEFAULT_LIMITS.open_files,
    show_default=True,
    help="Open-file limit of a trial import (0: none).",
)
@click.option(
    "--trial-cpu",
    type=click.IntRange(min=0),
    default=0,
    help="CPU-time limit of a trial import in seconds (default: the trial timeout).",
)
@click.option(
    "--insecure-permissions",
    is_flag=True,
    envvar="CBUS_INSECURE_PERMISSIONS",
    show_envvar=True,
    help="Trust a plugins directory, state directory or wheel that another user, the "
    "group or everyone can write (by default refused, like ssh's StrictModes).",
)
@click.option(
    "--isolation",
    type=click.Choice(["inprocess", "process"]),
    default="inprocess",
    show_default=True,
    envvar="CBUS_ISOLATION",
    show_envvar=True,
    help="Run plugins in the daemon's interpreter, or each in a child process of its "
    "own generation (own dependency versions; a crash restarts only that plugin). "
    "A plugin's metadata may choose for itself. See docs/ipc.md.",
)
def daemon(
    config_path: Path | None,
    write_config: bool,
    plugins_dir: Path | None,
    hot_specs: tuple[str, ...],
    state_dir: Path,
    watch: bool,
    trust: Path | None,
    find_links: tuple[Path, ...],
    index_url: str | None,
    index_poll: float,
    grace: float,
    trial_timeout: float,
    trial_memory: int,
    trial_files: int,
    trial_cpu: int,
    insecure_permissions: bool,
    isolation: Literal["inprocess", "process"],
) -> None:
    """Run the controllers of a config set until SIGINT or SIGTERM.

    With --plugins-dir, plugin wheels (from cbus-compile) are loaded first, each
    into its own generation under --state-dir, and a changed wheel replaces the
    running generation; a bad wheel is reported and the last good one keeps
    serving. Directories and wheels that others could write are refused with the
    chmod/chown that fixes them (see --insecure-permissions).
    Every generation is first imported in a trial child process with
    --trial-timeout and resource limits (CPU time = the timeout).

    Exit status: 0 all stopped; 1 could not start; 3 plugins left non-daemon
    threads running (abandoned, named in the log); 4 the shutdown took longer
    than --grace.

    With --hot, the daemon compiles the plugin project itself and reloads it on
    every save of a file the plugin is made of; a syntax error is reported with
    file:line while the previous code keeps serving.

    \b
    Examples:
      cbus daemon -c controllerbus_daemon.yaml
      cbus daemon -c plugins/hot-demo/controllerbus_daemon.yaml --plugins-dir dist-plugins
      cbus daemon -c daemon.yaml --plugins-dir dist-plugins --trust dist-plugins/trust.txt
      cbus daemon -c daemon.yaml --trust trust.txt --index-url http://127.0.0.1:8080/simple/
      cbus daemon --hot plugins/hot-demo
    """
    from controllerbus.cli.lifecycle import run_daemon_process
    from controllerbus.hot import HotTarget

    try:
        options = DaemonOptions(
            config_path=config_path,
            write_config=write_config,
            plugins_dir=plugins_dir,
            state_dir=state_dir,
            watch=watch,
            trust=trust,
            find_links=find_links,
            index_url=index_url,
            index_poll=index_poll,
            trial_limits=TrialLimits(
                deadline=trial_timeout,
                memory_mib=trial_memory,
                cpu_seconds=trial_cpu,
                open_files=trial_files,
            ),
            insecure_permissions=insecure_permissions,
            isolation=isolation,
            hot=tuple(HotTarget.parse(spec) for spec in hot_specs),
        )
        code = run_daemon_process(
            options, grace=grace, factories=[boilerplate.new_factory, hello_probe.new_factory]
        )
    except ControllerBusError as exc:
        raise fail(exc) from exc
    raise SystemExit(code)


@cli.command()
@click.option(
    "--sources",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    help="Directory holding the example projects hot-demo/ and demo-greeting/ "
    "(default: the checkout's plugins/).",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Keep the demo's files here instead of a temporary directory.",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Keep running: serve plugins/hot-demo from a hot daemon and print every reload "
    "(what changed, phase times, the greeting count carried over) until Ctrl-C.",
)
@click.pass_context
def demo(ctx: click.Context, sources: Path | None, workdir: Path | None, watch: bool) -> None:
    """Compile, load, hot-reload and unload the example plugin, end to end.

    Runs in a temporary directory: compiles plugins/hot-demo (with its path
    dependency) into a wheel, runs the daemon on it, asks the plugin a question,
    edits the plugin and watches the running daemon switch generations, proves the
    old one is gone, rejects a corrupt wheel while the last good one keeps serving,
    and shuts down. Takes a few seconds.

    With --watch, edit plugins/hot-demo or plugins/demo-greeting in another
    window while it runs; a syntax error is shown with file:line and the previous
    code keeps answering.

    \b
    Example:
      cbus demo
      cbus -v demo --workdir /tmp/cbus-demo
      cbus demo --watch
    """
    from controllerbus.cli.demo import demo_sources, run_demo

    if not ctx.find_root().params.get("verbose"):
        # The demo prints its own story; the daemon's log lines are for -v.
        logging.getLogger().setLevel(logging.CRITICAL)
    if watch:
        src = sources or demo_sources()
        try:
            asyncio.run(_watch_demo(src, workdir, in_place=src.name != "_demo"))
        except ControllerBusError as exc:
            raise fail(exc) from exc
        return
    try:
        asyncio.run(run_demo(click.echo, sources=sources, workdir=workdir))
    except ControllerBusError as exc:
        raise fail(exc) from exc
    click.echo("\ndemo finished")


async def _watch_demo(sources: Path, workdir: Path | None, *, in_place: bool) -> None:
    from controllerbus.hot.watch_demo import run_watch_demo

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_watch_demo(click.echo, stop, sources=sources, workdir=workdir, in_place=in_place)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


@cli.group()
def plugins() -> None:
    """Inspect the plugins of a state directory; pin wheels for production."""


@plugins.command("list")
@state_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def plugins_list(state_dir: Path, as_json: bool) -> None:
    """Show the plugin manifest: one row per plugin, active or not.

    Reads <state-dir>/manifest.json (written atomically by the daemon), so it works
    while a daemon runs.

    \b
    Example:
      cbus plugins list --state-dir .cbus-state
    """
    from controllerbus.loader.manifest import read_manifest

    try:
        manifest = read_manifest(state_dir)
    except ControllerBusError as exc:
        raise fail(exc) from exc
    if as_json:
        click.echo(manifest.model_dump_json(indent=2))
        return
    if not manifest.plugins:
        click.echo(f"no plugins recorded in {state_dir / 'manifest.json'}")
        return
    click.echo(format_manifest(manifest.plugins))


@plugins.command("retry")
@click.argument("binary_id")
@state_dir_option
def plugins_retry(binary_id: str, state_dir: Path) -> None:
    """Let a quarantined plugin be loaded again (after the daemon died activating it).

    Clears the plugin's crash count in <state-dir>/crashes.json; the next start of
    the daemon (or a touch of the wheel) loads it again, after a trial import.

    \b
    Example:
      cbus plugins retry controllerbus/examples/hot-demo/codegen-demo/1
    """
    from controllerbus.loader.crashguard import ActivationGuard

    cleared = ActivationGuard(state_dir).retry(binary_id)
    if not cleared:
        raise click.ClickException(
            f"plugin {binary_id} has no recorded crashes in {state_dir}; nothing to retry"
        )
    click.echo(f"plugin {binary_id}: cleared {len(cleared)} crashed generation(s); it will load")


@plugins.command("trust")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False, exists=True))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the trust file here (atomically) instead of printing it.",
)
def plugins_trust(directory: Path, output: Path | None) -> None:
    """Pin every wheel in DIRECTORY by sha256: print (or write) a trust file.

    Plugins and dependency wheels alike; what `cbus daemon --trust` reads.

    \b
    Example:
      cbus plugins trust dist-plugins -o dist-plugins/trust.txt
    """
    from controllerbus.loader.trustwriter import write_trust_file

    try:
        text = write_trust_file(directory, output)
    except ControllerBusError as exc:
        raise fail(exc) from exc
    if output is None:
        click.echo(text, nl=False)
    else:
        click.echo(f"pinned {text.count('--hash=')} wheel(s) in {output}", err=True)


def format_manifest(records: Sequence[ManifestRecord]) -> str:
    """A readable table of manifest records, with errors and leaks below each row."""
    header = ("PLUGIN", "STATUS", "VERSION", "BUILD", "GENERATION", "LOADED", "MS", "FACTORIES")
    rows = [
        (
            r.binary_id,
            r.status,
            r.binary_version or "-",
            r.build_hash[:12] or "-",
            r.generation[:12] or "-",
            r.loaded_at.strftime("%Y-%m-%d %H:%M:%S") if r.loaded_at else "-",
            f"{r.load_ms:.0f}" if r.load_ms else "-",
            str(len(r.factories)),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    for record, row in zip(records, rows, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if record.isolation == "process":
            exit_text = f", last exit: {record.last_exit}" if record.last_exit else ""
            lines.append(f"    process: pid {record.pid}, restarts {record.restarts}{exit_text}")
        if record.error:
            label = "rejected" if record.status == "rejected" else "error"
            lines.append(f"    {label}: " + record.error.replace("\n", "\n    "))
        for leak in record.leaks:
            lines.append("    leak: " + leak)
    return "\n".join(lines)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="cbus")
