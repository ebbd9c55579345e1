"""Every accepted layout parses into the right normalized record, from every container
(JSONL, .jsonl.gz, JSON array, {"data": [...]}, saved datasets folder), and the real shared
files load with their documented counts."""

import gzip
import json
from pathlib import Path

import pytest

from rlhf.data import (Comparison, Demonstration, PromptRecord, Ranking, Source, load_comparisons,
                       load_demonstrations, load_gsm8k_solution_comparisons, load_prompts, load_rankings,
                       rankings_to_comparisons, read_records, split_hh_dialogue)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
HH_TEST = SHARED / "hh-rlhf" / "harmless-base-test.jsonl.gz"
GSM8K = SHARED / "gsm8k"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- reading ------------------------------------------------------------------------------------

def test_jsonl_keeps_physical_line_numbers_and_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n', encoding="utf-8")
    rows = list(read_records(path))
    assert [r["a"] for r, _ in rows] == [1, 2]
    assert [s.line for _, s in rows] == [1, 4]
    assert rows[1][1] == Source(str(path), 4)


def test_jsonl_gz_loads(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"prompt": "p", "completion": "c"}) + "\n")
    demos = load_demonstrations(path)
    assert demos == [Demonstration("p", "c", Source(str(path), 1))]


def test_json_array_and_data_wrapper_use_record_index(tmp_path):
    records = [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}]
    array = tmp_path / "a.json"
    array.write_text(json.dumps(records, indent=2), encoding="utf-8")
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"data": records}), encoding="utf-8")
    for path in (array, wrapped):
        demos = load_demonstrations(path)
        assert [d.completion for d in demos] == ["c1", "c2"]
        assert [d.source.line for d in demos] == [1, 2]


def test_saved_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "ds"
    datasets.Dataset.from_list([{"prompt": "p1", "chosen": "a", "rejected": "b"},
                                {"prompt": "p2", "chosen": "c", "rejected": "d"}]).save_to_disk(str(folder))
    comparisons = load_comparisons(folder)
    assert [(c.prompt, c.chosen, c.rejected) for c in comparisons] == [("p1", "a", "b"), ("p2", "c", "d")]
    assert comparisons[1].source == Source(str(folder), 2)


# --- demonstrations -----------------------------------------------------------------------------

def test_prompt_completion_with_labeler(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "completion": "A", "labeler": "ann"}])
    assert load_demonstrations(path)[0] == Demonstration("Q", "A", Source(str(path), 1), "ann")


def test_messages_use_default_hh_template_without_tokenizer(tmp_path):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}]
    demo = load_demonstrations(write_jsonl(tmp_path / "d.jsonl", [{"messages": messages}]))[0]
    assert demo.prompt == "Be brief.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: 2+2?\n\nAssistant:"
    assert demo.completion == " 4"
    assert demo.prompt + demo.completion == "Be brief.\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: 2+2?\n\nAssistant: 4"


def test_conversational_prompt_completion(tmp_path):
    record = {"prompt": [{"role": "user", "content": "Hi"}], "completion": [{"role": "assistant", "content": "Yo"}]}
    demo = load_demonstrations(write_jsonl(tmp_path / "d.jsonl", [record]))[0]
    assert (demo.prompt, demo.completion) == ("\n\nHuman: Hi\n\nAssistant:", " Yo")


def test_field_mapping_and_user_turn_wrapping(tmp_path):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "2\n#### 2"}])
    raw = load_demonstrations(path, prompt_field="question", completion_field="answer")[0]
    assert (raw.prompt, raw.completion) == ("1+1?", "2\n#### 2")
    chat = load_demonstrations(path, prompt_field="question", completion_field="answer", apply_chat_template=True)[0]
    assert (chat.prompt, chat.completion) == ("\n\nHuman: 1+1?\n\nAssistant:", " 2\n#### 2")


# --- comparisons --------------------------------------------------------------------------------

def test_explicit_comparison_with_margin_and_labeler(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"prompt": "P", "chosen": "good", "rejected": "bad",
                                               "margin": 2, "labeler": "l1"}])
    assert load_comparisons(path)[0] == Comparison("P", "good", "bad", 2.0, "l1", Source(str(path), 1))


def test_hh_prefix_split_on_hand_written_dialogue():
    prompt = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Can you help me?\n\nAssistant:"
    chosen, rejected = prompt + " Sure, what do you need?", prompt + " Sure not."
    assert split_hh_dialogue(chosen, rejected, Source("x", 1)) == (prompt, " Sure, what do you need?", " Sure not.")


def test_hh_split_uses_common_prefix_not_last_assistant_marker(tmp_path):
    # As in 5 real records: the chosen reply itself contains "\n\nAssistant:".
    prompt = "\n\nHuman: Hi\n\nAssistant:"
    record = {"chosen": prompt + " A\n\nAssistant: B", "rejected": prompt + " C"}
    c = load_comparisons(write_jsonl(tmp_path / "hh.jsonl", [record]))[0]
    assert (c.prompt, c.chosen, c.rejected) == (prompt, " A\n\nAssistant: B", " C")


