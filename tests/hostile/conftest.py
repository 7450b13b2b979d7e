"""Fixtures of the hostile-input corpus: one good plugin per session."""

from __future__ import annotations

import sys

import pytest

from .harness import GoodPlugin, build_good_plugin

if not sys.platform.startswith("linux"):
    pytest.skip("the hostile corpus inspects /proc (Linux only)", allow_module_level=True)


@pytest.fixture(scope="session")
def good_plugin(tmp_path_factory: pytest.TempPathFactory) -> GoodPlugin:
    """The test plugin (greeter answering ``hello, NAME!``), compiled once."""
    return build_good_plugin(tmp_path_factory.mktemp("hostile-good"), "cbt_hostile")
