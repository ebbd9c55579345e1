"""The labeling store's rules, without a web server: assignment, overlap, reservations, gold,
tokens, schema checks, submissions and the export for `rlhf rm`."""

import json
import sqlite3

import pytest

from rlhf.data.errors import DataError
from rlhf.data.formats import load_comparisons
from rlhf.feedback.labeling import Item, LabelingError, LabelStore, StoreError, load_items
from rlhf.feedback.labeling.report import export_records, labeler_weights_option, quality_report


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def items(n, k=3):
    return [Item(f"prompt {i}", [f"r{i}-{j}" for j in range(k)], [True] * k, i + 1) for i in range(n)]


def make(tmp_path, n=3, k=3, gold=(), clock=None, **settings):
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    LabelStore.create(url, items(n, k), list(gold), **settings).close()
    return LabelStore(url, clock=clock or Clock())


def accounts(store, *names):
    return [store.authenticate(store.add_labeler(name)) for name in names]


def rank_as_shown(store, who):
    item = store.next_item(who)
    return item, store.submit(who, {"item_id": item["item_id"], "kind": "ranking", "ranking": list(range(item["k"]))})


def test_each_item_gets_overlap_distinct_labelers_and_no_more(tmp_path):
    store = make(tmp_path, n=1, overlap=2)
    a, b, c = accounts(store, "a", "b", "c")
    rank_as_shown(store, a)
    assert store.next_item(a) is None  # a never sees the item twice
    rank_as_shown(store, b)
    assert store.next_item(c) is None  # two labels: the item is full
    assert store.dump()["items"][1]["label_count"] == 2


def test_a_live_reservation_holds_a_place_and_an_expired_one_frees_it(tmp_path):
    clock = Clock()
    store = make(tmp_path, n=1, overlap=1, reservation_seconds=60, clock=clock)
    a, b = accounts(store, "a", "b")
    held = store.next_item(a)
    assert store.next_item(a)["item_id"] == held["item_id"]  # a reload shows the same item
    assert store.next_item(b) is None
    clock.t += 61
    taken = store.next_item(b)
    assert taken["item_id"] == held["item_id"]
    with pytest.raises(LabelingError, match="reservation of item 1 expired 1 s ago") as err:
        store.submit(a, {"item_id": 1, "kind": "ranking", "ranking": [0, 1, 2]})
    assert err.value.status == 409
    store.submit(b, {"item_id": 1, "kind": "ranking", "ranking": [0, 1, 2]})
    assert [lab["labeler"] for lab in store.dump()["labels"]] == ["b"]


def test_a_skip_does_not_fill_a_place_but_is_not_shown_again(tmp_path):
    store = make(tmp_path, n=1, overlap=1)
    a, b = accounts(store, "a", "b")
    item = store.next_item(a)
    store.submit(a, {"item_id": item["item_id"], "kind": "skip", "reason": "not English"})
    assert store.next_item(a) is None
    assert store.next_item(b)["item_id"] == item["item_id"]
    assert store.progress(a) == {"labelled": 0, "skipped": 1, "available": 0}


def test_the_order_shown_is_stored_and_rankings_map_back_to_candidates(tmp_path):
    store = make(tmp_path, n=1, k=4)
    (a,) = accounts(store, "a")
    item = store.next_item(a)
    shown = item["responses"]
    # best first, in positions as shown: the third shown, then the first, then a tie of the others
    store.submit(a, {"item_id": 1, "kind": "ranking", "ranking": [2, 0, [1, 3]]})
    label = store.dump()["labels"][0]
    candidates = store.dump()["items"][1]["responses"]
    assert [[candidates[i] for i in tier] for tier in label["tiers"]] == [[shown[2]], [shown[0]],
                                                                          sorted([shown[1], shown[3]])]


@pytest.mark.parametrize("payload, status, message", [
    ({"item_id": 1, "kind": "ranking", "ranking": [0, 0, 1]}, 400, "expected a permutation of the 3 positions"),
    ({"item_id": 1, "kind": "ranking", "ranking": [0, 1]}, 400, "expected a permutation of the 3 positions"),
    ({"item_id": 1, "kind": "ranking", "ranking": [0, 1, 3]}, 400, "expected a permutation of the 3 positions"),
    ({"item_id": 1, "kind": "ranking", "ranking": [[0, 1], []]}, 400, "expected a permutation"),
    ({"item_id": 1, "kind": "ranking", "ranking": [0, 1, 2], "strength": "better"}, 400, "strength is for a ranking of 2"),
    ({"item_id": 1, "kind": "ranking"}, 400, "ranking: missing"),
    ({"item_id": 1, "kind": "skip"}, 400, "a skip needs a reason"),
    ({"item_id": "1", "kind": "all_bad"}, 400, "item_id: expected an integer"),
    ({"item_id": 1, "kind": "best"}, 400, "kind: expected one of ranking, all_bad, skip"),
    ({"item_id": 1, "kind": "all_bad", "extra": 1}, 400, "unknown field(s) extra"),
    ({"item_id": 99, "kind": "all_bad"}, 404, "unknown item 99"),
    ({"item_id": 2, "kind": "all_bad"}, 409, "item 2 is not reserved for a"),
])
def test_bad_submissions_are_refused_and_write_nothing(tmp_path, payload, status, message):
    store = make(tmp_path, n=2)
    (a,) = accounts(store, "a")
    assert store.next_item(a)["item_id"] == 1
    with pytest.raises(LabelingError) as err:
        store.submit(a, payload)
    assert err.value.status == status and message in err.value.message
    assert store.dump()["labels"] == [] and store.dump()["items"][1]["label_count"] == 0
    assert store.next_item(a)["item_id"] == 1  # the reservation is still there


