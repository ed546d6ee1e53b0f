"""Writing a local file so that a reader sees the old content or the new, never half."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``.

    ``durable`` also fsyncs the file before the rename, so that a crash leaves the old
    content or the new; without it a crash may leave a torn file (fine for a cache that
    detects one). The temporary file is removed if anything fails, Ctrl-C included, and
    gets the permissions any new file gets (the umask applies).
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
