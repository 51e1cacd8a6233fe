"""The files of an adapter upload, before anything else looks at them: the form's parts
streamed to disk under the byte limit (an archive unpacked safely), pickle refused, and
the cheap header checks of the config and the safetensors file."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, NamedTuple

from tenantserve.engine.lora_files import CONFIG_FILE, WEIGHTS_FILE
from tenantserve.errors import AdapterError, InvalidRequestError
from tenantserve.registry.archive import copy_limited, extract_adapter_archive, refuse_pickle

ARCHIVE_FIELD = "archive"
ADAPTER_FILES = (CONFIG_FILE, WEIGHTS_FILE)
MAX_CONFIG_BYTES = 1 << 20
MAX_SAFETENSORS_HEADER_BYTES = 8 << 20


class UploadPart(NamedTuple):
    """One file field of an upload: its form field name, the client's file name, its bytes
    (a file object read in chunks on a worker thread)."""

    field: str
    filename: str | None
    stream: IO[bytes]


def receive_upload(parts: Sequence[UploadPart], tmp: Path, files_dir: Path, max_bytes: int) -> None:
    """Stream the parts to disk under the byte limit, unpacking an archive (blocking)."""
    fields = [p.field for p in parts]
    for part in parts:
        refuse_pickle(part.field)
        refuse_pickle(part.filename or "")
        if part.field not in (*ADAPTER_FILES, ARCHIVE_FIELD):
            raise InvalidRequestError(
                f"unexpected file field {part.field!r}: send {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, or one {ARCHIVE_FIELD}"
            )
        if fields.count(part.field) > 1:
            raise InvalidRequestError(f"file field {part.field!r} is sent twice")
    if ARCHIVE_FIELD in fields:
        if len(parts) > 1:
            raise InvalidRequestError(f"send either one {ARCHIVE_FIELD} or the files, not both")
        archive = tmp / "upload.archive"
        too_large = f"the archive is above the adapter size limit of {max_bytes}"
        copy_limited(parts[0].stream, archive, max_bytes, too_large + " bytes")
        extract_adapter_archive(archive, files_dir, max_bytes)
        return
    missing = [f for f in ADAPTER_FILES if f not in fields]
    if missing:
        raise InvalidRequestError(
            f"the upload has no {' and no '.join(missing)} (send both files, or one "
            f"{ARCHIVE_FIELD}: a .tar.gz or .zip holding them)"
        )
    budget = max_bytes
    for part in parts:
        what = f"the upload is above the adapter size limit of {max_bytes} bytes"
        budget -= copy_limited(part.stream, files_dir / part.field, budget, what)


def read_config_json(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise AdapterError(f"{CONFIG_FILE} is {size} bytes; at most {MAX_CONFIG_BYTES} allowed")
    try:
        raw = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AdapterError(f"{CONFIG_FILE}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise AdapterError(f"{CONFIG_FILE}: expected a JSON object")
    return raw


def check_safetensors_header(path: Path) -> None:
    """The 8-byte header length and the JSON header it announces fit the file and the limit
    (the safetensors reader checks the rest)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(9)
    if len(prefix) < 9:
        raise AdapterError(f"{WEIGHTS_FILE} is truncated ({size} bytes)")
    (header_bytes,) = struct.unpack("<Q", prefix[:8])
    if prefix[8:9] != b"{":
        raise AdapterError(f"{WEIGHTS_FILE} is not a safetensors file")
    if header_bytes > MAX_SAFETENSORS_HEADER_BYTES:
        raise AdapterError(
            f"{WEIGHTS_FILE}: its header is {header_bytes} bytes, above the limit of "
            f"{MAX_SAFETENSORS_HEADER_BYTES}"
        )
    if 8 + header_bytes > size:
        raise AdapterError(
            f"{WEIGHTS_FILE} is truncated: its header needs {8 + header_bytes} bytes, the file "
            f"has {size}"
        )
