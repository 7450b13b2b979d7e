"""The manifest: round trip, atomic writes, clear errors for corrupt files."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from controllerbus.loader import (
    CorruptManifest,
    Manifest,
    ManifestBook,
    ManifestRecord,
    read_manifest,
    verify_wheel,
    wheel_key,
    write_manifest,
)

LOADED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def _record(binary_id: str = "demo", **changes: object) -> ManifestRecord:
    fields: dict[str, object] = {
        "binary_id": binary_id,
        "binary_version": "1.0",
        "build_hash": "0123456789abcdef",
        "wheel": f"/plugins/{binary_id}.whl",
        "wheel_sha256": "ab" * 32,
        "generation": "ab" * 32,
        "status": "active",
        "factories": ["demo/echo"],
        "loaded_at": LOADED,
        "load_ms": 12.5,
    }
    fields.update(changes)
    return ManifestRecord.model_validate(fields)


def test_missing_manifest_is_empty(tmp_path: Path) -> None:
    assert read_manifest(tmp_path) == Manifest()


def test_round_trip_and_file_shape(tmp_path: Path) -> None:
    manifest = (
        Manifest().upsert(_record("zeta")).upsert(_record("alpha", status="failed", error="boom"))
    )
    path = write_manifest(tmp_path, manifest)
    assert path == tmp_path / "manifest.json"
    assert os.listdir(tmp_path) == ["manifest.json"]  # no temp file left behind
    assert read_manifest(tmp_path) == manifest
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    assert [p["binary_id"] for p in raw["plugins"]] == ["alpha", "zeta"]
    assert raw["plugins"][1]["loaded_at"] == "2026-01-02T03:04:05.678000Z"
    assert raw["plugins"][0]["error"] == "boom"


def test_upsert_replaces_by_binary_id_and_lists_generations() -> None:
    manifest = Manifest().upsert(_record("a", generation="g1"))
    manifest = manifest.upsert(_record("b", generation="g2", status="unloaded"))
    manifest = manifest.upsert(_record("a", generation="g3", binary_version="2.0"))
    assert [(r.binary_id, r.generation) for r in manifest.plugins] == [("a", "g3"), ("b", "g2")]
    record = manifest.get("a")
    assert record is not None
    assert record.binary_version == "2.0"
    assert manifest.generations() == {"g3"}
    assert manifest.generations(("active", "unloaded")) == {"g2", "g3"}
    assert manifest.remove("a").generations() == set()
    assert manifest.get("nope") is None


def test_wheel_key_for_unknown_binary_id() -> None:
    record = _record(wheel_key("/plugins/broken-1.0-py3-none-any.whl"), status="failed")
    assert record.binary_id == "wheel:broken-1.0-py3-none-any.whl"


def test_records_are_validated() -> None:
    with pytest.raises(ValidationError):
        _record(status="running")
    with pytest.raises(ValidationError):
        _record(loaded_at=datetime(2026, 1, 1))  # naive: not UTC-aware
    with pytest.raises(ValidationError):
        _record(surprise=1)
    aware = _record(loaded_at=datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=2))))
    assert aware.loaded_at is not None
    assert aware.loaded_at.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b'{"version": 1, "plugins": [{"binary_id": "x"}]}', "plugins.0.wheel: Field required"),
        (
            b'{"version": 1, "plugins": [{"binary_id": "x", "wheel": "w", "status": "bad"}]}',
            "plugins.0.status",
        ),
        (b'{"version": 7, "plugins": []}', "manifest version 7 is not supported"),
        (b"[]", "<root>"),
    ],
)
def test_corrupt_manifest_is_a_clear_error(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "manifest.json"
    path.write_bytes(content)
    with pytest.raises(CorruptManifest) as caught:
        read_manifest(tmp_path)
    message = str(caught.value)
    assert str(path) in message
    assert expected in message
    assert f"mv {path} {path}.bad" in message


def test_duplicate_records_are_corrupt(tmp_path: Path) -> None:
    record = json.loads(_record().model_dump_json())
    (tmp_path / "manifest.json").write_text(json.dumps({"version": 1, "plugins": [record, record]}))
    with pytest.raises(CorruptManifest, match="duplicate records for demo"):
        read_manifest(tmp_path)


def test_failed_write_keeps_old_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = Manifest().upsert(_record("old"))
    write_manifest(tmp_path, old)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        write_manifest(tmp_path, old.upsert(_record("new")))
    monkeypatch.undo()
    assert read_manifest(tmp_path) == old
    assert os.listdir(tmp_path) == ["manifest.json"]


_ids = st.text(alphabet="abcdefghij-/.:0123456789", min_size=1, max_size=12)


@given(
    ids=st.lists(_ids, max_size=6),
    statuses=st.lists(st.sampled_from(["active", "failed", "unloaded"]), min_size=6, max_size=6),
)
def test_upsert_keeps_one_record_per_id(ids: list[str], statuses: list[str]) -> None:
    manifest = Manifest()
    for binary_id, status in zip(ids, statuses, strict=False):
        manifest = manifest.upsert(_record(binary_id, status=status))
    keys = [r.binary_id for r in manifest.plugins]
    assert keys == sorted(set(ids))
    assert Manifest.model_validate_json(manifest.model_dump_json()) == manifest


# -- the book: one writer, a record per outcome -------------------------------------------------


def test_book_records_each_outcome_and_writes_it(hello_wheel: Path, tmp_path: Path) -> None:
    verified = verify_wheel(hello_wheel)
    written: list[ManifestRecord] = []
    book = ManifestBook(tmp_path, on_write=written.append)
    book.loaded(
        verified,
        binary_id="demo",
        binary_version="1.0",
        wheel=hello_wheel,
        generation=verified.sha256,
        factories=["demo/echo"],
        load_ms=1.23456,
    )
    on_disk = read_manifest(tmp_path).get("demo")
    assert on_disk is not None
    assert on_disk == book.get("demo") == written[-1]
    assert (on_disk.status, on_disk.build_hash, on_disk.load_ms) == (
        "active",
        verified.build_hash,
        1.235,
    )

    # A failed reload while the old generation serves keeps the record active.
    book.failed("demo", hello_wheel, verified, "boom", serving=True)
    after = read_manifest(tmp_path).get("demo") or on_disk
    history = {"error_time", "failures"}
    assert after.model_dump(exclude=history) == {
        **on_disk.model_dump(exclude=history),
        "error": "boom",
    }
    assert [(f.error, f.wheel) for f in after.failures] == [("boom", str(hello_wheel))]

    unloaded = book.unloaded("demo", ["class X survived"])
    assert unloaded is not None
    assert unloaded.status == "unloaded"
    assert unloaded.leaks == ["class X survived"]
    assert unloaded.unloaded_at is not None
    assert book.unloaded("nobody", []) is None

    interrupted = book.interrupted("demo")
    assert interrupted is not None
    assert "interrupted" in (interrupted.error or "")

    failed = book.failed(wheel_key(hello_wheel), hello_wheel, None, "not a zip", serving=False)
    assert (failed.status, failed.wheel_sha256, failed.error) == ("failed", "", "not a zip")
    assert len(written) == 5
    assert read_manifest(tmp_path) == book.manifest


def test_book_reads_records_of_a_previous_process_as_unloaded(tmp_path: Path) -> None:
    wheels = {name: tmp_path / f"{name}.whl" for name in ("a", "b")}
    for wheel in wheels.values():
        wheel.write_bytes(b"")
    records = [
        _record("a", wheel=str(wheels["a"])),
        _record("b", status="failed", wheel=str(wheels["b"])),
        _record("gone", status="failed"),  # its wheel does not exist: pruned
    ]
    write_manifest(tmp_path, Manifest(plugins=records))
    book = ManifestBook(tmp_path)
    assert [(r.binary_id, r.status) for r in book.manifest.plugins] == [
        ("a", "unloaded"),
        ("b", "failed"),
    ]


def test_book_moves_an_unreadable_manifest_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    book = ManifestBook(tmp_path)
    assert book.manifest == Manifest()
    assert len(list(tmp_path.glob("manifest.json.corrupt-*"))) == 1
    assert "moved it to" in caplog.text