def test_conversational_comparison_explicit_prompt(tmp_path):
    record = {"prompt": [{"role": "user", "content": "Hi"}],
              "chosen": [{"role": "assistant", "content": "Hello"}],
              "rejected": [{"role": "assistant", "content": "Go away"}]}
    c = load_comparisons(write_jsonl(tmp_path / "c.jsonl", [record]))[0]
    assert (c.prompt, c.chosen, c.rejected) == ("\n\nHuman: Hi\n\nAssistant:", " Hello", " Go away")


def test_conversational_comparison_full_lists_sharing_a_prefix(tmp_path):
    shared = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
              {"role": "user", "content": "Joke?"}]
    record = {"chosen": shared + [{"role": "assistant", "content": "Knock knock"}],
              "rejected": shared + [{"role": "assistant", "content": "No"}]}
    c = load_comparisons(write_jsonl(tmp_path / "c.jsonl", [record]))[0]
    assert c.prompt == "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Joke?\n\nAssistant:"
    assert (c.chosen, c.rejected) == (" Knock knock", " No")


# --- rankings -----------------------------------------------------------------------------------

def test_rankings_expand_to_all_pairs_with_better_ranked_chosen(tmp_path):
    responses = ["r0", "r1", "r2", "r3"]
    ranking = [2, 0, 3, 1]  # best first: r2 > r0 > r3 > r1
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "P", "responses": responses, "ranking": ranking,
                                               "labeler": "ann"}])
    (r,) = load_rankings(path)
    assert r == Ranking("P", responses, ranking, "ann", Source(str(path), 1))
    pairs = rankings_to_comparisons([r])
    assert len(pairs) == 4 * 3 // 2
    position = {f"r{index}": rank for rank, index in enumerate(ranking)}
    assert all(position[p.chosen] < position[p.rejected] for p in pairs)
    assert {(p.chosen, p.rejected) for p in pairs} == {("r2", "r0"), ("r2", "r3"), ("r2", "r1"),
                                                       ("r0", "r3"), ("r0", "r1"), ("r3", "r1")}
    assert all(p.labeler == "ann" and p.source == r.source and p.prompt == "P" for p in pairs)


def test_load_comparisons_mixes_pairs_and_rankings_per_record(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [
        {"prompt": "P", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "responses": ["x", "y", "z"], "ranking": [1, 2, 0]},
    ])
    comparisons = load_comparisons(path)
    assert len(comparisons) == 1 + 3
    assert [(c.chosen, c.rejected) for c in comparisons[1:]] == [("y", "z"), ("y", "x"), ("z", "x")]
    assert [c.source.line for c in comparisons] == [1, 2, 2, 2]


# --- prompts ------------------------------------------------------------------------------------

def test_prompts_from_strings_messages_and_comparison_records(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Write a poem."},
        {"prompt": [{"role": "user", "content": "Hi"}]},
        {"chosen": "\n\nHuman: Q\n\nAssistant: A", "rejected": "\n\nHuman: Q\n\nAssistant: B"},
    ])
    assert [p.prompt for p in load_prompts(path)] == ["Write a poem.", "\n\nHuman: Hi\n\nAssistant:",
                                                      "\n\nHuman: Q\n\nAssistant:"]
    assert load_prompts(path)[0] == PromptRecord("Write a poem.", Source(str(path), 1))


# --- the real shared files ----------------------------------------------------------------------

needs_shared = pytest.mark.skipif(not HH_TEST.exists(), reason="shared data not present")


@needs_shared
def test_real_hh_rlhf_harmless_test_loads_all_pairs():
    comparisons = load_comparisons(HH_TEST)
    assert len(comparisons) == 2312
    assert not comparisons.skipped
    assert all(c.prompt.startswith("\n\nHuman:") and c.prompt.endswith("\n\nAssistant:") for c in comparisons)
    assert comparisons[0].chosen.startswith(" No, sorry!")
    assert len(load_prompts(HH_TEST)) == 2312


@needs_shared
def test_real_gsm8k_demonstrations_and_prompts():
    train = load_demonstrations(GSM8K / "train.jsonl", prompt_field="question", completion_field="answer")
    test = load_demonstrations(GSM8K / "test.jsonl", prompt_field="question", completion_field="answer",
                               apply_chat_template=True)
    assert (len(train), len(test)) == (7473, 1319)
    assert train[0].prompt.startswith("Natalia sold clips") and train[0].completion.endswith("#### 72")
    assert test[0].prompt.startswith("\n\nHuman: Janet") and test[0].prompt.endswith("\n\nAssistant:")
    assert len(load_prompts(GSM8K / "test.jsonl", prompt_field="question")) == 1319


@needs_shared
def test_real_gsm8k_model_solutions_as_correct_vs_incorrect_pairs():
    path = GSM8K / "example_model_solutions.jsonl.gz"
    with_reference = load_gsm8k_solution_comparisons(path)
    model_only = load_gsm8k_solution_comparisons(path, include_ground_truth=False)
    # Counted independently from the file: distinct correct x distinct incorrect per question.
    assert (len(with_reference), len(model_only)) == (5697, 2426)
    assert all(c.labeler == "gsm8k/is_correct" and c.chosen != c.rejected for c in with_reference)
    assert with_reference[0].prompt.startswith("\n\nHuman: Janet")
