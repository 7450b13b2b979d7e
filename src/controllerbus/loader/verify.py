"""Verify a plugin wheel completely before anything touches the disk.

:func:`verify_wheel` reads the wheel file once into memory, hashes it, and checks
the archive against every rule below. It collects all problems and raises one
:class:`~controllerbus.loader.errors.InvalidWheel` listing them; it never writes.

Rules (why each exists):

* **Zip integrity**: the archive opens, every member decompresses and its CRC
  matches (``installer`` would otherwise fail half-way, after writing files).
* **Filename**: a valid wheel filename (``packaging.utils.parse_wheel_filename``)
  whose name and version match the single ``.dist-info`` directory and METADATA.
* **WHEEL**: ``Wheel-Version: 1.x`` and ``Root-Is-Purelib: true``. Platform wheels are
  rejected: generations are installed for the host interpreter only and plugins
  are pure Python (the compiler builds ``py3-none-any``). The filename tags must be
  supported by the running interpreter.
* **RECORD**: every member is listed with a hash (sha256 or stronger) and size that
  match; every RECORD line names a member; RECORD itself is unhashed.
  ``installer.install`` checks none of this (docs/loader.md#load), so it happens here.
* **Member names**, checked as stored (raw bytes, see
  :mod:`~controllerbus.loader.members`): no NUL, control or format characters, no
  backslashes, absolute paths, drive letters, ``..``/``.``/empty components, no
  non-ASCII name without the UTF-8 flag, no Unicode-path extra field, NFKC form
  only; no duplicates, including names equal after case folding or Unicode
  normalisation.
* **Member types** (Unix mode in ``external_attr``): regular files and directories
  only; no symlinks, devices, FIFOs or sockets, no setuid/setgid bits, no encrypted
  members, no members whose data overlap.
* **Layout**: every member lies in a top-level package directory (an identifier), a
  top-level module ``<identifier>.py``, the ``.dist-info`` directory, or the
  ``.data`` directory. Anything else (a ``.pth`` file that would run code at start-up
  of a generation's interpreter, a stray ``LICENSE`` at the root, a second
  ``.dist-info``) is rejected. ``__pycache__`` directories are rejected because
  installers skip them. The top-level name ``controllerbus`` is reserved: the host
  owns the interface types, and a vendored copy would break ``isinstance`` checks.
* **.data**: only the ``purelib``, ``platlib`` and ``scripts`` sub-directories. The
  first two follow the root layout rules and may not duplicate a root member
  (both land in the generation's site-packages); ``scripts`` holds flat files only.
  ``data`` and ``headers`` are rejected: they would write outside site-packages
  into the generation's venv (``bin/python``, ``pyvenv.cfg``).
* **Entry points**: at least one entry point in group ``controllerbus.plugins``, each
  ``module:attr`` with a module that this wheel ships (an entry point into host
  code would survive the plugin's unload). This check accepts several, so it can
  report on any such wheel; the plugin host loads exactly one plugin per wheel and
  refuses a wheel with several
  (:func:`~controllerbus.loader.activation.entry_point_of`).
* **Size** (:class:`~controllerbus.loader.members.WheelLimits`): file size, member
  count, total uncompressed size, compression ratio and ``.dist-info`` text sizes are
  checked from the zip directory before any member is decompressed.
* **Trust** (``strict_permissions``): the file is checked on the descriptor it is
  read from, see :mod:`~controllerbus.loader.permissions`.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import csv
import hashlib
import io
import keyword
import logging
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from packaging.metadata import parse_email
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from controllerbus.loader.candidates import wheel_name_issue
from controllerbus.loader.errors import InvalidWheel
from controllerbus.loader.members import (
    DEFAULT_LIMITS,
    WheelLimits,
    check_members,
    declared_member_count,
    member_name_issues,
)
from controllerbus.loader.permissions import open_checked
from controllerbus.plugin import ENTRY_POINT_GROUP, HOST_PACKAGE

__all__ = [
    "DEFAULT_LIMITS",
    "RESERVED_TOP_LEVEL",
    "PluginEntryPoint",
    "RecordItem",
    "VerifiedWheel",
    "WheelLimits",
    "build_hash_of",
    "verify_wheel",
]

logger = logging.getLogger(__name__)

RESERVED_TOP_LEVEL = frozenset({HOST_PACKAGE})
"""Top-level names a plugin may not ship: the host owns them."""

_WEAK_HASHES = frozenset({"md5", "sha1"})
_ALLOWED_DATA_SCHEMES = frozenset({"purelib", "platlib", "scripts"})
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# installer derives the .data directory from the raw filename fields, so we must too.
_RAW_WHEEL_NAME = re.compile(r"^(?P<dist>.+?)-(?P<ver>.*?)(?:-\d[^-]*?)?-.+?-.+?-.+?\.whl$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PluginEntryPoint:
    """One entry point of group ``controllerbus.plugins``.

    Attributes:
        name: the entry point's name (left of ``=``).
        module: dotted module path, shipped by this wheel.
        attr: dotted attribute path inside ``module``.
    """

    name: str
    module: str
    attr: str

    @property
    def value(self) -> str:
        """The entry point value as written in ``entry_points.txt``: ``module:attr``."""
        return f"{self.module}:{self.attr}"


@dataclass(frozen=True, slots=True)
class RecordItem:
    """One verified RECORD line: archive path, ``algo=digest`` (empty for RECORD), size."""

    path: str
    hash: str
    size: int | None


@dataclass(frozen=True, slots=True)
class VerifiedWheel:
    """A wheel that passed :func:`verify_wheel`, with what the loader needs from it.

    Attributes:
        path: the wheel file as given.
        sha256: hex sha256 of the whole file (the generation id).
        size: file size in bytes.
        name: canonical distribution name.
        version: the distribution version (may carry ``+cbus.<hash>``).
        tags: the filename's compatibility tags.
        dist_info: name of the ``.dist-info`` directory inside the archive.
        entry_points: the ``controllerbus.plugins`` entry points, sorted by name.
        requires_dist: ``Requires-Dist`` lines of METADATA, as written.
        top_level: top-level packages and modules the wheel installs, sorted.
        records: every RECORD line, in RECORD order.
    """

    path: Path
    sha256: str
    size: int
    name: NormalizedName
    version: Version
    tags: frozenset[Tag]
    dist_info: str
    entry_points: tuple[PluginEntryPoint, ...]
    requires_dist: tuple[str, ...]
    top_level: tuple[str, ...]
    records: tuple[RecordItem, ...] = field(repr=False)

    @property
    def entry_point_map(self) -> dict[str, str]:
        """Entry point name → ``module:attr``."""
        return {ep.name: ep.value for ep in self.entry_points}

    @property
    def build_hash(self) -> str:
        """The compiler's build hash from a ``+cbus.<hash>`` local label, else ``""``."""
        return build_hash_of(self.version)


