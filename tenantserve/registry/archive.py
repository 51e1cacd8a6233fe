"""Safe unpacking of an uploaded adapter archive (.tar.gz or .zip) into a fresh directory.

Only the two adapter files leave the archive: `adapter_config.json` and
`adapter_model.safetensors`, at its top level or inside one folder. Other regular files
(a README) are skipped. Refused, with a message naming the member: absolute paths, `..`,
backslashes, links, devices and other non-regular members, deeper nesting, pickle
checkpoints (.bin, .pt, ...), more than `MAX_MEMBERS` members, and any member (or all of
them together) above the byte limit — declared sizes are checked before a byte is
unpacked, and actual bytes are counted while unpacking, so a lying header or a
decompression bomb stops at the limit. Blocking: run it on a worker thread.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from tenantserve.engine.lora_files import CONFIG_FILE, WEIGHTS_FILE
from tenantserve.errors import InvalidRequestError
from tenantserve.registry.adapters import AdapterTooLargeError

ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
MAX_MEMBERS = 32
CHUNK_BYTES = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


def refuse_pickle(name: str) -> None:
    """InvalidRequestError when `name` looks like a pickle checkpoint (never loaded)."""
    if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidRequestError(
            f"{name}: pickle checkpoints (.bin, .pt, .pth, .pkl, .ckpt) are refused; "
            f"upload {WEIGHTS_FILE} (save with safe_serialization=True)"
        )


def copy_limited(src: IO[bytes], dest: Path, budget_bytes: int, what: str) -> int:
    """Stream `src` into the new file `dest`; AdapterTooLargeError once more than
    `budget_bytes` arrive (the partial file is the caller's to remove). Returns the size."""
    written = 0
    with dest.open("xb") as out:
        while chunk := src.read(CHUNK_BYTES):
            written += len(chunk)
            if written > budget_bytes:
                raise AdapterTooLargeError(f"{what} is above the adapter size limit")
            out.write(chunk)
    return written


class _Layout:
    """Which member becomes which adapter file; checks names, nesting and duplicates."""

    def __init__(self, max_bytes: int, max_members: int) -> None:
        self.max_bytes = max_bytes
        self.max_members = max_members
        self.num_members = 0
        self.declared_bytes = 0
        self.folder: str | None = None
        self.found: set[str] = set()

    def admit(self, name: str, is_dir: bool, size_bytes: int) -> str | None:
        """The adapter file `name` unpacks to, or None to skip it; raises on anything unsafe."""
        self.num_members += 1
        if self.num_members > self.max_members:
            raise InvalidRequestError(f"the archive has more than {self.max_members} members")
        parts = _safe_parts(name)
        if is_dir:
            return None
        if size_bytes > self.max_bytes or self.declared_bytes + size_bytes > self.max_bytes:
            raise AdapterTooLargeError(
                f"archive member {name!r} ({size_bytes} bytes) unpacks above the adapter "
                f"size limit of {self.max_bytes} bytes"
            )
        self.declared_bytes += size_bytes
        if len(parts) > 2:
            raise InvalidRequestError(
                f"archive member {name!r} is nested too deep: put the adapter files at the "
                "top level or in one folder"
            )
        refuse_pickle(name)
        base = parts[-1]
        if base not in ADAPTER_FILES:
            return None
        folder = parts[0] if len(parts) == 2 else ""
        if self.folder is not None and folder != self.folder:
            raise InvalidRequestError("the adapter files must be in the same folder of the archive")
        self.folder = folder
        if base in self.found:
            raise InvalidRequestError(f"the archive holds {base} twice")
        self.found.add(base)
        return base


def _safe_parts(name: str) -> list[str]:
    if not name or name.startswith("/") or "\\" in name or "\0" in name or ":" in name:
        raise InvalidRequestError(f"archive member {name!r} has an unsafe path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise InvalidRequestError(f"archive member {name!r} has an unsafe path ('..')")
    return parts


def extract_adapter_archive(
    archive: Path, dest: Path, max_bytes: int, max_members: int = MAX_MEMBERS
) -> None:
    """Unpack the adapter files of `archive` (.tar.gz / .tar / .zip, told apart by their
    first bytes) into the existing, empty directory `dest`. Raises InvalidRequestError
    (AdapterTooLargeError above `max_bytes`) naming the problem."""
    with archive.open("rb") as f:
        magic = f.read(4)
    layout = _Layout(max_bytes, max_members)
    try:
        if magic in _ZIP_MAGICS:
            _extract_zip(archive, dest, layout)
        elif magic[:2] == _GZIP_MAGIC or _is_plain_tar(archive):
            _extract_tar(archive, dest, layout)
        else:
            raise InvalidRequestError("the archive must be a .tar.gz or a .zip file")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
        raise InvalidRequestError(f"the archive is corrupt or truncated ({e})") from e
    missing = [f for f in ADAPTER_FILES if f not in layout.found]
    if missing:
        raise InvalidRequestError(f"the archive holds no {' and no '.join(missing)}")


def _is_plain_tar(archive: Path) -> bool:
    with archive.open("rb") as f:
        f.seek(257)
        return f.read(5) == b"ustar"


def _extract_tar(archive: Path, dest: Path, layout: _Layout) -> None:
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # lazy: headers are checked before any content is read
            if member.issym() or member.islnk():
                raise InvalidRequestError(f"archive member {member.name!r} is a link")
            if not (member.isreg() or member.isdir()):
                raise InvalidRequestError(f"archive member {member.name!r} is not a regular file")
            target = layout.admit(member.name, member.isdir(), member.size)
            try:  # defence in depth: tarfile's own rules for untrusted archives
                tarfile.data_filter(member, str(dest))
            except tarfile.FilterError:
                raise InvalidRequestError(f"archive member {member.name!r} is unsafe") from None
            if target is None:
                continue
            src = tar.extractfile(member)
            assert src is not None  # a regular file
            with src:
                copy_limited(src, dest / target, _budget(layout, member.size), member.name)


def _extract_zip(archive: Path, dest: Path, layout: _Layout) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > layout.max_members:
            raise InvalidRequestError(f"the archive has more than {layout.max_members} members")
        for info in infos:
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix mode recorded
            if kind == stat.S_IFLNK:
                raise InvalidRequestError(f"archive member {info.filename!r} is a link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise InvalidRequestError(f"archive member {info.filename!r} is not a regular file")
            if info.flag_bits & 0x1:
                raise InvalidRequestError(f"archive member {info.filename!r} is encrypted")
            target = layout.admit(info.filename, info.is_dir(), info.file_size)
            if target is None:
                continue
            with zf.open(info) as src:
                copy_limited(src, dest / target, _budget(layout, info.file_size), info.filename)


def _budget(layout: _Layout, declared_bytes: int) -> int:
    # The member may not write more than it declared, nor more than the limit allows.
    return min(declared_bytes, layout.max_bytes)
