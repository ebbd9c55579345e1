"""Every kind of bad record gives a DataError whose message names the file, the line and the
field; with skip_bad_records the bad ones are logged, skipped and counted."""

import gzip
import json
import logging

import pytest

from rlhf.data import DataError, load_comparisons, load_demonstrations, load_prompts, load_rankings


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def error_of(loader, tmp_path, record, name="bad.jsonl", **kwargs):
    """Load a file whose line 1 is fine and line 2 is ``record``; return the DataError."""
    good = {"prompt": "P", "completion": "C", "chosen": "a", "rejected": "b", "responses": ["a", "b"],
            "ranking": [0, 1]}
    path = write_lines(tmp_path / name, [json.dumps(good), json.dumps(record)])
    with pytest.raises(DataError) as info:
        loader(path, **kwargs)
    err = info.value
    assert err.path == str(path) and err.line == 2
    assert str(err).startswith(f"{path}, line 2")
    return err


# --- reading ------------------------------------------------------------------------------------

def test_invalid_json_names_the_line(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['{"prompt": "P", "completion": "C"}', "", '{"prompt": "P",'])
    with pytest.raises(DataError, match=r"d\.jsonl, line 3: invalid JSON"):
        load_demonstrations(path)


def test_bad_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "P", "completion": "C"}\n{"prompt": "\xff\xfe", "completion": "C"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl, line 2: invalid UTF-8"):
        load_demonstrations(path)


def test_bad_utf8_in_json_array_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'[\n{"prompt": "P", "completion": "C"},\n{"prompt": "\xff", "completion": "C"}\n]')
    with pytest.raises(DataError, match=r"d\.json, line 3: invalid UTF-8"):
        load_demonstrations(path)


