"""``rlhf label generate``: K distinct responses per prompt spread over temperatures."""

import json

import pytest

from conftest import write_jsonl
from rlhf.config.base import ConfigError, config_from_dict
from rlhf.config.candidates import CandidatesConfig
from rlhf.feedback.candidates import CandidateSet, fill_candidates, slot_temperatures


def test_slots_spread_round_robin_over_the_temperatures():
    assert slot_temperatures(4, [0.7, 1.0, 1.3]) == [0.7, 1.0, 1.3, 0.7]
    assert slot_temperatures(2, [0.7, 1.0, 1.3]) == [0.7, 1.0]
    assert slot_temperatures(3, [1.0]) == [1.0, 1.0, 1.0]


def test_a_duplicate_after_strip_or_an_empty_response_is_dropped():
    s = CandidateSet("p", {})
    assert s.offer(" yes", 0.7, True) == "kept"
    assert s.offer("yes \n", 1.0, True) == "duplicate"  # same text once whitespace is stripped
    assert s.offer("  ", 1.0, True) == "empty"
    assert s.offer(" no", 1.3, False) == "kept"
    assert s.record() == {"prompt": "p", "responses": [" yes", " no"], "temperatures": [0.7, 1.3],
                          "ended": [True, False]}


def scripted_sampler(script):
    """sample(prompts, t) that answers prompt p at temperature t with the next text of script[(p, t)]."""
    calls = []

    def sample(prompts, temperature):
        calls.append((list(prompts), temperature))
        return [script[(p, temperature)].pop(0) for p in prompts], [True] * len(prompts)

    return sample, calls


def test_dropped_slots_are_redrawn_at_their_temperature_and_counted():
    # K = 3 over (0.5, 1.0): slots 0.5, 1.0, 0.5.
    # prompt a, round 0: "x" (0.5), "y" (1.0), " x" (0.5, duplicate of "x") -> redraw one at 0.5
    #           round 1: "z" -> kept; a has 3.
    # prompt b always says "same": round 0 keeps 1 and drops 2; rounds 1 and 2 redraw those 2
    #           and drop them again; after max_resample_rounds = 2 it holds 1 response.
    script = {("a", 0.5): ["x", " x", "z"], ("a", 1.0): ["y"],
              ("b", 0.5): ["same"] * 4, ("b", 1.0): ["same"] * 3}
    sample, calls = scripted_sampler(script)
    sets = [CandidateSet("a", {}), CandidateSet("b", {})]
    counts = fill_candidates(sets, 3, [0.5, 1.0], sample, max_resample_rounds=2)
    assert sets[0].responses == ["x", "y", "z"] and sets[0].temperatures == [0.5, 1.0, 0.5]
    assert sets[1].responses == ["same"]
    # sampled: round 0 = 6; round 1 = a:1 + b:2 = 3; round 2 = b:2 -> 11. Drops: a 1, b 2 + 2 + 2 = 7.
    assert counts == {"sampled": 11, "duplicates_dropped": 7, "empty_dropped": 0, "resampled": 5}
    # each round samples one batch per temperature, all prompts together
    assert calls[0] == (["a", "a", "b", "b"], 0.5) and calls[1] == (["a", "b"], 1.0)


def test_no_resampling_keeps_the_prompt_with_fewer():
    sample, _ = scripted_sampler({("a", 1.0): ["u", "u", "v", "w"]})
    sets = [CandidateSet("a", {})]
    counts = fill_candidates(sets, 4, [1.0], sample, max_resample_rounds=0)
    assert sets[0].responses == ["u", "v", "w"] and counts["duplicates_dropped"] == 1 and counts["resampled"] == 0


