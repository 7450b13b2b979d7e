"""cbus-compile through click's CliRunner: output, JSON, environment variables, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from controllerbus.cli.compile import cli

from .conftest import make_project


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_compile_prints_the_wheel_path(runner: CliRunner, samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        cli, ["compile", "-o", str(out), "--codegen-dir", str(tmp_path / "cg"), str(samples)]
    )
    assert result.exit_code == 0, result.output
    (wheel,) = out.glob("*.whl")
    assert result.stdout.strip() == str(wheel)
    assert "cbus-compile: built" in result.stderr

    again = runner.invoke(
        cli, ["compile", "-o", str(out), "--codegen-dir", str(tmp_path / "cg"), str(samples)]
    )
    assert again.exit_code == 0
    assert "up to date, nothing built" in again.stderr
    assert again.stdout.strip() == str(wheel)


def test_compile_json(runner: CliRunner, samples: Path, tmp_path: Path) -> None:
    args = ["compile", "--json", "-o", str(tmp_path / "out"), "--codegen-dir", str(tmp_path / "cg")]
    first = runner.invoke(cli, [*args, str(samples)])
    assert first.exit_code == 0, first.output
    data = json.loads(first.stdout)
    assert set(data) >= {
        "wheel",
        "sha256",
        "version",
        "build_hash",
        "factories",
        "rebuilt",
        "binary_id",
        "binary_version",
        "requires",
    }
    assert data["rebuilt"] is True
    assert Path(data["wheel"]).is_file()
    assert data["factories"] == [
        "compiler_hello.echo:new_factory",
        "compiler_hello.hello:new_factory",
    ]
    second = json.loads(runner.invoke(cli, [*args, str(samples)]).stdout)
    assert second["rebuilt"] is False
    assert second["sha256"] == data["sha256"]


def test_environment_variables(runner: CliRunner, samples: Path, tmp_path: Path) -> None:
    env = {
        "CBUS_OUTPUT_DIR": str(tmp_path / "env-out"),
        "CBUS_CODEGEN_DIR": str(tmp_path / "env-cg"),
        "CBUS_PLUGIN_BINARY_ID": "env/plugin",
        "CBUS_PLUGIN_BINARY_VERSION": "env-{buildHash}",
        "CBUS_BUILD_PREFIX": "envp_",
        "CBUS_JSON": "1",
        "CBUS_NO_CLEANUP": "true",
    }
    result = runner.invoke(cli, ["compile", str(samples)], env=env)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert Path(data["wheel"]).parent == tmp_path / "env-out"
    assert data["binary_id"] == "env/plugin"
    assert data["binary_version"] == "env-" + data["build_hash"][:16]
    assert data["module"] == "envp_env_plugin"
    assert (tmp_path / "env-cg" / "src" / "envp_env_plugin.py").is_file()


def test_codegen_prints_the_overlay_path(runner: CliRunner, samples: Path, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["codegen", "--codegen-dir", str(tmp_path / "cg"), str(samples)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(tmp_path / "cg")
    assert (tmp_path / "cg" / "pyproject.toml").is_file()
    as_json = json.loads(
        runner.invoke(
            cli, ["codegen", "--json", "--codegen-dir", str(tmp_path / "cg"), str(samples)]
        ).stdout
    )
    assert as_json["codegen_dir"] == str(tmp_path / "cg")
    assert as_json["written"] == 0  # nothing changed since the first run


def test_compile_error_exits_1_with_file_and_line(runner: CliRunner, tmp_path: Path) -> None:
    target = make_project(tmp_path / "app", "app", files={"src/app/bad.py": "x = (\n"})
    result = runner.invoke(cli, ["compile", "-o", str(tmp_path / "out"), str(target)])
    assert result.exit_code == 1
    assert f"{target / 'src/app/bad.py'}:1: syntax error" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["compile"],
        ["compile", "does-not-exist"],
        ["compile", "--no-such-flag", "."],
        ["nope"],
        ["compile", "--plugin-binary-id", "bad id", "{target}"],
        ["codegen", "--build-prefix", "9", "{target}"],
    ],
)
def test_usage_errors_exit_2(
    runner: CliRunner, tmp_path: Path, samples: Path, args: list[str]
) -> None:
    args = [a.replace("{target}", str(samples)) for a in args]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2, result.output


def test_help_explains_every_flag_with_env_var_and_example(runner: CliRunner) -> None:
    text = runner.invoke(cli, ["compile", "--help"], terminal_width=200).stdout
    flags = {
        "--codegen-dir": "CBUS_CODEGEN_DIR",
        "--output-dir": "CBUS_OUTPUT_DIR",
        "--build-prefix": "CBUS_BUILD_PREFIX",
        "--plugin-binary-id": "CBUS_PLUGIN_BINARY_ID",
        "--plugin-binary-version": "CBUS_PLUGIN_BINARY_VERSION",
        "--no-cleanup": "CBUS_NO_CLEANUP",
        "--isolated": "CBUS_ISOLATED",
        "--watch": "CBUS_WATCH",
        "--json": "CBUS_JSON",
        "--verbose": "CBUS_VERBOSE",
    }
    lines = " ".join(text.split())
    for flag, envvar in flags.items():
        assert flag in text
        section = lines[lines.index(flag) :]
        section = section[: section.index("env var")]
        assert "Example:" in section, flag
        assert envvar in lines


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("cbus-compile")
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "compile" in result.stdout
    assert "codegen" in result.stdout