def test_record_that_is_not_an_object(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", ['["prompt", "completion"]'])
    with pytest.raises(DataError, match=r"d\.jsonl, line 1: record is a JSON array, expected an object"):
        load_demonstrations(path)
    array = tmp_path / "a.json"
    array.write_text('[{"prompt": "P", "completion": "C"}, 3]', encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.json, line 2: record is a JSON number"):
        load_demonstrations(array)


@pytest.mark.parametrize("name,content", [("e.jsonl", "\n\n"), ("e.json", "[]"), ("e.json", "")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=r"e\.jsonl?: file is empty"):
        load_demonstrations(path)


def test_empty_gz_file_and_unknown_extension(tmp_path):
    path = tmp_path / "e.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("")
    with pytest.raises(DataError, match="file is empty"):
        load_comparisons(path)
    other = tmp_path / "d.csv"
    other.write_text("a,b\n")
    with pytest.raises(DataError, match=r"d\.csv: unknown file type"):
        load_comparisons(other)


# --- field validation ---------------------------------------------------------------------------

@pytest.mark.parametrize("record,field,message", [
    ({"prompt": "P"}, "completion", "missing field"),
    ({"prompt": 3, "completion": "C"}, "prompt", "expected a string, got int"),
    ({"prompt": "P", "completion": "  \n"}, "completion", "text is empty or whitespace only"),
    ({"prompt": "P", "completion": "C", "labeler": 7}, "labeler", "expected a string or null"),
    ({"messages": [{"role": "user", "content": "Hi"}]}, "messages", "the last message must be the assistant's"),
    ({"messages": [{"role": "bot", "content": "Hi"}, {"role": "assistant", "content": "A"}]}, "messages",
     "message 0 has role 'bot'"),
    ({"messages": [{"role": "user", "content": ["Hi"]}, {"role": "assistant", "content": "A"}]}, "messages",
     "message 0 content must be a string, got list"),
    ({"messages": "Hi"}, "messages", "expected a non-empty list of messages"),
])
def test_demonstration_errors(tmp_path, record, field, message):
    err = error_of(load_demonstrations, tmp_path, record)
    assert err.field == field
    assert f"line 2, field {field!r}: {message}" in str(err)


@pytest.mark.parametrize("record,field,message", [
    ({"prompt": "P", "chosen": "a"}, "rejected", "missing field"),
    ({"prompt": "P", "chosen": "a", "rejected": "a"}, "rejected", "chosen and rejected are identical"),
    ({"chosen": "\n\nHuman: Q\n\nAssistant: A", "rejected": "\n\nHuman: Q\n\nAssistant: A"}, "rejected",
     "chosen and rejected are identical"),
    ({"prompt": "P", "chosen": "a", "rejected": "b", "margin": "big"}, "margin", "expected a finite number"),
    ({"prompt": "P", "chosen": "a", "rejected": "b", "margin": True}, "margin", "expected a finite number"),
    ({"prompt": "P", "chosen": "", "rejected": "b"}, "chosen", "text is empty"),
    ({"chosen": "no dialogue here", "rejected": "another text"}, "chosen", "chosen and rejected share no prompt"),
    ({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "b"}]}, "rejected",
     "chosen and rejected must differ only in a final assistant message (after 1 shared message(s), rejected has 1 "
     "more, the last from 'user')"),
    ({"prompt": [{"role": "user", "content": 1}], "chosen": [{"role": "assistant", "content": "a"}],
      "rejected": [{"role": "assistant", "content": "b"}]}, "prompt", "message 0 content must be a string"),
])
def test_comparison_errors(tmp_path, record, field, message):
    err = error_of(load_comparisons, tmp_path, record)
    assert err.field == field
    assert f"line 2, field {field!r}: {message}" in str(err)


@pytest.mark.parametrize("extra", [{"prompt": "P", "chosen": "a", "rejected": "b"},
                                   {"prompt": "P", "responses": ["a", "b", "c"], "ranking": [2, 0, 1]}])
@pytest.mark.parametrize("weight,shown", [(-1, "-1"), ("x", "'x'"), (float("nan"), "nan"), (float("inf"), "inf"),
                                          (True, "True"), ([1], "[1]")])
def test_a_bad_record_weight_names_file_line_and_field(tmp_path, extra, weight, shown):
    err = error_of(load_comparisons, tmp_path, {**extra, "weight": weight})
    assert err.field == "weight"
    assert f"line 2, field 'weight': expected a finite number >= 0 or null, got {shown}" in str(err)


def test_record_weights_load_and_each_pair_of_a_ranking_inherits_its_weight(tmp_path):
    path = write_lines(tmp_path / "w.jsonl", [
        json.dumps({"prompt": "P", "responses": ["a", "b", "c"], "ranking": [2, 0, 1], "weight": 0.25}),
        json.dumps({"prompt": "P", "chosen": "a", "rejected": "b", "weight": 0}),
        json.dumps({"prompt": "P", "chosen": "a", "rejected": "b", "weight": None}),
        json.dumps({"prompt": "P", "chosen": "a", "rejected": "b"})])
    pairs = load_comparisons(path)
    # K = 3 -> 3 pairs, each 0.25; then 0 (a valid weight, not "missing"), null and absent -> None (= 1).
    assert [p.weight for p in pairs] == [0.25, 0.25, 0.25, 0.0, None, None]
    assert [(p.chosen, p.rejected) for p in pairs[:3]] == [("c", "a"), ("c", "b"), ("a", "b")]
    assert [r.weight for r in load_rankings(write_lines(tmp_path / "r.jsonl", [
        json.dumps({"prompt": "P", "responses": ["a", "b"], "ranking": [1, 0], "weight": 2})]))] == [2.0]


@pytest.mark.parametrize("record,field,message", [
    ({"prompt": "P", "responses": ["a", "b", "c"], "ranking": [0, 1, 1]}, "ranking", "expected a permutation of 0..2"),
    ({"prompt": "P", "responses": ["a", "b"], "ranking": [0, 2]}, "ranking", "expected a permutation of 0..1"),
    ({"prompt": "P", "responses": ["a", "b"], "ranking": [0]}, "ranking", "expected a permutation"),
    ({"prompt": "P", "responses": ["a", "b"], "ranking": [True, False]}, "ranking", "expected a permutation"),
    ({"prompt": "P", "responses": ["a"], "ranking": [0]}, "responses", "expected a list of at least 2 responses"),
    ({"prompt": "P", "responses": ["a", "a"], "ranking": [0, 1]}, "responses", "responses 0 and 1 are identical"),
    ({"prompt": "P", "responses": ["a", 5], "ranking": [0, 1]}, "responses[1]", "expected a string, got int"),
])
def test_ranking_errors(tmp_path, record, field, message):
    for loader in (load_rankings, load_comparisons):
        err = error_of(loader, tmp_path, record)
        assert err.field == field
        assert f"line 2, field {field!r}: {message}" in str(err)


def test_prompt_errors(tmp_path):
    err = error_of(load_prompts, tmp_path, {"prompt": [{"role": "assistant", "content": "Hi"}]})
    assert "field 'prompt': the last prompt message is the assistant's" in str(err)
    err = error_of(load_prompts, tmp_path, {"text": "P"})
    assert "field 'prompt': missing field (fields present: text)" in str(err)


# --- skipping -----------------------------------------------------------------------------------

def test_skip_bad_records_logs_each_and_the_count(tmp_path, caplog):
    path = write_lines(tmp_path / "mixed.jsonl", [
        json.dumps({"prompt": "P", "chosen": "a", "rejected": "b"}),
        "not json",
        json.dumps({"prompt": "P", "chosen": "a", "rejected": "a"}),
        json.dumps([1]),
        json.dumps({"prompt": "P", "chosen": "c", "rejected": "d", "margin": 1.5}),
    ])
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_comparisons(path)
    with caplog.at_level(logging.WARNING, logger="rlhf.data"):
        comparisons = load_comparisons(path, skip_bad_records=True)
    assert [c.source.line for c in comparisons] == [1, 5]
    assert [e.line for e in comparisons.skipped] == [2, 3, 4]
    assert comparisons.skipped[1].field == "rejected"
    messages = [r.getMessage() for r in caplog.records]
    assert any("mixed.jsonl, line 3, field 'rejected': chosen and rejected are identical" in m for m in messages)
    assert any(m.endswith("skipped 3 bad records of 5") for m in messages)


def test_all_records_bad_is_an_error_even_when_skipping(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [json.dumps({"prompt": "P"})])
    with pytest.raises(DataError, match="all 1 records are bad"):
        load_demonstrations(path, skip_bad_records=True)


def test_corrupt_gzip_is_a_data_error(tmp_path):
    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match=r"c\.jsonl\.gz: cannot read file"):
        load_comparisons(path)
