"""Every reference into the docs points at a file and a heading that exist.

The repository is self-contained: a docstring, comment or page cites
``docs/<page>.md#<heading>`` (or, inside ``docs/``, ``<page>.md#<heading>`` and
``#<heading>``), never a spec file that lives outside the repository.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SCANNED = ("src", "tests", "docs", "benchmarks", "plugins", "examples")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".txt"}

# Spec files the project was written from; they are not in the repository.
OUTSIDE = tuple(name + ".md" for name in ("BUS", "NOTES", "DESIGN", "STYLE"))
# Owned by the compiler branch, which rewrites this docstring (issue 8).
CODE_REF = re.compile(r"docs/([a-z0-9_-]+\.md)(?:#([a-z0-9-]+))?")
DOC_LINK = re.compile(r"\]\((?:([a-z0-9_-]+\.md))?(?:#([a-z0-9-]+))?\)")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to ``-``."""
    text = re.sub(r"`([^`]*)`", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    anchors, in_code = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            anchors.add(_slug(m.group(1)))
    return anchors


def _files() -> list[Path]:
    found = []
    for top in SCANNED:
        for path in sorted((REPO / top).rglob("*")):
            if path.suffix in SUFFIXES and path.is_file() and ".venv" not in path.parts:
                found.append(path)
    return found


def _references() -> list[tuple[Path, str, str | None]]:
    refs = []
    for path in _files():
        text = path.read_text(errors="replace")
        for page, anchor in CODE_REF.findall(text):
            refs.append((path, page, anchor or None))
        if path.parent == DOCS:
            for page, anchor in DOC_LINK.findall(text):
                refs.append((path, page or path.name, anchor or None))
    return refs


def test_slug_matches_github() -> None:
    assert _slug("The `ApplyConfigSet` directive, again!") == "the-applyconfigset-directive-again"
    assert _slug("Host-deps: what wins") == "host-deps-what-wins"


def test_the_scan_finds_references() -> None:
    # A scan that found nothing would pass vacuously.
    assert len(_references()) > 20


@pytest.mark.parametrize(
    ("path", "page", "anchor"),
    [
        pytest.param(*ref, id=f"{ref[0].relative_to(REPO)}->{ref[1]}#{ref[2]}")
        for ref in _references()
    ],
)
def test_reference_points_at_an_existing_heading(path: Path, page: str, anchor: str | None) -> None:
    target = DOCS / page
    assert target.is_file(), f"{path.relative_to(REPO)} cites docs/{page}, which does not exist"
    if anchor is not None:
        assert anchor in _anchors(target), (
            f"{path.relative_to(REPO)} cites docs/{page}#{anchor}; headings there: "
            f"{sorted(_anchors(target))}"
        )


def test_no_reference_to_spec_files_outside_the_repository() -> None:
    offenders = []
    for path in _files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{path.relative_to(REPO)}: {name}" for name in OUTSIDE if name in text]
    assert offenders == [], "cite a docs/*.md heading instead:\n" + "\n".join(offenders)
