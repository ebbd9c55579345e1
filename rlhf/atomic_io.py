"""Atomic file writes: a reader (or a resumed run) sees the old file or the new one, never half of one.

Each write goes to a temporary file beside the target (same folder, so same file system),
is flushed and fsynced, then renamed over the target with ``os.replace`` (atomic on POSIX and
Windows); the folder is fsynced too, so the rename itself survives a power cut.

This module imports nothing from ``rlhf``, so every layer (config, data, feedback, trainers,
pipeline) can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable


def fsync_dir(path: str | Path) -> None:
    """Make a folder's entries (a file created or renamed in it) durable. A no-op where
    folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (PermissionError, IsADirectoryError):
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under ``folder``, then the folder itself (before renaming it into place)."""
    folder = Path(folder)
    for file in folder.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; create the parent folder if needed."""
    return _write_atomic(path, lambda handle: handle.write(text))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2,
                      default: Callable[[Any], Any] | None = None) -> Path:
    """``json.dumps(obj)`` to ``path`` atomically (UTF-8, non-ASCII kept as is)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, default=default, ensure_ascii=False))


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """One JSON object per line (UTF-8) to ``path`` atomically; returns ``path``."""

    def write(handle) -> None:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")

    return _write_atomic(path, write)


def _write_atomic(path: str | Path, write: Callable[[Any], Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path
