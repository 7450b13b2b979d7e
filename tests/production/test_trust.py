"""The trust file: parsing (pip syntax), checking wheels, re-reading, failing closed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controllerbus.loader.trust import (
    TrustFileError,
    TrustPolicy,
    UntrustedWheel,
    parse_trust_file,
    sha256_of,
)
from controllerbus.loader.trustwriter import write_trust_file

A = "a" * 64
B = "b" * 64
WHEEL = "demo_plugin-1.0.0-py3-none-any.whl"


def test_pip_syntax_with_continuations_comments_and_several_hashes() -> None:
    trust = parse_trust_file(
        f"# pinned by CI\n{WHEEL} \\\n    --hash=sha256:{A} \\\n    --hash=sha256:{B.upper()}\n"
        f"\nAttrs_Lib==23.2.0 --hash=sha256:{A}  # a dependency\n"
    )
    first, second = trust.entries
    assert (first.filename, first.hashes, first.line) == (WHEEL, frozenset({A, B}), 2)
    assert (second.filename, second.name, str(second.version)) == ("", "attrs-lib", "23.2.0")
    assert trust.allows(WHEEL, B)
    assert trust.allows("attrs_lib-23.2.0-py3-none-any.whl", A)
    assert not trust.allows("attrs_lib-23.2.1-py3-none-any.whl", A)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"{WHEEL}\n", "has no --hash=sha256"),
        (f"{WHEEL} --hash=md5:{A[:32]}\n", "is not a sha256 hash"),
        (f"{WHEEL} --hash=sha256:abc\n", "is not a sha256 hash"),
        (f"demo>=1 --hash=sha256:{A}\n", "ranges are not allowed"),
        (f"{WHEEL} --no-deps --hash=sha256:{A}\n", "unexpected '--no-deps'"),
        (f"not-a-wheel.whl --hash=sha256:{A}\n", "is not a wheel file name"),
    ],
)
def test_malformed_lines_are_listed_with_their_line_number(text: str, expected: str) -> None:
    with pytest.raises(TrustFileError) as info:
        parse_trust_file("# ok\n" + text)
    assert "line 2" in str(info.value)
    assert expected in str(info.value)


def test_check_names_the_file_and_its_actual_hash(tmp_path: Path) -> None:
    wheel = tmp_path / WHEEL
    wheel.write_bytes(b"not even a zip: the check must not care")
    actual = sha256_of(wheel)
    trust = parse_trust_file(f"{WHEEL} --hash=sha256:{actual}\n")
    assert trust.check(wheel) == actual

    with pytest.raises(UntrustedWheel) as info:
        parse_trust_file(f"{WHEEL} --hash=sha256:{A}\n", path=tmp_path / "t.txt").check(wheel)
    message = str(info.value)
    assert WHEEL in message
    assert actual in message
    assert "does not match the trust file (line 1" in message
    assert f"{WHEEL} --hash=sha256:{actual}" in message  # what to pin, ready to paste

    with pytest.raises(UntrustedWheel, match="not pinned in the trust file"):
        parse_trust_file(f"other-1.0-py3-none-any.whl --hash=sha256:{actual}\n").check(wheel)


def test_policy_rereads_on_change_and_fails_closed(tmp_path: Path) -> None:
    wheel = tmp_path / WHEEL
    wheel.write_bytes(b"bytes")
    path = tmp_path / "trust.txt"
    path.write_text(f"{WHEEL} --hash=sha256:{A}\n")
    policy = TrustPolicy(path)
    with pytest.raises(UntrustedWheel):
        policy.check(wheel)

    path.write_text(f"{WHEEL} --hash=sha256:{sha256_of(wheel)}\n")
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse clocks
    assert policy.check(wheel) == sha256_of(wheel)

    path.write_text("garbage without a hash\n")
    with pytest.raises(TrustFileError, match="no wheel is trusted"):
        policy.check(wheel)
    with pytest.raises(TrustFileError):  # still closed on the next call (cached)
        policy.check(wheel)

    path.unlink()
    with pytest.raises(TrustFileError, match="cannot stat"):
        policy.check(wheel)


def test_writer_pins_every_wheel_and_reads_back(tmp_path: Path) -> None:
    for name in (WHEEL, "dep-2.0-py3-none-any.whl"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "notes.txt").write_text("ignored")
    out = tmp_path / "trust.txt"
    text = write_trust_file(tmp_path, out)
    assert out.read_text() == text
    trust = parse_trust_file(text)
    assert [e.filename for e in trust.entries] == [WHEEL, "dep-2.0-py3-none-any.whl"]
    assert trust.allows(WHEEL, sha256_of(tmp_path / WHEEL))
