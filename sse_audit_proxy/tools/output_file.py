"""A file a tool writes its results to (`--json`).

Checked before the run, so that a run of minutes does not end in a traceback and nothing to
show for it; written after the results are on the terminal, with a one-line error if the disk
still refuses.
"""

from __future__ import annotations

import os
from pathlib import Path


def problem(path: Path) -> str | None:
    """Why `path` cannot be written, or None."""
    if path.is_dir():
        return "is a directory"
    folder = path.parent
    if not folder.is_dir():
        return f"no directory {folder}"
    if path.exists():
        return None if os.access(path, os.W_OK) else "not writable"
    return None if os.access(folder, os.W_OK) else f"cannot write in {folder}"


def write(path: Path, data: bytes) -> str | None:
    """Write `data`; why it could not be written, or None."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