def build_hash_of(version: Version | str) -> str:
    """Return the build hash of a version's ``+cbus.<hash>`` local label, or ``""``.

    Args:
        version: a :class:`~packaging.version.Version` or a version string.

    Raises:
        packaging.version.InvalidVersion: ``version`` is a string that is not a version.
    """
    parsed = version if isinstance(version, Version) else Version(version)
    local = parsed.local or ""
    parts = local.split(".")
    if len(parts) >= 2 and parts[0] == "cbus":
        return parts[1]
    return ""


def _is_module_file(name: str) -> bool:
    stem, dot, ext = name.rpartition(".")
    return bool(dot) and ext == "py" and stem.isidentifier() and not keyword.iskeyword(stem)


@dataclass(slots=True)
class _Check:
    """Mutable state of one verification; collects every issue."""

    path: Path
    zf: zipfile.ZipFile
    issues: list[str] = field(default_factory=list)
    limits: WheelLimits = DEFAULT_LIMITS
    dist_info: str = ""
    data_dir: str = ""
    top_level: set[str] = field(default_factory=set)
    root_files: set[str] = field(default_factory=set)

    def add(self, issue: str) -> None:
        self.issues.append(issue)

    def read_text(self, member: str) -> str | None:
        try:
            size = self.zf.getinfo(member).file_size
            if size > self.limits.text_bytes:
                self.add(
                    f"{member} is {size} bytes, more than the limit of {self.limits.text_bytes}"
                )
                return None
            return self.zf.read(member).decode("utf-8")
        except KeyError:
            self.add(f"{member} is missing")
        except UnicodeDecodeError:
            self.add(f"{member} is not UTF-8 text")
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            # Reported again (per member) by the content pass; keep the message short.
            self.add(f"{member} cannot be read: {exc}")
        return None


