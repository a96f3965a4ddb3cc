"""``dlcli package verify``: judge an archive as common extractors will unpack it.

``verify_package(path) -> VerifyResult`` reads the archive without extracting anything
and re-hashes every entry in memory against ``manifest.json``. It refuses what would make
``unzip`` (Info-ZIP) or Python's ``zipfile`` produce something other than the listed
files: a changed byte, a missing or extra file, an unsafe name (absolute, ``..``,
backslash), a symbolic link or other special file (judged by the mode bits whatever the
creating system says), an Info-ZIP Unicode path field (0x7075, which renames an entry
for the extractors that honour it), a local header whose name differs from the central
directory's, duplicate names and encrypted entries. A PackageError is exit code 8.
"""

from __future__ import annotations

import json
import posixpath
import stat
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import PackageError

PACKAGE_FORMAT = "dlcli-package/1"
MANIFEST = "manifest.json"
_MAX_MANIFEST = 16 * 1024 * 1024
_UNICODE_PATH = 0x7075  # Info-ZIP Unicode Path extra field


@dataclass
class VerifyResult:
    path: Path
    target: str | None
    model: str | None
    files: int
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"archive": str(self.path), "valid": self.valid, "target": self.target, "model": self.model,
                "files": self.files, "problems": self.problems}

    def raise_for_problems(self) -> None:
        if self.problems:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            raise PackageError(f"{self.path}: {self.problems[0]}{more}")


# ------------------------------------------------------------------ verify
def unsafe_name(name: str) -> str | None:
    """Why an archive entry name is unsafe to extract, or None."""
    if not name or "\0" in name:
        return "an empty name or a NUL byte"
    if "\\" in name:
        return "a backslash (a Windows path separator)"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.split("/"):
        return "a '..' component"
    return None


def _is_link(info: zipfile.ZipInfo) -> bool:
    """Link mode bits, whatever ``create_system`` claims: Info-ZIP ``unzip`` makes a link of
    them for several creating systems (Unix, but also 5, 16, 30, ...)."""
    return stat.S_ISLNK(info.external_attr >> 16)


def _is_special(info: zipfile.ZipInfo) -> bool:
    """A device, FIFO or socket by its mode bits (neither a plain file, a folder nor a link)."""
    kind = stat.S_IFMT(info.external_attr >> 16)
    return kind not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK)


def _extra_ids(extra: bytes) -> list[int]:
    """The header ids of a zip extra field block."""
    ids, i = [], 0
    while i + 4 <= len(extra):
        hid, size = struct.unpack("<HH", extra[i:i + 4])
        ids.append(hid)
        i += 4 + size
    return ids


def _local_header(fh, info: zipfile.ZipInfo) -> tuple[bytes, bytes] | None:
    """The raw name and extra field of an entry's local header (None if unreadable)."""
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) < 30 or head[:4] != b"PK\x03\x04":
        return None
    n, m = struct.unpack("<HH", head[26:30])
    return fh.read(n), fh.read(m)


def _header_problems(fh, info: zipfile.ZipInfo) -> list[str]:
    """What makes an extractor name or make an entry otherwise than its central name says."""
    name, out = info.filename, []
    local = _local_header(fh, info)
    if local is None:
        return [f"entry {name!r} has no readable local header"]
    raw = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437", "replace")
    if local[0] != raw:
        out.append(f"entry {name!r} is named {local[0].decode('utf-8', 'replace')!r} in its local header")
    if _UNICODE_PATH in _extra_ids(info.extra) + _extra_ids(local[1]):
        out.append(f"entry {name!r} carries an Info-ZIP Unicode path field (0x7075): extractors that honour it "
                   "give the file another name")
    if _is_special(info):
        out.append(f"entry {name!r} is a special file (mode {oct(info.external_attr >> 16)})")
    return out


def _link_problem(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    try:
        target = zf.read(info)[:4096].decode("utf-8", "replace") if info.file_size <= 4096 else "?"
    except Exception:  # noqa: BLE001 - the target is only for the message
        target = "?"
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(info.filename), target))
    where = "outside the archive" if target.startswith("/") or resolved.split("/")[0] == ".." else "links are not allowed"
    return f"entry {info.filename!r} is a symbolic link to {target!r} ({where})"


def _hash_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    from dlcli.atomic import sha256_stream

    with zf.open(info) as fh:
        return sha256_stream(fh)[0]


