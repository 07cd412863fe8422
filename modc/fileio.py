"""Files in and out: atomic writes (a reader sees the old file or the new one, never half of
one), bounded reads of spec files, and the checks that keep a write where the user asked."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

# A spec file, or a file it includes, is at most 256 KiB: the largest spec shipped is under
# 4 KiB, and parsing stays within seconds at this size.
MAX_SPEC_BYTES = 256 * 1024


class TooLarge(OSError):
    """A file is larger than the limit (or never ends, like /dev/zero)."""


def read_limited(path: str | Path, limit: int = MAX_SPEC_BYTES) -> bytes:
    """The bytes of the regular file `path`. Raises OSError for anything else (a folder, a
    FIFO, a device such as /dev/zero) and for a file over `limit` bytes, without blocking
    on a FIFO and without reading past `limit`."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise OSError("a folder, not a file")
        if not stat.S_ISREG(mode):
            raise OSError("not a regular file")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(f"larger than {limit:,} bytes, the limit for a spec file")
    return data


def reason(e: OSError) -> str:
    """Why the system refused a file, in a few words: its message, or, when a folder could
    not be made because a file stands on the way, which file."""
    if isinstance(e, (FileExistsError, NotADirectoryError)) and e.filename:
        for path in (Path(e.filename), *Path(e.filename).parents):
            if path.exists() and not path.is_dir():
                return f"'{path}' is a file, not a folder"
    if isinstance(e, IsADirectoryError) and e.filename2:  # renaming a file over a folder
        return f"'{e.filename2}' is a folder, not a file"
    return e.strerror or str(e)


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