def verify_wheel(
    path: str | os.PathLike[str],
    *,
    supported_tags: Collection[Tag] | None = None,
    limits: WheelLimits = DEFAULT_LIMITS,
    strict_permissions: bool = False,
    plugin: bool = True,
) -> VerifiedWheel:
    """Check a plugin wheel against every rule in this module's docstring.

    Reads the file once into memory, from the descriptor its checks ran on; writes
    nothing.

    Args:
        path: the ``.whl`` file.
        supported_tags: tags the target interpreter accepts; default: the running one's
            (``packaging.tags.sys_tags()``).
        limits: size limits checked before any member is decompressed.
        strict_permissions: refuse a file that it or a directory above it could be
            written by someone else (:mod:`~controllerbus.loader.permissions`).
        plugin: require a ``controllerbus.plugins`` entry point; ``False`` for a
            plugin's dependency wheel (every other rule still applies).

    Returns:
        The verified wheel's identity, entry points, requirements and layout.

    Raises:
        InvalidWheel: with every problem found (unreadable file, bad zip, CRC error,
            RECORD mismatch, unsafe path, bad layout, missing entry point, ...).
        InsecurePath: ``strict_permissions`` and the file is not trusted.
    """
    wheel_path = Path(path)
    issues: list[str] = []
    file_name: NormalizedName | None = None
    file_version: Version | None = None
    tags: frozenset[Tag] = frozenset()
    # The same name and tag rules (and words) as the plugins-directory scan.
    name_issue = wheel_name_issue(wheel_path.name, supported_tags)
    if name_issue is not None:
        issues.append(name_issue)
    with contextlib.suppress(InvalidWheelFilename):
        file_name, file_version, _build, tags = parse_wheel_filename(wheel_path.name)
    data = _read_wheel(wheel_path, issues, limits, strict_permissions=strict_permissions)
    sha256 = hashlib.sha256(data).hexdigest()
    declared = declared_member_count(data)
    if declared is not None and declared > limits.members:
        issues.append(
            f"the archive has {declared} members, more than the limit of {limits.members}"
        )
        raise InvalidWheel(wheel_path, issues)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except UnicodeDecodeError as exc:
        issues.append(f"a member name is marked UTF-8 (zip flag bit 11) but is not UTF-8: {exc}")
        raise InvalidWheel(wheel_path, issues) from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        issues.append(f"not a valid zip archive ({exc}); the file may be truncated")
        raise InvalidWheel(wheel_path, issues) from exc

    with zf:
        check = _Check(wheel_path, zf, issues, limits=limits)
        infos = zf.infolist()
        member_issues, small_enough = check_members(infos, data, limits)
        issues.extend(member_issues)
        _find_dist_info(check, infos, file_name, file_version)
        raw = _RAW_WHEEL_NAME.match(wheel_path.name)
        if raw:
            check.data_dir = f"{raw['dist']}-{raw['ver']}.data"
        _check_layout(check, infos)
        # Decompressing a zip bomb is the attack; a too-large archive is not read.
        records = _check_record(check, infos, read_contents=small_enough)
        meta_name, meta_version, requires = _check_metadata(check, file_name, file_version)
        _check_wheel_file(check)
        entry_points = _check_entry_points(check) if plugin else ()

    name = file_name or meta_name
    version = file_version or meta_version
    if issues or name is None or version is None:
        if not issues:
            issues.append("cannot determine the distribution name and version")
        raise InvalidWheel(wheel_path, issues)
    logger.debug("verified wheel %s (sha256 %s)", wheel_path, sha256, extra={"wheel": sha256})
    return VerifiedWheel(
        path=wheel_path,
        sha256=sha256,
        size=len(data),
        name=name,
        version=version,
        tags=tags,
        dist_info=check.dist_info,
        entry_points=entry_points,
        requires_dist=requires,
        top_level=tuple(sorted(check.top_level)),
        records=records,
    )


