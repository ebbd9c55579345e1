"""The labeling project's state: items, labelers, reservations and labels, behind one class.

Rules it keeps (each request is one transaction, so a failed one writes nothing):
- each item is labelled by ``overlap`` distinct labelers, never more, even under concurrency:
  an item is handed out only while labels + live reservations < overlap, and a label needs its
  labeler's live reservation (an expired one is refused, its place may already be taken);
- a labeler sees an item at most once (UNIQUE(labeler, item)); a skip counts as having seen it
  but not towards the overlap, so the item goes to someone else;
- gold items (known best ordering) are mixed in so that about ``gold_rate`` of a labeler's labels
  are gold; every labeler may label every gold item once, so overlap does not apply to them;
- tokens are random (``secrets.token_urlsafe``) and only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Sequence

from rlhf.errors import UserError
from rlhf.feedback.labeling.db import Database, StoreError
from rlhf.feedback.labeling.items import Item

KINDS = ("ranking", "all_bad", "skip")
COUNTED = ("ranking", "all_bad")  # kinds that fill one of an item's ``overlap`` places
# Llama 2's preference strength for K = 2 (Touvron et al. 2023, table 28, the "small" margins),
# exported as the comparison's margin.
STRENGTH_MARGINS = {"significantly_better": 1.0, "better": 2 / 3, "slightly_better": 1 / 3, "about_the_same": 0.0}
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
ADMIN_NAME = "(admin)"
MAX_REASON_CHARS = 500

DEFAULT_SETTINGS = {"overlap": 2, "gold_rate": 0.1, "reservation_seconds": 900.0, "guidelines": "",
                    "ramp": 20, "kappa_threshold": 0.5, "gold_threshold": 0.7, "min_shared": 10}


class LabelingError(UserError):
    """A request the store refuses; ``status`` is its HTTP status (400 bad input, 404 unknown
    item, 409 conflict with what is stored)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    is_admin: bool


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(24)


