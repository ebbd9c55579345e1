"""The store on a real PostgreSQL server: a throwaway cluster (Debian's `postgresql` binaries,
initdb + pg_ctl) started in a temporary folder for this module and stopped after it. Then the
concurrency test (20 labelers, 200 items, overlap 2 -> exactly 400 labels), the schema check,
and the rules that differ by dialect (row locks, 32-bit ids).

Without the binaries the module is skipped, unless RLHF_REQUIRE_POSTGRES=1 (set by .ci/run,
which installs them), where the skip becomes a failure. PostgreSQL refuses to run as root: as
root the cluster runs as the `postgres` user (runuser)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from labeling_live import free_port

pytest.importorskip("psycopg")


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="module")
def pg_url():
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("RLHF_REQUIRE_POSTGRES") == "1":
            pytest.fail("RLHF_REQUIRE_POSTGRES=1 but no pg_ctl found (apt-get install postgresql)")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
    if os.geteuid() == 0:  # postgres will not run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres", "postgres")
    data, port = folder / "data", free_port()
    run = lambda *cmd: subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, text=True)  # noqa: E731
    run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(bindir / "pg_ctl", "-D", data, "-l", folder / "log", "-w", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100", "start")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fresh_db(pg_url):
    """A new empty database in the cluster for each test."""
    import psycopg

    name = f"t{free_port()}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_url.rsplit("/", 1)[0] + f"/{name}"


def test_twenty_labelers_two_hundred_items_overlap_two_on_postgresql(fresh_db):
    from test_labeling_concurrency import N_ITEMS, N_LABELERS, OVERLAP, run_concurrency

    seconds = run_concurrency(fresh_db)
    print(f"postgresql: {N_ITEMS * OVERLAP} labels by {N_LABELERS} concurrent labelers in {seconds:.1f} s")


def test_schema_version_and_bad_input_on_postgresql(fresh_db):
    import psycopg

    from rlhf.feedback.labeling import Item, LabelingError, LabelStore, StoreError

    with pytest.raises(StoreError, match="holds no labeling project"):
        LabelStore(fresh_db)
    store = LabelStore.create(fresh_db, [Item("p", ["a", "b"], [True, True], 1)], overlap=1)
    with pytest.raises(StoreError, match="already holds a labeling project"):
        LabelStore.create(fresh_db, [Item("p", ["a", "b"], [True, True], 1)])
    a = store.authenticate(store.add_labeler("a"))
    item = store.next_item(a)
    for payload, status in [({"item_id": 2**40, "kind": "all_bad"}, 404), ({"item_id": 1, "ranking": [0, 0]}, 400)]:
        with pytest.raises(LabelingError) as err:
            store.submit(a, payload)
        assert err.value.status == status
    store.submit(a, {"item_id": item["item_id"], "ranking": [1, 0], "strength": "slightly_better"})
    assert store.dump()["labels"][0]["strength"] == "slightly_better"
    store.close()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 7")
    with pytest.raises(StoreError, match=r"schema version \[7\]"):
        LabelStore(fresh_db)
    with pytest.raises(StoreError, match="cannot connect to postgresql://postgres@127.0.0.1:1/x"):
        LabelStore("postgresql://postgres@127.0.0.1:1/x")
