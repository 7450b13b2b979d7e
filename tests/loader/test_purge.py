"""purge_generation and LeakTracker: the plugin's code really goes away, or we say who holds it."""

from __future__ import annotations

import importlib
import importlib.metadata
import linecache
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from controllerbus.loader import LeakTracker, modules_under, purge_generation
from controllerbus.loader.generation import Generation

LEAKED: list[object] = []


class Registry:
    """A host-side object that keeps plugin objects in an attribute."""

    def __init__(self) -> None:
        self.items: dict[str, object] = {}


REGISTRY = Registry()


def _under(path: Path, entry: str) -> bool:
    return os.path.abspath(entry).startswith(str(path) + os.sep) or os.path.abspath(entry) == str(
        path
    )


def _activate(generation: Generation) -> int:
    """Import the plugin fully (as activation would), touch every cache; track it."""
    plugin: Any = importlib.import_module("cbus_loader_hello.plugin")
    importlib.import_module("cbusns_shared.hello_part")
    controller = plugin.HelloController()
    assert plugin.lookup(controller) is controller  # populates typing's Optional[...] cache
    assert linecache.getline(plugin.__file__, 1)  # what a traceback would do
    assert importlib.metadata.version("cbus-loader-hello") == "1.0.0+cbus.0123456789abcdef"
    return id(controller)


def test_purge_leaves_no_trace(active_generation: Generation) -> None:
    gen = active_generation
    _activate(gen)
    assert "cbus_loader_hello.sub.deep" in modules_under(gen.path)
    probe = LeakTracker()
    tracked = probe.track_generation(gen.path)
    assert tracked >= 6  # 6 modules (with the namespace package) + HelloController
    assert any(_under(gen.path, key) for key in sys.path_importer_cache)

    report = purge_generation(gen.path)

    assert {
        "cbus_loader_hello",
        "cbus_loader_hello.plugin",
        "cbus_loader_hello.sub",
        "cbus_loader_hello.sub.deep",
        "cbusns_shared",
        "cbusns_shared.hello_part",
    } <= set(report.modules)
    assert report.sys_path == (str(gen.site_packages),)
    # The finder of site-packages and of each package directory inside it.
    assert str(gen.site_packages) in report.importer_cache
    assert str(gen.site_packages / "cbus_loader_hello" / "sub") in report.importer_cache
    assert report.linecache >= 1
    assert not [m for m in sys.modules if m.startswith(("cbus_loader_hello", "cbusns_shared"))]
    assert not [p for p in sys.path if _under(gen.path, p)]
    assert not [k for k in sys.path_importer_cache if _under(gen.path, k)]
    assert not [k for k in linecache.cache if _under(gen.path, k)]
    assert probe.survivors() == []
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("cbus_loader_hello")


def test_purge_twice_is_harmless(active_generation: Generation) -> None:
    _activate(active_generation)
    assert purge_generation(active_generation.path).modules
    again = purge_generation(active_generation.path)
    assert again.modules == ()
    assert again.sys_path == ()


def test_leaked_class_is_reported_with_its_holder(active_generation: Generation) -> None:
    _activate(active_generation)
    probe = LeakTracker()
    probe.track_generation(active_generation.path)
    LEAKED.append(sys.modules["cbus_loader_hello.plugin"].HelloController)
    try:
        purge_generation(active_generation.path)
        survivors = probe.survivors()
        labels = [s.label for s in survivors]
        print(*survivors, sep="\n")
        # HelloController's methods keep the plugin module's globals, and so the
        # `deep` module imported there, alive: the probe names both.
        assert labels == [
            "class cbus_loader_hello.plugin.HelloController",
            "module cbus_loader_hello.sub.deep",
        ]
        survivor, deep = survivors
        assert any(
            "global 'deep' of unloaded module cbus_loader_hello.plugin" in h for h in deep.holders
        ), deep.holders
        assert survivor.kind == "type"
        assert any(f"global 'LEAKED' of module {__name__}" in h for h in survivor.holders), (
            survivor.holders
        )
        assert "still alive, held by" in str(survivor)
    finally:
        LEAKED.clear()
    assert probe.survivors() == []


