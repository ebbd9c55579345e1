"""One small database layer for the labeling store: SQLite (default, one file, WAL) or
PostgreSQL (psycopg 3), chosen by URL, through plain DB-API and one schema.

Why no ORM: the store needs a dozen statements, two locking idioms and one schema; a dialect
table of a few lines is easier to read than an ORM's session rules. Statements are written
with ``?`` placeholders and rewritten to ``%s`` for PostgreSQL.

Locking, so that no item ever gets more than ``overlap`` labels under concurrency:
- SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (it takes the database's one
  write lock at once, so two writers never read the same counts and both insert);
- PostgreSQL: the transaction locks the item's row (``SELECT ... FOR UPDATE``; handing out work
  uses ``FOR UPDATE SKIP LOCKED`` so labelers do not queue behind one another).
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

from rlhf.errors import UserError

SCHEMA_VERSION = 1


class StoreError(UserError):
    """A labeling database that cannot be opened or used: a bad URL, a missing or foreign
    schema, a schema of another version."""


# {id}: an auto-numbered primary key; {float}: a double-precision number.
_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE project (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    prompt TEXT NOT NULL,
    responses TEXT NOT NULL,
    ended TEXT NOT NULL,
    is_gold INTEGER NOT NULL DEFAULT 0,
    gold_ranking TEXT,
    source_line INTEGER NOT NULL,
    label_count INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE labelers (
    id {id},
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at {float} NOT NULL
);
CREATE TABLE reservations (
    item_id INTEGER NOT NULL REFERENCES items(id),
    labeler_id INTEGER NOT NULL REFERENCES labelers(id),
    order_shown TEXT NOT NULL,
    reserved_at {float} NOT NULL,
    expires_at {float} NOT NULL,
    PRIMARY KEY (item_id, labeler_id)
);
CREATE TABLE labels (
    id {id},
    item_id INTEGER NOT NULL REFERENCES items(id),
    labeler_id INTEGER NOT NULL REFERENCES labelers(id),
    kind TEXT NOT NULL,
    tiers TEXT,
    strength TEXT,
    reason TEXT,
    order_shown TEXT NOT NULL,
    started_at {float} NOT NULL,
    submitted_at {float} NOT NULL,
    UNIQUE (labeler_id, item_id)
);
CREATE INDEX labels_item ON labels (item_id);
CREATE INDEX reservations_labeler ON reservations (labeler_id)
"""

_DIALECT_TYPES = {
    "sqlite": {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "float": "REAL"},
    "postgresql": {"id": "BIGSERIAL PRIMARY KEY", "float": "DOUBLE PRECISION"},
}


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///path`` URL (``sqlite:////abs/path`` or ``sqlite:///rel``),
    None for another scheme."""
    if not url.startswith("sqlite:"):
        return None
    path = url[len("sqlite:"):]
    if not path.startswith("///") or len(path) == 3:
        raise StoreError(f"bad SQLite URL {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return path[3:]


class Database:
    """A connection factory for one URL. SQLite connections are per thread (sqlite3 objects
    must stay in their thread); PostgreSQL connections too, opened on first use."""

    def __init__(self, url: str):
        self.url = url
        path = sqlite_path(url)
        if path is not None:
            self.dialect = "sqlite"
            self._path = path
        elif urlparse(url).scheme in ("postgresql", "postgres"):
            self.dialect = "postgresql"
            try:
                import psycopg  # noqa: F401 - checked here for a clear message
            except ImportError as err:
                raise StoreError("a postgresql:// URL needs psycopg 3: pip install 'rlhf[postgres]'") from err
        else:
            raise StoreError(f"unknown database URL {url!r}: expected sqlite:///labels.db or postgresql://...")
        self._local = threading.local()

    # --- connections ---------------------------------------------------------------------------

    def _connect(self):
        if self.dialect == "sqlite":
            parent = Path(self._path).parent
            if not parent.is_dir():
                raise StoreError(f"{self.url}: folder {parent} does not exist")
            # isolation_level=None: we issue BEGIN / COMMIT ourselves. timeout: wait for the write lock.
            conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # a confirmed label survives a power cut, not just a kill
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=30000")
            return conn
        import psycopg

        try:
            return psycopg.connect(self.url, autocommit=True)
        except psycopg.OperationalError as err:
            raise StoreError(f"cannot connect to {_redact(self.url)}: {str(err).strip().splitlines()[0]}") from err

    def connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- statements ----------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator["Cursor"]:
        """One transaction: committed when the block ends, rolled back on any exception, so a
        request that fails half-way writes nothing. ``write`` on SQLite takes the write lock at
        once (BEGIN IMMEDIATE)."""
        conn = self.connection()
        cur = conn.cursor()
        begin = "BEGIN IMMEDIATE" if (write and self.dialect == "sqlite") else "BEGIN"
        cur.execute(begin)
        try:
            yield Cursor(self, cur)
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def create_schema(self) -> None:
        """Create every table and record the schema version; refuses a database that has tables."""
        with self.transaction() as cur:
            if cur.table_exists("schema_version") or cur.table_exists("items"):
                raise StoreError(f"{_redact(self.url)} already holds a labeling project; use a new database "
                                 "(or delete this one) to start another")
            for statement in _SCHEMA.format(**_DIALECT_TYPES[self.dialect]).split(";"):
                if statement.strip():
                    cur.execute(statement)
            cur.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    def check_schema(self) -> None:
        """Refuse a database without our schema, or of another version, with what to do."""
        with self.transaction(write=False) as cur:
            if not cur.table_exists("schema_version"):
                raise StoreError(f"{_redact(self.url)} holds no labeling project: run `rlhf label init --db URL "
                                 "--candidates FILE` first")
            rows = cur.all("SELECT version FROM schema_version")
        versions = [row[0] for row in rows]
        if versions != [SCHEMA_VERSION]:
            raise StoreError(f"{_redact(self.url)} has labeling schema version {versions}, this rlhf reads version "
                             f"{SCHEMA_VERSION}: use the rlhf version that created it, or export and start anew")


class Cursor:
    """A DB-API cursor that speaks ``?`` placeholders on both dialects."""

    def __init__(self, db: Database, cur):
        self.db, self._cur = db, cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> "Cursor":
        self._cur.execute(self.db._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(self.db._sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()):
        self.execute(sql, params)
        return self._cur.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list:
        self.execute(sql, params)
        return self._cur.fetchall()

    def table_exists(self, name: str) -> bool:
        if self.db.dialect == "sqlite":
            return self.one("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)) is not None
        return self.one("SELECT to_regclass(?)", (name,))[0] is not None

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url
