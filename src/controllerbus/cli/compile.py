"""``cbus-compile``: compile plugin projects into one reproducible plugin wheel.

A thin front-end over :mod:`controllerbus.compiler`: parse options, call, print.
Every option can also come from a ``CBUS_*`` environment variable (shown in
``--help``). Exit codes: 0 success, 1 compile or build failure (the message names
file and line where there is one), 2 usage error.

What the user should see goes to stderr through :func:`click.echo`; stdout carries
only the result (the wheel path, the overlay path, or JSON with ``--json``) so that
scripts can capture it.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from controllerbus.cli._common import setup_logging
from controllerbus.compiler import (
    DEFAULT_BINARY_VERSION,
    DEFAULT_BUILD_PREFIX,
    DEFAULT_OUTPUT_DIR,
    CompileOptions,
    CompileResult,
    Graph,
    InvalidOption,
    codegen,
    compile_plugin,
    export_wheelhouse,
    verify_wheel,
    watch_compile,
)
from controllerbus.errors import CompileError

__all__ = ["DEFAULT_OUTPUT_DIR", "cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _shared_options(func: F) -> F:
    """Options common to ``compile`` and ``codegen``."""
    options = [
        click.argument(
            "targets",
            nargs=-1,
            required=True,
            metavar="TARGET...",
            type=click.Path(exists=True, file_okay=False, path_type=Path),
        ),
        click.option(
            "--codegen-dir",
            type=click.Path(file_okay=False, path_type=Path),
            envvar="CBUS_CODEGEN_DIR",
            show_envvar=True,
            help="Directory of the generated overlay project, kept between runs so a"
            " rebuild rewrites only changed files. Default: ./.cbus-codegen/<distribution>."
            " Example: --codegen-dir build/overlay",
        ),
        click.option(
            "--build-prefix",
            envvar="CBUS_BUILD_PREFIX",
            show_envvar=True,
            help="Import-name prefix of the generated plugin module (module = prefix +"
            f" binary-id slug). Default: {DEFAULT_BUILD_PREFIX}. Example: --build-prefix"
            " acme_plugin_",
        ),
        click.option(
            "--plugin-binary-id",
            envvar="CBUS_PLUGIN_BINARY_ID",
            show_envvar=True,
            help="The plugin's stable identity (BINARY_ID, entry point name); also names"
            " the wheel. Default: the target project's name. Example: --plugin-binary-id"
            " acme/hello",
        ),
        click.option(
            "--plugin-binary-version",
            envvar="CBUS_PLUGIN_BINARY_VERSION",
            show_envvar=True,
            help="BINARY_VERSION; every {buildHash} becomes the first 16 hex digits of"
            f" the build hash. Default: {DEFAULT_BINARY_VERSION}. Example:"
            " --plugin-binary-version 'v2-{buildHash}'",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            envvar="CBUS_JSON",
            show_envvar=True,
            help="Print the result as one JSON object per line on stdout (wheel, sha256,"
            " version, build_hash, factories, rebuilt, ...). Example: --json | jq .wheel",
        ),
        click.option(
            "-v",
            "--verbose",
            count=True,
            envvar="CBUS_VERBOSE",
            show_envvar=True,
            help="Log progress to stderr; twice for debug detail. Example: -vv",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.group(context_settings=_CONTEXT)
@click.version_option(package_name="controllerbus", prog_name="cbus-compile")
def cli() -> None:
    """Compile controllerbus plugin projects into one reproducible plugin wheel.

    \b
    Examples:
      cbus-compile compile plugins/hello
      cbus-compile compile -o dist-plugins --watch plugins/hello
      cbus-compile codegen plugins/hello plugins/other
      cbus-compile verify dist-plugins/cbus_plugin_hello-*.whl plugins/hello
    """


@cli.command("compile", context_settings=_CONTEXT)
@_shared_options
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_OUTPUT_DIR,
    show_default=True,
    envvar="CBUS_OUTPUT_DIR",
    show_envvar=True,
    help="Directory the wheel is written to (created if missing). Example: -o /srv/plugins",
)
@click.option(
    "--no-cleanup",
    is_flag=True,
    envvar="CBUS_NO_CLEANUP",
    show_envvar=True,
    help="Keep older wheels of the same plugin in the output directory. Example: --no-cleanup",
)
@click.option(
    "--isolated",
    is_flag=True,
    envvar="CBUS_ISOLATED",
    show_envvar=True,
    help="Build with 'python -m build' in a fresh environment (CI-grade, about a second)"
    " instead of in-process hatchling; the wheel is byte-identical. Offline, set"
    " PIP_NO_INDEX=1 PIP_FIND_LINKS=<dir> (see 'cbus-compile wheelhouse')."
    " Example: --isolated",
)
@click.option(
    "--watch",
    is_flag=True,
    envvar="CBUS_WATCH",
    show_envvar=True,
    help="After compiling, recompile on every change to the plugin's files until"
    " Ctrl-C; errors are printed and the watch goes on. Example: --watch",
)
def compile_command(
    targets: tuple[Path, ...],
    codegen_dir: Path | None,
    build_prefix: str | None,
    plugin_binary_id: str | None,
    plugin_binary_version: str | None,
    as_json: bool,
    verbose: int,
    output_dir: Path,
    no_cleanup: bool,
    isolated: bool,
    watch: bool,
) -> None:
    """Compile TARGET... (project directories) into one plugin wheel.

    Path dependencies are vendored; other requirements become Requires-Dist. If the
    output directory already holds the wheel of this build hash, nothing is built.

    \b
    Examples:
      cbus-compile compile plugins/hello
      cbus-compile compile -o dist-plugins --json plugins/hello plugins/other
      CBUS_ISOLATED=1 cbus-compile compile plugins/hello
    """
    setup_logging(verbose, quiet=True)
    options = CompileOptions(
        output_dir=output_dir,
        codegen_dir=codegen_dir,
        binary_id=plugin_binary_id,
        binary_version=plugin_binary_version,
        build_prefix=build_prefix,
        isolated=isolated,
        cleanup=not no_cleanup,
    )
    if watch:
        _watch(targets, options, as_json)
        return
    try:
        result = compile_plugin(targets, options)
    except InvalidOption as exc:
        raise click.UsageError(str(exc)) from exc
    except CompileError as exc:
        raise click.ClickException(str(exc)) from exc
    _report(result, as_json)


@cli.command("codegen", context_settings=_CONTEXT)
@_shared_options
def codegen_command(
    targets: tuple[Path, ...],
    codegen_dir: Path | None,
    build_prefix: str | None,
    plugin_binary_id: str | None,
    plugin_binary_version: str | None,
    as_json: bool,
    verbose: int,
) -> None:
    """Write the overlay project of TARGET... and print its path; do not build.

    \b
    Example:
      cbus-compile codegen --codegen-dir build/overlay plugins/hello
      python -m build --wheel build/overlay   # what 'compile --isolated' runs
    """
    setup_logging(verbose, quiet=True)
    try:
        result = codegen(
            targets,
            CompileOptions(
                codegen_dir=codegen_dir,
                binary_id=plugin_binary_id,
                binary_version=plugin_binary_version,
                build_prefix=build_prefix,
            ),
        )
    except InvalidOption as exc:
        raise click.UsageError(str(exc)) from exc
    except CompileError as exc:
        raise click.ClickException(str(exc)) from exc
    plan = result.plan
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        click.echo(
            f"cbus-compile: overlay for {plan.binary_id} {plan.version}"
            f" ({result.stats.written} files written, {result.stats.removed} removed)",
            err=True,
        )
        click.echo(str(result.codegen_dir))


@cli.command("verify", context_settings=_CONTEXT)
@click.argument(
    "wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="WHEEL"
)
@click.argument(
    "targets",
    nargs=-1,
    required=True,
    metavar="TARGET...",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option(
    "--isolated",
    is_flag=True,
    envvar="CBUS_ISOLATED",
    show_envvar=True,
    help="Rebuild with 'python -m build' in a fresh environment. Example: --isolated",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="CBUS_JSON",
    show_envvar=True,
    help="Print the rebuild's result as JSON on stdout. Example: --json",
)
@click.option(
    "-v",
    "--verbose",
    count=True,
    envvar="CBUS_VERBOSE",
    show_envvar=True,
    help="Log progress to stderr; twice for debug detail. Example: -v",
)
def verify_command(
    wheel: Path, targets: tuple[Path, ...], isolated: bool, as_json: bool, verbose: int
) -> None:
    """Rebuild WHEEL from TARGET... and fail unless the bytes are identical.

    The binary id, binary version template and build prefix are read from the
    wheel itself. Exit 0: reproducible; 1: the bytes differ (what differs is
    listed) or the sources do not compile.

    \b
    Example:
      cbus-compile verify dist-plugins/cbus_plugin_hello-*.whl plugins/hello
    """
    setup_logging(verbose, quiet=True)
    try:
        result = verify_wheel(wheel, targets, isolated=isolated)
    except CompileError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(
            json.dumps({**result.to_json(), "wheel": str(wheel.absolute()), "verified": True})
        )
    else:
        click.echo(f"cbus-compile: {wheel.name} is reproducible from the sources", err=True)
        click.echo(str(wheel))


@cli.command("wheelhouse", context_settings=_CONTEXT)
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.argument("requirements", nargs=-1)
def wheelhouse_command(dest: Path, requirements: tuple[str, ...]) -> None:
    """Repack the host's installed hatchling (or REQUIREMENTS...) and dependencies as wheels.

    For offline isolated builds: the overlay pins the host's exact hatchling, and
    this writes it and its dependencies from the installed files, no download.

    \b
    Example:
      cbus-compile wheelhouse ./wheelhouse
      PIP_NO_INDEX=1 PIP_FIND_LINKS=./wheelhouse cbus-compile compile --isolated plugins/hello
    """
    try:
        wheels = export_wheelhouse(dest, list(requirements) or None)
    except CompileError as exc:
        raise click.ClickException(str(exc)) from exc
    for wheel in wheels:
        click.echo(str(wheel))


def _report(result: CompileResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    if result.rebuilt:
        click.echo(
            f"cbus-compile: built {result.wheel.name} ({len(result.factories)} factories)"
            f" in {result.elapsed_ms:.1f} ms",
            err=True,
        )
    else:
        click.echo(
            f"cbus-compile: up to date, nothing built: {result.wheel.name}"
            f" ({result.elapsed_ms:.1f} ms)",
            err=True,
        )
    for path in result.removed:
        click.echo(f"cbus-compile: removed old wheel {path.name}", err=True)
    _summary(result.graph)
    click.echo(str(result.wheel))


def _summary(graph: Graph) -> None:
    """What was vendored, what became Requires-Dist, what was dropped (stderr)."""
    for line in graph.vendored:
        click.echo(f"cbus-compile: vendored {line}", err=True)
    for line in graph.requires:
        click.echo(f"cbus-compile: Requires-Dist {line}", err=True)
    for extra, reqs in graph.extras.items():
        click.echo(f"cbus-compile: extra {extra}: {', '.join(reqs)}", err=True)
    for line in graph.dropped:
        click.echo(f"cbus-compile: dropped {line}", err=True)


def _watch(targets: Sequence[Path], options: CompileOptions, as_json: bool) -> None:
    def on_error(exc: CompileError) -> None:
        click.echo(f"cbus-compile: error: {exc}", err=True)

    click.echo("cbus-compile: watching for changes (Ctrl-C to stop)", err=True)
    # SIGTERM (e.g. from a process manager) ends the watch like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        watch_compile(targets, options, on_result=lambda r: _report(r, as_json), on_error=on_error)
    except KeyboardInterrupt:
        click.echo("cbus-compile: stopped", err=True)
    except OSError as exc:
        # e.g. the inotify watch limit: report it rather than miss changes silently.
        raise click.ClickException(f"cannot watch the plugin's files: {exc}") from exc
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point of ``cbus-compile``."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="cbus-compile")


if __name__ == "__main__":
    main()