def _read_wheel(
    path: Path, issues: list[str], limits: WheelLimits, *, strict_permissions: bool
) -> bytes:
    """The file's bytes, read from the descriptor that was checked (regular, small)."""
    try:
        fd, st = open_checked(path, strict=strict_permissions)
    except OSError as exc:
        raise InvalidWheel(path, [*issues, f"cannot read the file: {exc}"]) from exc
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise InvalidWheel(path, [*issues, f"not a regular file ({kind})"])
    with os.fdopen(fd, "rb") as stream:
        if st.st_size > limits.wheel_bytes:
            issues.append(f"the file is larger than the limit of {limits.wheel_bytes} bytes")
            raise InvalidWheel(path, issues)
        try:
            data = stream.read(limits.wheel_bytes + 1)
        except OSError as exc:
            raise InvalidWheel(path, [*issues, f"cannot read the file: {exc}"]) from exc
    if len(data) > limits.wheel_bytes:
        issues.append(f"the file grew past the limit of {limits.wheel_bytes} bytes while read")
        raise InvalidWheel(path, issues)
    return data


def _find_dist_info(
    check: _Check,
    infos: list[zipfile.ZipInfo],
    file_name: NormalizedName | None,
    file_version: Version | None,
) -> None:
    tops = sorted({info.filename.split("/", 1)[0] for info in infos})
    dist_infos = [top for top in tops if top.endswith(".dist-info")]
    if len(dist_infos) != 1:
        found = ", ".join(dist_infos) or "none"
        check.add(f"expected exactly one .dist-info directory, found {found}")
        return
    check.dist_info = dist_infos[0]
    stem = check.dist_info[: -len(".dist-info")]
    di_name, dash, di_version = stem.rpartition("-")
    if not dash:
        check.add(f"{check.dist_info}: name is not '<name>-<version>.dist-info'")
        return
    if file_name is not None and canonicalize_name(di_name) != file_name:
        check.add(f"{check.dist_info} does not match the filename's distribution {file_name!r}")
    try:
        if file_version is not None and Version(di_version) != file_version:
            check.add(f"{check.dist_info} does not match the filename's version {file_version}")
    except InvalidVersion:
        check.add(f"{check.dist_info}: {di_version!r} is not a valid version")


def _layout_issue(check: _Check, rel: str, name: str) -> None:
    """Check ``rel`` (a path relative to site-packages) against the package layout."""
    parts = rel.rstrip("/").split("/")
    if "__pycache__" in parts:
        check.add(f"{name!r}: __pycache__ in a wheel (installers skip it); rebuild without it")
        return
    top = parts[0]
    is_dir_entry = rel.endswith("/")
    if len(parts) == 1 and not is_dir_entry:
        if not _is_module_file(top):
            check.add(
                f"{name!r}: outside the plugin layout (allowed at the top level: package "
                f"directories, '<module>.py', {check.dist_info or '<name>.dist-info'}/, "
                f"{check.data_dir or '<name>.data'}/)"
            )
            return
        top = top[:-3]
    elif not top.isidentifier() or keyword.iskeyword(top):
        check.add(f"{name!r}: top-level directory {top!r} is not a Python package name")
        return
    if top in RESERVED_TOP_LEVEL:
        check.add(
            f"{name!r}: the wheel ships the {top!r} package, which the host owns; declare it "
            "as a requirement instead of vendoring it"
        )
        return
    check.top_level.add(top)
    if not is_dir_entry:
        if rel in check.root_files:
            check.add(f"{name!r}: installs to the same path as another member")
        check.root_files.add(rel)