@pytest.mark.parametrize("options, message", [
    ({"num_responses": 1}, "num_responses must be at least 2"),
    ({"temperatures": "0.7,hot"}, "temperatures must be comma-separated numbers"),
    ({"temperatures": "0.7,0"}, "temperatures must be positive numbers"),
    ({"min_responses": 5}, "min_responses must be between 2 and num_responses=4"),
    ({"prompts_file": ""}, "label generate needs --prompts_file"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(CandidatesConfig, {"model_name_or_path": "m", "prompts_file": "p.jsonl", **options})


def test_generate_writes_k_distinct_responses_per_prompt(tiny_model_dir, tmp_path, capsys):
    from rlhf.feedback.candidates import run

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"what is {i} plus {i}?", "id": i} for i in range(6)])
    options = {"model_name_or_path": str(tiny_model_dir), "prompts_file": str(prompts), "num_responses": 4,
               "temperatures": "0.7,1.0,1.3", "max_new_tokens": 8, "output_file": str(tmp_path / "c.jsonl"),
               "disable_tqdm": True, "seed": 3}
    summary = run(config_from_dict(CandidatesConfig, options))
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [f"what is {i} plus {i}?" for i in range(6)]
    assert [r["id"] for r in records] == list(range(6))  # the prompt record's other fields are kept
    for r in records:
        assert len(r["responses"]) == 4 == len(r["temperatures"]) == len(r["ended"])
        assert len({text.strip() for text in r["responses"]}) == 4 and all(text.strip() for text in r["responses"])
        assert sorted(r["temperatures"]) == [0.7, 0.7, 1.0, 1.3]
    assert summary["prompts_written"] == 6 and summary["responses_written"] == 24
    assert summary["sampled"] == 24 + summary["duplicates_dropped"] + summary["empty_dropped"]
    printed = json.loads(capsys.readouterr().out)
    assert printed["prompts_written"] == 6
    # an existing output file is refused; the same seed gives the same candidates
    with pytest.raises(ConfigError, match="exists: pass --overwrite_output_dir true"):
        run(config_from_dict(CandidatesConfig, options))
    run(config_from_dict(CandidatesConfig, {**options, "output_file": str(tmp_path / "again.jsonl")}))
    assert (tmp_path / "again.jsonl").read_text() == (tmp_path / "c.jsonl").read_text()


def test_rlhf_label_generate_command_writes_what_label_init_reads(tiny_model_dir, tmp_path, capsys):
    from rlhf.cli.main import main
    from rlhf.feedback.labeling.items import load_items

    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"list {i} colors"} for i in range(3)])
    out = tmp_path / "candidates.jsonl"
    code = main(["label", "generate", "--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(prompts),
                 "--num_responses", "3", "--temperatures", "0.7,1.3", "--max_new_tokens", "6",
                 "--output_file", str(out), "--disable_tqdm", "true"])
    printed = capsys.readouterr().out
    assert code == 0 and json.loads(printed[printed.index("{"):])["prompts_written"] == 3
    items = load_items(out)  # rlhf label init's reader: every record passes its checks
    assert [item.prompt for item in items] == [f"list {i} colors" for i in range(3)]
    assert all(len(item.responses) == 3 for item in items)
    # a mistake is one line on stderr and exit code 1
    assert main(["label", "generate", "--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(prompts),
                 "--num_responses", "1"]) == 1
    assert capsys.readouterr().err.strip() == ("rlhf label: error: num_responses must be at least 2 "
                                               "(a ranking needs a pair), got 1")


def test_each_generate_call_holds_at_most_batch_size_prompts():
    sample, calls = scripted_sampler({(p, 1.0): [p + "1", p + "2"] for p in "abc"})
    sets = [CandidateSet(p, {}) for p in "abc"]
    fill_candidates(sets, 2, [1.0], sample, max_resample_rounds=0, batch_size=4)
    # 3 prompts x 2 slots at one temperature = 6 draws: batches of 4 and 2
    assert calls == [(["a", "a", "b", "b"], 1.0), (["c", "c"], 1.0)]
    assert [s.responses for s in sets] == [["a1", "a2"], ["b1", "b2"], ["c1", "c2"]]