class LabelStore:
    """A labeling project in a database (``sqlite:///labels.db`` or ``postgresql://...``)."""

    def __init__(self, url: str, clock=time.time):
        self.db = Database(url)
        self.db.check_schema()
        self.clock = clock
        with self.db.transaction(write=False) as cur:
            stored = dict(cur.all("SELECT key, value FROM project"))
        self.settings = {key: json.loads(stored[key]) if key in stored else value
                         for key, value in DEFAULT_SETTINGS.items()}
        self._random = random.SystemRandom()

    @classmethod
    def create(cls, url: str, items: Sequence[Item], gold: Sequence[Item] = (), **settings: Any) -> "LabelStore":
        """A new project: the schema, the settings and every item, in one transaction per step."""
        unknown = set(settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        db = Database(url)
        db.create_schema()
        values = {**DEFAULT_SETTINGS, **settings}
        with db.transaction() as cur:
            cur.executemany("INSERT INTO project (key, value) VALUES (?, ?)",
                            [(key, json.dumps(value)) for key, value in values.items()])
            rows = [(n, it.prompt, json.dumps(it.responses), json.dumps(it.ended), int(it.gold_ranking is not None),
                     None if it.gold_ranking is None else json.dumps(it.gold_ranking), it.line)
                    for n, it in enumerate([*items, *gold], start=1)]
            cur.executemany("INSERT INTO items (id, prompt, responses, ended, is_gold, gold_ranking, source_line) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.close()
        return cls(url)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "LabelStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- accounts ------------------------------------------------------------------------------

    def add_labeler(self, name: str) -> str:
        """Create a labeler; returns its token (shown once, stored only hashed)."""
        if not NAME_PATTERN.match(name or ""):
            raise LabelingError(400, f"labeler name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        token = new_token()
        with self.db.transaction() as cur:
            if cur.one("SELECT 1 FROM labelers WHERE name = ?", (name,)):
                raise LabelingError(409, f"labeler {name!r} already exists")
            cur.execute("INSERT INTO labelers (name, token_hash, is_admin, created_at) VALUES (?, ?, 0, ?)",
                        (name, hash_token(token), self.clock()))
        return token

    def admin_token(self) -> str:
        """A new admin token; the previous one stops working."""
        token = new_token()
        with self.db.transaction() as cur:
            if cur.one("SELECT 1 FROM labelers WHERE is_admin = 1"):
                cur.execute("UPDATE labelers SET token_hash = ? WHERE is_admin = 1", (hash_token(token),))
            else:
                cur.execute("INSERT INTO labelers (name, token_hash, is_admin, created_at) VALUES (?, ?, 1, ?)",
                            (ADMIN_NAME, hash_token(token), self.clock()))
        return token

    def authenticate(self, token: str | None) -> Account | None:
        if not token or len(token) > 200:
            return None
        with self.db.transaction(write=False) as cur:
            row = cur.one("SELECT id, name, is_admin FROM labelers WHERE token_hash = ?", (hash_token(token),))
        return None if row is None else Account(row[0], row[1], bool(row[2]))

    # --- handing out work ----------------------------------------------------------------------

    def next_item(self, account: Account) -> dict | None:
        """The labeler's current item: its live reservation if it has one, else a newly reserved
        one (gold when due), shown in a random order that is stored; None when its queue is empty."""
        now = self.clock()
        with self.db.transaction() as cur:
            row = cur.one("SELECT item_id, order_shown, expires_at FROM reservations WHERE labeler_id = ? "
                          "AND expires_at > ? ORDER BY reserved_at LIMIT 1", (account.id, now))
            if row is None:
                item_id = self._reserve(cur, account.id, now)
                if item_id is None:
                    return None
                row = cur.one("SELECT item_id, order_shown, expires_at FROM reservations WHERE labeler_id = ? "
                              "AND item_id = ?", (account.id, item_id))
            item = cur.one("SELECT prompt, responses, ended FROM items WHERE id = ?", (row[0],))
        order = json.loads(row[1])
        responses, ended = json.loads(item[1]), json.loads(item[2])
        return {"item_id": row[0], "prompt": item[0], "responses": [responses[i] for i in order],
                "ended": [ended[i] for i in order], "k": len(order), "expires_at": row[2],
                "expires_in": round(row[2] - now, 1)}

    def _reserve(self, cur, labeler_id: int, now: float) -> int | None:
        cur.execute("DELETE FROM reservations WHERE expires_at <= ? AND labeler_id = ?", (now, labeler_id))
        done = cur.one("SELECT COUNT(*), SUM(CASE WHEN i.is_gold = 1 THEN 1 ELSE 0 END) FROM labels l "
                       "JOIN items i ON i.id = l.item_id WHERE l.labeler_id = ? AND l.kind <> 'skip'", (labeler_id,))
        total, gold_done = done[0], done[1] or 0
        order = []
        if gold_done < self.settings["gold_rate"] * (total + 1):
            order.append(True)
        order.append(False)
        for gold in order:
            item_id = self._lock_available(cur, labeler_id, now, gold)
            if item_id is not None:
                k = len(json.loads(cur.one("SELECT responses FROM items WHERE id = ?", (item_id,))[0]))
                shown = list(range(k))
                self._random.shuffle(shown)
                cur.execute("INSERT INTO reservations (item_id, labeler_id, order_shown, reserved_at, expires_at) "
                            "VALUES (?, ?, ?, ?, ?)", (item_id, labeler_id, json.dumps(shown), now,
                                                       now + float(self.settings["reservation_seconds"])))
                return item_id
        return None

    def _available_sql(self, gold: bool) -> str:
        """Items this labeler has not seen; for regular items also with a free place (labels +
        live reservations < overlap). Parameters: labeler, labeler, now."""
        sql = ("SELECT i.id FROM items i WHERE i.is_gold = {gold} "
               "AND NOT EXISTS (SELECT 1 FROM labels l WHERE l.item_id = i.id AND l.labeler_id = ?) "
               "AND NOT EXISTS (SELECT 1 FROM reservations r WHERE r.item_id = i.id AND r.labeler_id = ?) ")
        if not gold:
            sql += ("AND i.label_count + (SELECT COUNT(*) FROM reservations r WHERE r.item_id = i.id "
                    "AND r.expires_at > ?) < {overlap} ")
        else:
            sql += "AND ? > 0 "  # keeps the parameter list the same
        return sql.format(gold=int(gold), overlap=int(self.settings["overlap"]))

    def _lock_available(self, cur, labeler_id: int, now: float, gold: bool) -> int | None:
        """Pick and lock one available item. SQLite: the whole transaction holds the write lock.
        PostgreSQL: lock a candidate row (skipping rows others hold), then check it again with a
        fresh statement, which sees everything committed by whoever held the lock before."""
        base = self._available_sql(gold)
        params = (labeler_id, labeler_id, now)
        order = " ORDER BY i.label_count DESC, i.id" if not gold else " ORDER BY i.id"
        if self.db.dialect == "sqlite":
            row = cur.one(base + order + " LIMIT 1", params)
            return None if row is None else row[0]
        tried: list[int] = []
        for _ in range(100):
            exclude = f"AND i.id NOT IN ({', '.join(map(str, tried))}) " if tried else ""
            row = cur.one(base + exclude + order + " LIMIT 1 FOR UPDATE OF i SKIP LOCKED", params)
            if row is None:
                return None
            if cur.one(base + "AND i.id = ?", (*params, row[0])) is not None:
                return row[0]
            tried.append(row[0])
        return None

    # --- labels --------------------------------------------------------------------------------

    def submit(self, account: Account, payload: Any) -> dict:
        """Store one label ``{"item_id", "kind", "ranking"?, "strength"?, "reason"?}``; the ranking
        is in the positions shown, best first, as a list of positions or of tiers (ties)."""
        item_id, kind, ranking, strength, reason = _parse_submission(payload)
        now = self.clock()
        with self.db.transaction() as cur:
            lock = " FOR UPDATE" if self.db.dialect == "postgresql" else ""
            item = cur.one("SELECT responses, is_gold, label_count FROM items WHERE id = ?" + lock, (item_id,))
            if item is None:
                raise LabelingError(404, f"unknown item {item_id}")
            k, is_gold, label_count = len(json.loads(item[0])), bool(item[1]), item[2]
            if cur.one("SELECT 1 FROM labels WHERE item_id = ? AND labeler_id = ?", (item_id, account.id)):
                raise LabelingError(409, f"item {item_id} is already labelled by {account.name}; a label is stored once")
            res = cur.one("SELECT order_shown, reserved_at, expires_at FROM reservations WHERE item_id = ? "
                          "AND labeler_id = ?", (item_id, account.id))
            if res is None:
                raise LabelingError(409, f"item {item_id} is not reserved for {account.name}: get it from /api/next first")
            if res[2] <= now:
                raise LabelingError(409, f"the reservation of item {item_id} expired {now - res[2]:.0f} s ago; "
                                         "it went back to the pool: get the next item")
            order = json.loads(res[0])
            tiers = _tiers_in_candidates(ranking, order, k) if kind == "ranking" else None
            if strength is not None and (kind != "ranking" or k != 2 or len(tiers) != 2):
                raise LabelingError(400, "strength is for a ranking of 2 responses without a tie")
            if kind in COUNTED and not is_gold and label_count >= self.settings["overlap"]:
                raise LabelingError(409, f"item {item_id} already has its {self.settings['overlap']} labels")
            cur.execute("INSERT INTO labels (item_id, labeler_id, kind, tiers, strength, reason, order_shown, "
                        "started_at, submitted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (item_id, account.id, kind, None if tiers is None else json.dumps(tiers), strength, reason,
                         res[0], res[1], now))
            cur.execute("DELETE FROM reservations WHERE item_id = ? AND labeler_id = ?", (item_id, account.id))
            if kind in COUNTED:
                cur.execute("UPDATE items SET label_count = label_count + 1 WHERE id = ?", (item_id,))
        return {"saved": True, "item_id": item_id, "kind": kind, "progress": self.progress(account)}

    def progress(self, account: Account) -> dict:
        """The labeler's own counts: labelled, skipped, and still available to them."""
        with self.db.transaction(write=False) as cur:
            mine = dict(cur.all("SELECT kind, COUNT(*) FROM labels WHERE labeler_id = ? GROUP BY kind", (account.id,)))
            available = cur.one(self._available_sql(False).replace("SELECT i.id", "SELECT COUNT(*)"),
                                (account.id, account.id, self.clock()))[0]
        done = sum(mine.get(kind, 0) for kind in COUNTED)
        return {"labelled": done, "skipped": mine.get("skip", 0), "available": available}

    def my_labels(self, account: Account) -> list[dict]:
        """The labeler's own labels (never anyone else's)."""
        with self.db.transaction(write=False) as cur:
            rows = cur.all("SELECT item_id, kind, tiers, strength, reason, submitted_at FROM labels "
                           "WHERE labeler_id = ? ORDER BY id", (account.id,))
        return [{"item_id": r[0], "kind": r[1], "tiers": None if r[2] is None else json.loads(r[2]),
                 "strength": r[3], "reason": r[4], "submitted_at": r[5]} for r in rows]

    # --- reading everything (admin, export) ----------------------------------------------------

    def dump(self) -> dict:
        """Items, labelers and labels as plain data, for the quality report and the export."""
        with self.db.transaction(write=False) as cur:
            items = {r[0]: {"prompt": r[1], "responses": json.loads(r[2]), "is_gold": bool(r[3]),
                            "gold_ranking": None if r[4] is None else json.loads(r[4]), "label_count": r[5]}
                     for r in cur.all("SELECT id, prompt, responses, is_gold, gold_ranking, label_count FROM items")}
            labelers = {r[0]: {"name": r[1], "created_at": r[2]}
                        for r in cur.all("SELECT id, name, created_at FROM labelers WHERE is_admin = 0 ORDER BY id")}
            labels = [{"id": r[0], "item_id": r[1], "labeler": labelers[r[2]]["name"], "kind": r[3],
                       "tiers": None if r[4] is None else json.loads(r[4]), "strength": r[5], "reason": r[6],
                       "started_at": r[7], "submitted_at": r[8]}
                      for r in cur.all("SELECT id, item_id, labeler_id, kind, tiers, strength, reason, started_at, "
                                       "submitted_at FROM labels ORDER BY id") if r[2] in labelers]
        return {"items": items, "labelers": [v["name"] for v in labelers.values()], "labels": labels,
                "settings": dict(self.settings)}


def _parse_submission(payload: Any) -> tuple[int, str, list | None, str | None, str | None]:
    """Check a submission's shape (not yet against the item): every mistake a 400 naming the field."""
    if not isinstance(payload, dict):
        raise LabelingError(400, "expected a JSON object {\"item_id\", \"kind\", \"ranking\"}")
    unknown = set(payload) - {"item_id", "kind", "ranking", "strength", "reason"}
    if unknown:
        raise LabelingError(400, f"unknown field(s) {', '.join(sorted(unknown))}")
    item_id = payload.get("item_id")
    if isinstance(item_id, bool) or not isinstance(item_id, int):
        raise LabelingError(400, f"item_id: expected an integer, got {item_id!r}")
    if not 0 < item_id < 2**31:  # the column is a 32-bit INTEGER on PostgreSQL
        raise LabelingError(404, f"unknown item {item_id}")
    kind = payload.get("kind", "ranking")
    if kind not in KINDS:
        raise LabelingError(400, f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    ranking, strength, reason = payload.get("ranking"), payload.get("strength"), payload.get("reason")
    if kind == "ranking" and ranking is None:
        raise LabelingError(400, "ranking: missing (positions as shown, best first, e.g. [2, 0, 1] or [[2], [0, 1]])")
    if kind != "ranking" and ranking is not None:
        raise LabelingError(400, f"ranking: not allowed with kind {kind!r}")
    if strength is not None and strength not in STRENGTH_MARGINS:
        raise LabelingError(400, f"strength: expected one of {', '.join(STRENGTH_MARGINS)}, got {strength!r}")
    if kind == "skip" and (not isinstance(reason, str) or not reason.strip()):
        raise LabelingError(400, "reason: a skip needs a reason (a non-empty string)")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise LabelingError(400, f"reason: expected a string of at most {MAX_REASON_CHARS} characters")
    return item_id, kind, ranking, strength, (reason.strip() if isinstance(reason, str) else None)


def _tiers_in_candidates(ranking: Any, order: list[int], k: int) -> list[list[int]]:
    """The ranking (shown positions, best first; a flat list or tiers) as tiers of candidate
    indices; a 400 unless it is a permutation of the K positions."""
    if not isinstance(ranking, list) or not ranking:
        raise LabelingError(400, f"ranking: expected a list, got {ranking!r}")
    tiers = [t if isinstance(t, list) else [t] for t in ranking]
    flat = [p for tier in tiers for p in tier]
    if (any(not tier for tier in tiers) or any(isinstance(p, bool) or not isinstance(p, int) for p in flat)
            or sorted(flat) != list(range(k))):
        raise LabelingError(400, f"ranking: expected a permutation of the {k} positions 0..{k - 1} "
                                 f"(ties as sub-lists), got {ranking!r}")
    return [sorted(order[p] for p in tier) for tier in tiers]


__all__ = ["Account", "LabelStore", "LabelingError", "StoreError", "STRENGTH_MARGINS", "hash_token"]
