"""Check that a plugin wheel is exactly what its sources compile to (``cbus-compile verify``).

:func:`verify_wheel` reads the naming options back from the wheel itself (the
entry point gives ``BINARY_ID`` and the module; the module's ``BINARY_VERSION``
with its build hash put back as ``{buildHash}`` gives the template; the module
name less the binary-id slug gives the build prefix), compiles the targets with
them into a temporary directory, and compares the bytes. Anything else than
identical bytes is a :class:`~controllerbus.compiler.errors.VerifyFailed` that
lists the differing members, so a reviewer (or the loader's trust checks) can see
*what* is not reproducible.
"""

from __future__ import annotations

import ast
import configparser
import hashlib
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from controllerbus.compiler.api import CompileResult, compile_plugin
from controllerbus.compiler.errors import VerifyFailed
from controllerbus.compiler.options import CompileOptions
from controllerbus.compiler.plan import BUILD_HASH_PLACEHOLDER, HASH_SHORT, slugify
from controllerbus.plugin import ENTRY_POINT_GROUP

__all__ = ["options_of_wheel", "verify_wheel"]


def options_of_wheel(wheel: Path) -> CompileOptions:
    """The naming options ``wheel`` was compiled with, read from its contents.

    Raises:
        VerifyFailed: ``wheel`` is not a plugin wheel made by ``cbus-compile``.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
            parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
            parser.optionxform = str  # type: ignore[assignment,method-assign]
            parser.read_string(archive.read(entry_points).decode())
            (binary_id, value), *_ = parser.items(ENTRY_POINT_GROUP)
            module = value.split(":")[0].strip()
            constants = _constants(archive.read(f"{module}.py"))
    except (
        OSError,
        KeyError,
        StopIteration,
        ValueError,
        zipfile.BadZipFile,
        configparser.Error,
        SyntaxError,
    ) as exc:
        raise VerifyFailed(wheel, [f"not a cbus-compile plugin wheel: {exc}"]) from exc
    build_hash = constants.get("BUILD_HASH", "")
    version = constants.get("BINARY_VERSION", "")
    slug = slugify(binary_id)
    prefix = module[: len(module) - len(slug)] if slug and module.endswith(slug) else module
    return CompileOptions(
        binary_id=binary_id,
        binary_version=version.replace(build_hash[:HASH_SHORT], BUILD_HASH_PLACEHOLDER),
        build_prefix=prefix,
    )


def _constants(source: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            found[node.targets[0].id] = node.value.value
    return found


def verify_wheel(wheel: Path, targets: Sequence[Path], *, isolated: bool = False) -> CompileResult:
    """Rebuild ``wheel`` from ``targets`` and require identical bytes.

    Args:
        wheel: the plugin wheel to check.
        targets: the project directories it claims to come from.
        isolated: rebuild with ``python -m build`` in a fresh environment.

    Returns:
        the rebuild's result (its wheel is gone once this returns).

    Raises:
        VerifyFailed: the bytes differ; the message lists what differs.
        CompileError: the sources do not compile.
    """
    wheel = wheel.absolute()
    naming = options_of_wheel(wheel)
    with tempfile.TemporaryDirectory(prefix="cbus-verify-") as tmp:
        options = CompileOptions(
            output_dir=Path(tmp) / "out",
            codegen_dir=Path(tmp) / "codegen",
            binary_id=naming.binary_id,
            binary_version=naming.binary_version,
            build_prefix=naming.build_prefix,
            isolated=isolated,
            cleanup=False,
        )
        result = compile_plugin(targets, options)
        differences = _differences(wheel, result.wheel)
    if differences:
        raise VerifyFailed(wheel, differences)
    return result


def _differences(expected: Path, rebuilt: Path) -> list[str]:
    if expected.read_bytes() == rebuilt.read_bytes():
        return []
    lines: list[str] = []
    if expected.name != rebuilt.name:
        lines.append(f"the sources compile to {rebuilt.name} (another build hash)")
    with zipfile.ZipFile(expected) as old, zipfile.ZipFile(rebuilt) as new:
        before = {i.filename: i for i in old.infolist()}
        after = {i.filename: i for i in new.infolist()}
        for name in sorted(before.keys() - after.keys()):
            lines.append(f"only in the wheel: {name}")
        for name in sorted(after.keys() - before.keys()):
            lines.append(f"only in the rebuild: {name}")
        for name in sorted(before.keys() & after.keys()):
            a, b = old.read(name), new.read(name)
            if a != b:
                lines.append(
                    f"{name}: content differs (sha256 {hashlib.sha256(a).hexdigest()[:12]}"
                    f" vs {hashlib.sha256(b).hexdigest()[:12]})"
                )
            elif before[name].date_time != after[name].date_time:
                lines.append(f"{name}: timestamp differs")
            elif before[name].external_attr != after[name].external_attr:
                lines.append(f"{name}: file mode differs")
    return lines or ["the archive bytes differ (order or compression)"]