def test_a_second_submission_of_the_same_label_is_a_conflict(tmp_path):
    store = make(tmp_path, n=2)
    (a,) = accounts(store, "a")
    item, _ = rank_as_shown(store, a)
    with pytest.raises(LabelingError, match="already labelled by a; a label is stored once") as err:
        store.submit(a, {"item_id": item["item_id"], "kind": "ranking", "ranking": [0, 1, 2]})
    assert err.value.status == 409 and len(store.dump()["labels"]) == 1


def test_gold_items_are_mixed_in_at_the_rate_and_ignore_overlap(tmp_path):
    gold = [Item("gold 1", ["good", "bad"], [True, True], 1, [0, 1]), Item("gold 2", ["x", "y"], [True, True], 2, [1, 0])]
    store = make(tmp_path, n=10, gold=gold, gold_rate=0.25, overlap=1)
    a, b = accounts(store, "a", "b")
    # gold is due while gold labels < 0.25 * (labels + 1): at labels 0 and 4 -> G R R R G R R R
    seen = [rank_as_shown(store, a)[0]["prompt"].startswith("gold") for _ in range(8)]
    assert seen == [True, False, False, False, True, False, False, False]
    assert rank_as_shown(store, b)[0]["prompt"].startswith("gold")  # overlap 1 does not apply to gold
    report = quality_report(store.dump())
    assert report["labelers"][0]["gold_labels"] == 2 and report["labelers"][0]["gold_accuracy"] is not None


def test_tokens_are_random_stored_hashed_and_the_admin_token_rotates(tmp_path):
    store = make(tmp_path)
    token = store.add_labeler("alice")
    assert len(token) >= 32 and store.add_labeler("bob") != token
    admin = store.admin_token()
    rows = sqlite3.connect(tmp_path / "labels.db").execute("SELECT token_hash FROM labelers").fetchall()
    assert all(token not in row[0] and admin not in row[0] and len(row[0]) == 64 for row in rows)
    assert store.authenticate(token).name == "alice" and store.authenticate(admin).is_admin
    assert store.authenticate("nope") is None and store.authenticate("") is None
    new_admin = store.admin_token()
    assert store.authenticate(admin) is None and store.authenticate(new_admin).is_admin
    with pytest.raises(LabelingError, match="already exists"):
        store.add_labeler("alice")
    with pytest.raises(LabelingError, match="use 1-64 letters"):
        store.add_labeler("<b>x</b>")


def test_schema_is_created_once_and_its_version_checked(tmp_path):
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    with pytest.raises(StoreError, match="holds no labeling project: run `rlhf label init"):
        LabelStore(url)
    LabelStore.create(url, items(1)).close()
    with pytest.raises(StoreError, match="already holds a labeling project"):
        LabelStore.create(url, items(1))
    conn = sqlite3.connect(tmp_path / "labels.db")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    with pytest.raises(StoreError, match=r"has labeling schema version \[99\], this rlhf reads version 1"):
        LabelStore(url)
    with pytest.raises(StoreError, match="unknown database URL"):
        LabelStore("mysql://x/y")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_malformed_candidates_file_is_named_by_file_line_and_field(tmp_path):
    path = tmp_path / "candidates.jsonl"
    good = {"prompt": "p", "responses": ["a", "b"]}
    cases = [({"prompt": "p", "responses": ["a"]}, "'responses': expected a list of 2 to 9 strings"),
             ({"responses": ["a", "b"]}, "'prompt': missing field"),
             ({"prompt": "p", "responses": ["a", "a "]}, "'responses': two responses are identical"),
             ({"prompt": "p", "responses": ["a", 3]}, "'responses[1]': expected a non-empty string"),
             ({"prompt": "p", "responses": ["a", "b"], "ended": [True]}, "'ended': expected a list of 2")]
    for bad, message in cases:
        path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(DataError) as err:
            load_items(path)
        assert str(err.value).startswith(f"{path}, line 2, field ") and message in str(err.value)
    path.write_text(json.dumps({**good, "ranking": [0, 0]}) + "\n")
    with pytest.raises(DataError, match="line 1, field 'ranking': expected a permutation of 0..1"):
        load_items(path, gold=True)


