"""``cbus plugins list``: the manifest as a table and as JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from controllerbus.cli.main import cli
from controllerbus.loader.manifest import Manifest, ManifestRecord, write_manifest

WHEN = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)


def _manifest(state: Path) -> None:
    state.mkdir()
    write_manifest(
        state,
        Manifest(
            plugins=[
                ManifestRecord(
                    binary_id="demo/1",
                    binary_version="cbus-hot-abcdef0123456789",
                    build_hash="abcdef0123456789",
                    wheel="/dist/demo.whl",
                    wheel_sha256="f" * 64,
                    generation="f" * 64,
                    status="active",
                    error="plugin demo/1 failed to import: RuntimeError: boom",
                    factories=["a/1", "b/1"],
                    loaded_at=WHEN,
                    load_ms=42.4,
                ),
                ManifestRecord(
                    binary_id="wheel:bad.whl",
                    wheel="/dist/bad.whl",
                    status="failed",
                    error="not a valid zip archive",
                ),
                ManifestRecord(
                    binary_id="old/1",
                    wheel="/dist/old.whl",
                    status="unloaded",
                    leaks=["class old.Thing (type) is still alive, held by: list item"],
                ),
            ]
        ),
    )


def test_table_shows_each_plugin_with_its_error_and_leaks(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _manifest(state)
    result = CliRunner().invoke(cli, ["plugins", "list", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "PLUGIN", "STATUS", "VERSION", "BUILD", "GENERATION", "LOADED", "MS", "FACTORIES",
    ]  # fmt: skip
    row = lines[1].split()
    assert row[:5] == ["demo/1", "active", "cbus-hot-abcdef0123456789", "abcdef012345", "f" * 12]
    assert row[-2:] == ["42", "2"]
    assert lines[2] == "    error: plugin demo/1 failed to import: RuntimeError: boom"
    assert "    leak: class old.Thing (type) is still alive, held by: list item" in lines
    assert any(line.startswith("wheel:bad.whl") and "failed" in line for line in lines)


def test_json_is_the_manifest(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _manifest(state)
    result = CliRunner().invoke(cli, ["plugins", "list", "--json", "--state-dir", str(state)])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data == json.loads((state / "manifest.json").read_text())
    assert [p["status"] for p in data["plugins"]] == ["active", "unloaded", "failed"]


def test_empty_and_corrupt_manifests(tmp_path: Path) -> None:
    empty = CliRunner().invoke(cli, ["plugins", "list", "--state-dir", str(tmp_path)])
    assert empty.exit_code == 0
    assert "no plugins recorded" in empty.output
    (tmp_path / "manifest.json").write_text("{not json")
    bad = CliRunner().invoke(cli, ["plugins", "list", "--state-dir", str(tmp_path)])
    assert bad.exit_code == 1
    assert "the loader manifest is unreadable" in bad.output
    assert "Traceback" not in bad.output


def test_a_rejected_file_is_listed_with_its_reason(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    reason = (
        "/plugins/README.txt: not a loadable controllerbus plugin wheel; nothing was "
        "installed.\n  - not a wheel: the name does not end in .whl"
    )
    write_manifest(
        state,
        Manifest(
            plugins=[
                ManifestRecord(
                    binary_id="wheel:README.txt",
                    wheel="/plugins/README.txt",
                    status="rejected",
                    error=reason,
                )
            ]
        ),
    )
    result = CliRunner().invoke(cli, ["plugins", "list", "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1].split()[:2] == ["wheel:README.txt", "rejected"]
    assert lines[2] == "    rejected: /plugins/README.txt: not a loadable controllerbus plugin " + (
        "wheel; nothing was installed."
    )
    assert lines[3] == "      - not a wheel: the name does not end in .whl"
