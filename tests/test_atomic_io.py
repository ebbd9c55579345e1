"""The one atomic writer: a reader sees the old file or the new one, never half of one."""

import json

import pytest

from rlhf.atomic_io import fsync_tree, write_json_atomic, write_jsonl, write_text_atomic


def test_writes_create_folders_keep_utf8_and_leave_no_temporary_file(tmp_path):
    path = write_jsonl(tmp_path / "a" / "b.jsonl", ({"prompt": p} for p in ("café", "2")))
    assert path == tmp_path / "a" / "b.jsonl"
    assert path.read_text(encoding="utf-8") == '{"prompt": "café"}\n{"prompt": "2"}\n'
    write_json_atomic(tmp_path / "c.json", {"x": 1.5}, indent=None)
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 1.5}
    write_text_atomic(tmp_path / "c.json", "replaced")
    assert (tmp_path / "c.json").read_text() == "replaced"
    fsync_tree(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b.jsonl", "c.json"]


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"n": 1}, {"n": 2}])

    def records():
        yield {"n": 3}
        raise RuntimeError("the producer failed half way")

    with pytest.raises(RuntimeError, match="half way"):
        write_jsonl(path, records())
    assert path.read_text() == '{"n": 1}\n{"n": 2}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["data.jsonl"]  # the temporary file is gone
    with pytest.raises(TypeError):
        write_json_atomic(path, {"not serialisable": object()})
    assert path.read_text() == '{"n": 1}\n{"n": 2}\n'
