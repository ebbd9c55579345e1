"""The one error type for bad input data: it always names the file, the line and the field."""

from __future__ import annotations

from rlhf.errors import UserError


class DataError(UserError, ValueError):
    """A malformed data record. ``line`` is 1-based (for a JSON array or a saved dataset, the
    record's 1-based position); ``field`` is the offending key, or None for the record as a whole."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = self.path if line is None else f"{self.path}, line {line}"
        if field is not None:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")