def _check_layout(check: _Check, infos: list[zipfile.ZipInfo]) -> None:
    # Root members first, then .data members: a .data/purelib duplicate of a root
    # member is then reported on the .data member.
    data_members: list[str] = []
    for info in infos:
        name = info.filename
        if member_name_issues(name):
            continue  # already reported; layout of an unsafe name means nothing
        top = name.split("/", 1)[0]
        if check.dist_info and top == check.dist_info:
            continue
        if check.data_dir and top == check.data_dir:
            data_members.append(name)
        elif top.endswith((".data", ".dist-info")) and "/" in name:
            check.add(f"{name!r}: {top}/ is not this wheel's .dist-info or .data directory")
        else:
            _layout_issue(check, name, name)
    for name in data_members:
        rest = name.split("/", 1)[1] if "/" in name else ""
        if not rest:
            continue
        scheme, _, sub = rest.partition("/")
        if scheme not in _ALLOWED_DATA_SCHEMES:
            check.add(
                f"{name!r}: .data/{scheme} is not supported (only "
                f"{', '.join(sorted(_ALLOWED_DATA_SCHEMES))}); it would write outside "
                "site-packages"
            )
        elif not sub:
            continue
        elif scheme == "scripts":
            if "/" in sub.rstrip("/"):
                check.add(f"{name!r}: scripts must be files directly in .data/scripts/")
        else:
            _layout_issue(check, sub, name)