def verify_package(path: str | Path) -> VerifyResult:
    """Check every entry of the archive against its manifest.json without extracting it.

    Returns the result with every problem found; raises PackageError only when the file is
    not a readable zip archive or has no usable manifest."""
    path = Path(path)
    if not path.is_file():
        raise PackageError(f"{path}: no such archive file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"{path}: not a readable zip archive ({exc}); dlcli packages are .zip files") from exc
    with zf, open(path, "rb") as raw:
        infos = zf.infolist()
        problems, seen = _entry_problems(zf, raw, infos)
        manifest = _load_manifest(zf, path, seen)
        listed = manifest.get("files")
        if not isinstance(listed, dict) or not all(isinstance(v, dict) for v in listed.values()):
            raise PackageError(f"{path}: {MANIFEST} has no 'files' table; not a {PACKAGE_FORMAT} archive")
        members = {i.filename: i for i in infos}
        problems += [p for name, want in sorted(listed.items()) for p in _listed_problems(zf, members, name, want)]
        problems += _extra_problems(members, listed)
        # de-duplicate, keeping order (an unsafe extra entry is reported once per reason)
        problems = list(dict.fromkeys(problems))
        return VerifyResult(path, manifest.get("target"), manifest.get("model"), len(listed), problems)


def _entry_problems(zf, raw, infos) -> tuple[list[str], dict[str, int]]:
    """What is wrong with the entries themselves (names, links, encryption, headers, duplicates)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for info in infos:
        seen[info.filename] = seen.get(info.filename, 0) + 1
        why = unsafe_name(info.filename)
        if why:
            problems.append(f"entry {info.filename!r} has {why}")
        if _is_link(info):
            problems.append(_link_problem(zf, info))
        if info.flag_bits & 0x1:
            problems.append(f"entry {info.filename!r} is encrypted")
        problems += _header_problems(raw, info)
    problems += [f"entry {n!r} appears {k} times" for n, k in seen.items() if k > 1]
    return problems, seen


def _listed_problems(zf, members, name: str, want: dict) -> list[str]:
    """A file the manifest lists: present, regular, its size and sha256 as listed."""
    why = unsafe_name(name)
    if why:
        return [f"{MANIFEST} lists {name!r}, which has {why}"]
    info = members.get(name)
    if info is None:
        return [f"{name} is missing"]
    if info.is_dir() or _is_link(info) or _is_special(info):
        return [f"{name} is not a regular file"]
    if info.file_size != want.get("size"):
        return [f"{name} changed: {info.file_size} bytes, manifest says {want.get('size')}"]
    try:
        got = _hash_member(zf, info)
    except Exception as exc:  # noqa: BLE001 - corrupt data (CRC, zlib) is a changed byte
        return [f"{name} cannot be read ({type(exc).__name__}: {exc}): the archive is damaged"]
    if got != want.get("sha256"):
        return [f"{name} changed: sha256 {got[:12]}... differs from the manifest's {str(want.get('sha256'))[:12]}..."]
    return []


def _extra_problems(members, listed) -> list[str]:
    """Entries the manifest does not list (directory entries that hold listed files aside)."""
    parents = {posixpath.dirname(n.rstrip("/")) for n in listed}
    holders = {p for d in parents for p in _ancestors(d)}
    return [f"extra file {name!r} is not listed in {MANIFEST}" for name in members
            if name != MANIFEST and name not in listed and not (name.endswith("/") and name.rstrip("/") in holders)]


def _ancestors(d: str) -> list[str]:
    out = []
    while d:
        out.append(d)
        d = posixpath.dirname(d)
    return out


def _load_manifest(zf: zipfile.ZipFile, path: Path, seen: dict[str, int]) -> dict[str, Any]:
    if MANIFEST not in seen:
        raise PackageError(f"{path}: {MANIFEST} is missing; not a {PACKAGE_FORMAT} archive")
    info = zf.getinfo(MANIFEST)
    if info.file_size > _MAX_MANIFEST or _is_link(info) or _is_special(info):
        raise PackageError(f"{path}: {MANIFEST} is not a plain JSON file")
    try:
        manifest = json.loads(zf.read(info))
    except Exception as exc:  # unreadable (CRC) or not JSON
        raise PackageError(f"{path}: {MANIFEST} cannot be read: {type(exc).__name__}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{path}: {MANIFEST} is not a {PACKAGE_FORMAT} manifest")
    return manifest