def test_leaked_instance_held_in_an_attribute(active_generation: Generation) -> None:
    _activate(active_generation)
    plugin: Any = sys.modules["cbus_loader_hello.plugin"]
    probe = LeakTracker()
    controller = plugin.HelloController()
    probe.track(controller, "controller demo/1")
    REGISTRY.items["demo"] = controller
    del controller, plugin
    try:
        purge_generation(active_generation.path)
        (survivor,) = probe.survivors()
        assert survivor.label == "controller demo/1"
        text = " ".join(survivor.holders)
        assert "attribute 'items' of a Registry object" in text, survivor.holders
        assert f"global 'REGISTRY' of module {__name__}" in text, survivor.holders
    finally:
        REGISTRY.items.clear()
    assert probe.alive() == []


def test_local_of_running_function_is_reported(active_generation: Generation) -> None:
    _activate(active_generation)
    probe = LeakTracker()
    probe.track_generation(active_generation.path)
    module = sys.modules["cbus_loader_hello.sub.deep"]
    purge_generation(active_generation.path)
    (survivor,) = probe.survivors()
    assert survivor.label == "module cbus_loader_hello.sub.deep"
    # Locals of a running function are invisible to gc.get_referrers (Python 3.11+
    # keeps them outside any frame object); the report says so instead of nothing.
    assert survivor.holders == ()
    assert "local variable of a running function" in str(survivor)
    del module
    assert probe.survivors() == []


def test_untrackable_object_is_a_clear_type_error() -> None:
    with pytest.raises(TypeError, match="do not support weak references"):
        LeakTracker().track((1, 2))


def test_shared_namespace_package_survives_without_the_plugin_portion(
    active_generation: Generation, tmp_path: Path
) -> None:
    host_part = tmp_path / "host" / "cbusns_shared" / "host_part"
    host_part.mkdir(parents=True)
    (host_part / "__init__.py").write_text("PART = 'host'\n")
    sys.path.append(str(tmp_path / "host"))
    try:
        importlib.import_module("cbusns_shared.host_part")
        importlib.import_module("cbusns_shared.hello_part")
        namespace = sys.modules["cbusns_shared"]
        assert hasattr(namespace, "hello_part")
        report = purge_generation(active_generation.path)
        assert report.shared_namespaces == ("cbusns_shared",)
        assert "cbusns_shared.hello_part" in report.modules
        assert "cbusns_shared.hello_part" not in sys.modules
        assert sys.modules["cbusns_shared"] is namespace
        assert not hasattr(namespace, "hello_part")  # the parent's link is cut too
        assert importlib.import_module("cbusns_shared.host_part").PART == "host"
    finally:
        sys.path.remove(str(tmp_path / "host"))
        purge_generation(tmp_path / "host")
    assert "cbusns_shared" not in sys.modules


def test_symlinked_path_entry_is_an_alias(active_generation: Generation, tmp_path: Path) -> None:
    sys.path.remove(str(active_generation.site_packages))
    link = tmp_path / "link"
    link.symlink_to(active_generation.site_packages)
    sys.path.insert(0, str(link))
    module = importlib.import_module("cbus_loader_hello.plugin")
    assert module.__file__ is not None
    assert module.__file__.startswith(str(link))
    del module
    report = purge_generation(active_generation.path)
    assert "cbus_loader_hello.plugin" in report.modules
    assert report.sys_path == (str(link),)
    assert not [k for k in sys.path_importer_cache if k.startswith(str(link))]


def test_import_hook_installed_by_plugin_code_is_removed(tmp_path: Path) -> None:
    (tmp_path / "cbus_hooky.py").write_text(
        "import sys\n"
        "class HookyFinder:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        return None\n"
        "sys.meta_path.append(HookyFinder())\n"
    )
    sys.path.insert(0, str(tmp_path))
    importlib.import_module("cbus_hooky")
    assert any(type(f).__name__ == "HookyFinder" for f in sys.meta_path)
    probe = LeakTracker()
    probe.track_generation(tmp_path)
    report = purge_generation(tmp_path)
    assert report.hooks == ("sys.meta_path: HookyFinder",)
    assert not any(type(f).__name__ == "HookyFinder" for f in sys.meta_path)
    assert probe.survivors() == []