def test_export_writes_rankings_comparisons_with_margin_and_weights_that_rm_loads(tmp_path):
    store = make(tmp_path, n=4, k=2, overlap=1, ramp=4)
    (a,) = accounts(store, "a")
    kinds = [{"kind": "ranking", "ranking": [1, 0]}, {"kind": "ranking", "ranking": [0, 1], "strength": "better"},
             {"kind": "ranking", "ranking": [[0, 1]]}, {"kind": "all_bad"}]
    for payload in kinds:
        item = store.next_item(a)
        store.submit(a, {"item_id": item["item_id"], **payload})
    dump = store.dump()
    report = quality_report(dump)
    assert report["labelers"][0]["weight"] == pytest.approx(1.0)  # 4 labels, ramp 4, nothing else known
    records, counts = export_records(dump, report)
    assert counts == {"exported": 3, "all_bad": 1, "with_ties": 1}
    ranking = next(r for r in records if "ranking" in r)
    # Per label, not per labeler: a's 1st label weighs 1 x 1 x min(1, 1/4) = 0.25, its 2nd 2/4 = 0.5.
    assert ranking["labeler"] == "a" and ranking["weight"] == 0.25 and len(ranking["responses"]) == 2
    margin = next(r for r in records if "margin" in r)
    assert margin["margin"] == pytest.approx(2 / 3) and margin["weight"] == 0.5
    assert len(records) == 2  # the tie says nothing: no pair
    path = tmp_path / "rankings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    pairs = load_comparisons(path)
    assert len(pairs) == 2 and {p.labeler for p in pairs} == {"a"} and sorted(p.margin or 0 for p in pairs)[1] > 0
    assert labeler_weights_option(report) == "a=1"
    row = report["labelers"][0]
    assert export_records(dump, {**report, "labelers": [{**row, "weight": 0.1}]}, min_weight=0.5)[0] == []
    zero = {**report, "labelers": [{**row, "agreement": 0.0, "weight": 0.0}]}  # kept, each record at weight 0
    assert [r["weight"] for r in export_records(dump, zero)[0]] == [0.0, 0.0] and labeler_weights_option(zero) == "a=0"
    assert [p.weight for p in pairs] == [0.25, 0.5]  # rm reads the record weights
    assert export_records(dump, zero, min_weight=1e-6)[0] == []


def test_export_weighs_each_label_by_the_labelers_experience_at_that_label(tmp_path):
    # A hand-made dump: a gives a gold label, a skip, a ranking, an "all bad", two rankings; b one ranking.
    # k counts what experience counts (gold and "all bad" too, skips not): a's rankings are its
    # labels 2, 4, 5. ramp 4, a: agreement 0.8 x gold 0.5 = 0.4 -> 0.4 x 2/4 = 0.2, 0.4 x 1, 0.4 x 1;
    # b: 1 x 1 x 1/4 = 0.25.
    items = {i: {"prompt": f"p{i}", "responses": ["x", "y"], "is_gold": i == 0,
                 "gold_ranking": [0, 1] if i == 0 else None, "label_count": 1} for i in range(6)}
    label = lambda who, item, kind="ranking": {"labeler": who, "item_id": item, "kind": kind,  # noqa: E731
                                               "tiers": [[1], [0]] if kind == "ranking" else None, "strength": None}
    dump = {"items": items, "labels": [label("a", 0), label("a", 1, "skip"), label("a", 1), label("a", 2, "all_bad"),
                                       label("b", 3), label("a", 4), label("a", 5)]}
    report = {"rule": {"ramp": 4}, "labelers": [{"name": "a", "agreement": 0.8, "gold": 0.5, "weight": 0.4},
                                                {"name": "b", "agreement": 1.0, "gold": 1.0, "weight": 0.25}]}
    records, counts = export_records(dump, report)
    assert [(r["labeler"], r["prompt"], r["weight"]) for r in records] == [
        ("a", "p1", 0.2), ("b", "p3", 0.25), ("a", "p4", 0.4), ("a", "p5", 0.4)]
    assert counts == {"gold": 1, "skip": 1, "all_bad": 1, "exported": 4}
    # --min_weight drops labelers by their weight now (b: 0.25), not a's early label (0.2 < 0.3).
    kept, counts = export_records(dump, report, min_weight=0.3)
    assert [(r["labeler"], r["weight"]) for r in kept] == [("a", 0.2), ("a", 0.4), ("a", 0.4)]
    assert counts["below_min_weight"] == 1
    path = tmp_path / "rankings.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert [p.weight for p in load_comparisons(path)] == [0.2, 0.25, 0.4, 0.4]  # what rm trains with
