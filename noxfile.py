"""Developer sessions: `nox` runs tests, lint and typecheck; bench and demo on demand."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]
# Only the interpreters this machine has: a missing 3.12 is skipped, not a failure.
nox.options.error_on_missing_interpreters = False

PYPROJECT = nox.project.load_toml("pyproject.toml")
PYTHONS = nox.project.python_versions(PYPROJECT, max_version="3.13")


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """All tests, slow end-to-end ones included (``-- -m 'not slow'`` for a quick run)."""
    session.install("-e.[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("-e.[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src, tests, benchmarks and this file."""
    session.install("-e.[dev]")
    session.run("mypy", *session.posargs)


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks with same-run baselines; tables on stdout, JSON in benchmarks/results/."""
    session.install("-e.[test]")
    for module in (
        "bench_compile",
        "bench_unload",
        "bench_reload",
        "bench_hostile",
        "bench_verify",
        "bench_production",
        "bench_hot",
        "bench_ipc",
    ):
        session.run("python", "-m", f"benchmarks.{module}", *session.posargs)


@nox.session(default=False)
def plugins(session: nox.Session) -> None:
    """CI recipe: compile plugins/ --isolated into dist-plugins/, verify, write the trust file.

    ``-- OUT_DIR`` to write elsewhere. See docs/production.md for the CI → index → fleet
    commands that follow.
    """
    session.install("-e.")
    session.run("python", "plugins/ci_build.py", *session.posargs)


@nox.session(default=False)
def demo(session: nox.Session) -> None:
    """The end-to-end demo: compile the example plugins, load them, run, exit."""
    session.install("-e.")
    session.run("cbus", "demo", *session.posargs)
