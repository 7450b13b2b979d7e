"""The loader package: cheap to import, independent of the bus, errors rooted in LoaderError."""

from __future__ import annotations

import subprocess
import sys

import pytest

import controllerbus.loader as loader
from controllerbus.errors import ControllerBusError, LoaderError
from controllerbus.loader import errors


def _modules_after(code: str) -> set[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(result.stdout.split())


def test_import_is_cheap() -> None:
    modules = _modules_after("import controllerbus.loader")
    heavy = {"installer", "pydantic", "filelock", "virtualenv", "packaging", "venv"}
    assert not heavy & {m.split(".")[0] for m in modules}


def test_loader_does_not_import_the_bus_or_compiler() -> None:
    modules = _modules_after(
        "import controllerbus.loader as l\nfor name in l.__all__: getattr(l, name)"
    )
    assert "controllerbus.loader.purge" in modules
    assert not [m for m in modules if m.startswith(("controllerbus.bus", "controllerbus.compiler"))]


def test_all_names_resolve() -> None:
    for name in loader.__all__:
        assert getattr(loader, name) is not None
    with pytest.raises(AttributeError):
        loader.nope  # noqa: B018


@pytest.mark.parametrize("name", errors.__all__)
def test_errors_derive_from_loader_error(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, LoaderError)
    assert issubclass(cls, ControllerBusError)