def _iter_member_bytes(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    with zf.open(info) as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


def _check_record(
    check: _Check, infos: list[zipfile.ZipInfo], *, read_contents: bool
) -> tuple[RecordItem, ...]:
    from installer.records import InvalidRecordEntry, RecordEntry, parse_record_file

    record_name = f"{check.dist_info}/RECORD" if check.dist_info else ""
    expected: dict[str, RecordEntry] = {}
    items: list[RecordItem] = []
    record_text = check.read_text(record_name) if record_name else None
    if record_text is not None:
        try:
            # Not splitlines(): it also splits at U+0085 and U+2028, which a hostile
            # member name may contain; csv's own line handling is the RECORD format.
            for elements in parse_record_file(io.StringIO(record_text, newline="")):
                try:
                    line = RecordEntry.from_elements(*elements)
                except InvalidRecordEntry as exc:
                    check.add(f"RECORD line for {elements[0]!r} is invalid: {exc}")
                    continue
                if line.path in expected:
                    check.add(f"RECORD lists {line.path!r} twice")
                expected[line.path] = line
                items.append(
                    RecordItem(line.path, str(line.hash_) if line.hash_ else "", line.size)
                )
        except (ValueError, csv.Error, InvalidRecordEntry) as exc:
            check.add(f"RECORD is not a valid CSV file: {exc}")

    signatures = {f"{check.dist_info}/RECORD.jws", f"{check.dist_info}/RECORD.p7s"}
    for info in infos:
        name = info.filename
        if name.endswith("/"):
            continue
        entry: RecordEntry | None = expected.pop(name) if name in expected else None
        if name in signatures:
            continue
        algorithm = "sha256"
        if name == record_name:
            if entry is not None and (entry.hash_ is not None or entry.size is not None):
                check.add("RECORD lists a hash or size for itself (it must leave both empty)")
        elif record_text is not None and entry is None:
            check.add(f"{name!r} is not listed in RECORD")
        elif entry is not None:
            hash_ = entry.hash_
            if hash_ is None or entry.size is None:
                check.add(f"{name!r}: RECORD gives no hash or size")
            elif hash_.name in _WEAK_HASHES or hash_.name not in hashlib.algorithms_guaranteed:
                check.add(f"{name!r}: RECORD uses hash {hash_.name!r}; use sha256 or stronger")
                entry = None
            else:
                algorithm = hash_.name
        if not read_contents:
            continue
        # Read every member even without a usable RECORD: that is the CRC check.
        digest = hashlib.new(algorithm)
        size = 0
        try:
            for chunk in _iter_member_bytes(check.zf, info):
                digest.update(chunk)
                size += len(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            check.add(f"{name!r} is corrupt: {exc}")
            continue
        if entry is None or entry.hash_ is None or entry.size is None or name == record_name:
            continue
        actual = base64.urlsafe_b64encode(digest.digest()).decode("ascii").rstrip("=")
        if actual != entry.hash_.value or size != entry.size:
            check.add(f"{name!r}: content does not match its RECORD hash/size")
    for missing in expected:
        if missing not in signatures:
            check.add(f"RECORD lists {missing!r}, which the archive does not contain")
    return tuple(items)


def _headers(text: str) -> Mapping[str, str]:
    message = HeaderParser().parsestr(text)
    return {key: str(value) for key, value in message.items()}


def _check_wheel_file(check: _Check) -> None:
    if not check.dist_info:
        return
    text = check.read_text(f"{check.dist_info}/WHEEL")
    if text is None:
        return
    headers = _headers(text)
    wheel_version = headers.get("Wheel-Version", "")
    if not wheel_version.startswith("1."):
        check.add(f"WHEEL: Wheel-Version {wheel_version!r} is not supported (need 1.x)")
    purelib = headers.get("Root-Is-Purelib", "").strip().lower()
    if purelib != "true":
        check.add(
            f"WHEEL: Root-Is-Purelib is {purelib or 'missing'!r}: platform (non-pure) wheels "
            "are not supported; build the plugin as pure Python (py3-none-any)"
        )


def _check_metadata(
    check: _Check, file_name: NormalizedName | None, file_version: Version | None
) -> tuple[NormalizedName | None, Version | None, tuple[str, ...]]:
    if not check.dist_info:
        return None, None, ()
    text = check.read_text(f"{check.dist_info}/METADATA")
    if text is None:
        return None, None, ()
    raw, _unparsed = parse_email(text)
    name: NormalizedName | None = None
    version: Version | None = None
    if "name" not in raw:
        check.add("METADATA has no Name")
    else:
        name = canonicalize_name(raw["name"])
        if file_name is not None and name != file_name:
            check.add(f"METADATA Name {raw['name']!r} does not match the filename")
    if "version" not in raw:
        check.add("METADATA has no Version")
    else:
        try:
            version = Version(raw["version"])
        except InvalidVersion:
            check.add(f"METADATA Version {raw['version']!r} is not a valid version")
        else:
            if file_version is not None and version != file_version:
                check.add(f"METADATA Version {version} does not match the filename")
    requires = tuple(raw.get("requires_dist", []))
    for line in requires:
        try:
            Requirement(line)
        except InvalidRequirement as exc:
            check.add(f"METADATA Requires-Dist {line!r} is invalid: {exc}")
    return name, version, requires


def _module_shipped(check: _Check, module: str) -> bool:
    rel = module.replace(".", "/")
    return f"{rel}.py" in check.root_files or f"{rel}/__init__.py" in check.root_files


def _check_entry_points(check: _Check) -> tuple[PluginEntryPoint, ...]:
    if not check.dist_info:
        return ()
    member = f"{check.dist_info}/entry_points.txt"
    if member not in check.zf.namelist():
        check.add(
            f"no entry_points.txt: a plugin needs an entry point in group {ENTRY_POINT_GROUP!r}"
        )
        return ()
    text = check.read_text(member)
    if text is None:
        return ()
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep name case
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        check.add(f"entry_points.txt is malformed: {exc}")
        return ()
    if not parser.has_section(ENTRY_POINT_GROUP) or not parser.items(ENTRY_POINT_GROUP):
        check.add(
            f"no entry point in group {ENTRY_POINT_GROUP!r}; declare one in pyproject.toml: "
            f'[project.entry-points."{ENTRY_POINT_GROUP}"] my-plugin = "my_pkg.plugin:PLUGIN"'
        )
        return ()
    found: list[PluginEntryPoint] = []
    for ep_name, value in parser.items(ENTRY_POINT_GROUP):
        module, colon, attr = (part.strip() for part in value.partition(":"))
        if not colon or not _DOTTED_NAME.match(module) or not _DOTTED_NAME.match(attr):
            check.add(f"entry point {ep_name!r} = {value!r} is not of the form 'module:attr'")
            continue
        if module.split(".", 1)[0] not in check.top_level or not _module_shipped(check, module):
            check.add(
                f"entry point {ep_name!r} names module {module!r}, which this wheel does not "
                "ship (a plugin's entry point must resolve inside the plugin)"
            )
            continue
        found.append(PluginEntryPoint(ep_name, module, attr))
    return tuple(sorted(found, key=lambda ep: ep.name))
