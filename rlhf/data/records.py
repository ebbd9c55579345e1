"""Read raw records (dicts) from JSONL, JSON or a saved ``datasets`` folder, keeping provenance.

Every record comes with a :class:`Source` (path, 1-based line) so that any later error, in
parsing or in tokenization, can name the exact place to fix. For JSONL the line is the
physical line in the file (blank lines count but are skipped); for a JSON array or a saved
dataset it is the record's 1-based index.

Per-record problems (a line that is not JSON, not UTF-8, or not an object) go to ``on_error``
when one is given, so a loader with ``skip_bad_records=True`` can skip that line and go on;
problems with the file as a whole (missing, empty, unparseable JSON document) always raise.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from rlhf.data.errors import DataError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz")


@dataclass(frozen=True)
class Source:
    """Where a record came from: the file and its 1-based line (or record index)."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


def read_records(path: str | Path, on_error: Callable[[DataError], None] | None = None
                 ) -> Iterator[tuple[dict[str, Any], Source]]:
    """Yield ``(record, source)`` for every record of a JSONL/JSON file (optionally gzipped) or a
    ``datasets`` folder saved with ``save_to_disk``.

    A bad record raises :class:`DataError`, or is passed to ``on_error`` and skipped if given.
    A file with no records at all raises even with ``on_error``: it is never what was meant.
    """
    path = Path(path)
    if path.is_dir():
        records = _read_dataset_folder(path)
    elif not path.is_file():
        raise DataError(str(path), None, None, "file not found")
    elif path.name.endswith(JSONL_SUFFIXES):
        records = _read_jsonl(path, on_error)
    elif path.name.endswith(JSON_SUFFIXES):
        records = _read_json(path, on_error)
    else:
        raise DataError(str(path), None, None, "unknown file type: expected .jsonl, .json (each optionally .gz) "
                                               "or a folder written by datasets' save_to_disk")
    count = 0
    for record, source in records:
        count += 1
        yield record, source
    if count == 0:
        raise DataError(str(path), None, None, "file is empty: it holds no records")


def _open_binary(path: Path):
    """Open a possibly gzipped file for reading bytes (``.gz`` by name, as the shared data are)."""
    return gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")


def _report(error: DataError, on_error: Callable[[DataError], None] | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def _read_jsonl(path: Path, on_error) -> Iterator[tuple[dict, Source]]:
    """One JSON object per physical line; blank lines are skipped (many tools end files with one).

    Each line is decoded on its own so that a bad UTF-8 byte names its line, not a byte offset.
    """
    name = str(path)
    try:
        with _open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    _report(DataError(name, line_no, None, f"invalid UTF-8 (byte {e.start} of the line)"), on_error)
                    continue
                if not text.strip():
                    continue
                try:  # without its line ending, so the error's column is on this line, not past it
                    record = json.loads(text.rstrip("\r\n"))
                except json.JSONDecodeError as e:
                    _report(DataError(name, line_no, None, f"invalid JSON: {e.msg} (column {e.colno})"), on_error)
                    continue
                if not isinstance(record, dict):
                    _report(DataError(name, line_no, None,
                                      f"record is a JSON {_json_type(record)}, expected an object"), on_error)
                    continue
                yield record, Source(name, line_no)
    except (OSError, EOFError) as e:  # e.g. a corrupt or truncated .gz
        raise DataError(name, None, None, f"cannot read file: {e}") from e


def _read_json(path: Path, on_error) -> Iterator[tuple[dict, Source]]:
    """A JSON array of objects, or ``{"data": [...]}`` (the layout of many published datasets)."""
    name = str(path)
    try:
        with _open_binary(path) as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(name, None, None, f"cannot read file: {e}") from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line_no = raw.count(b"\n", 0, e.start) + 1
        raise DataError(name, line_no, None, "invalid UTF-8") from e
    if not text.strip():
        raise DataError(name, None, None, "file is empty: it holds no records")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(name, e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from e
    if isinstance(document, dict) and isinstance(document.get("data"), list):
        document = document["data"]
    if not isinstance(document, list):
        raise DataError(name, None, None, 'a .json file must hold an array of objects or {"data": [...]}, '
                                          f"got a JSON {_json_type(document)}")
    for index, record in enumerate(document, start=1):
        if not isinstance(record, dict):
            _report(DataError(name, index, None,
                              f"record is a JSON {_json_type(record)}, expected an object"), on_error)
            continue
        yield record, Source(name, index)


def _read_dataset_folder(path: Path) -> Iterator[tuple[dict, Source]]:
    """A ``datasets.Dataset`` saved with ``save_to_disk``; ``datasets`` is imported only here
    because it is an optional dependency."""
    name = str(path)
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{name} is a folder; reading a saved dataset needs the optional dependency "
                          "`datasets` (pip install 'rlhf[datasets]')") from e
    try:
        dataset = datasets.load_from_disk(name)
    except FileNotFoundError as e:
        raise DataError(name, None, None, "folder is not a dataset written by datasets' save_to_disk") from e
    if isinstance(dataset, datasets.DatasetDict):
        splits = ", ".join(f"{name}/{split}" for split in dataset)
        raise DataError(name, None, None, f"folder holds several splits; pass one of: {splits}")
    for index, record in enumerate(dataset, start=1):
        yield dict(record), Source(name, index)


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
