"""Simulated labelers: rankings, agreement, the length bias, and the files they write."""

import json
import random
import statistics

import pytest

from rlhf.embedded.corpus import good_response, padded_response, wrong_response
from rlhf.embedded.gold import gold_reward
from rlhf.embedded.task import format_prompt, instructions, parse_instruction
from rlhf.atomic_io import write_jsonl
from rlhf.embedded.labelers import SimulatedLabeler, gold_labeler, labeler_pool
from rlhf.embedded.task_data import candidate_responses, comparison_records, generate_task_data, sample_comparisons
from rlhf.feedback import Labeler, cohens_kappa, pairwise_agreement

ADD = format_prompt("What is 7 plus 5?")


# ---- Cohen's kappa by hand ---------------------------------------------------------------------

def test_cohens_kappa_on_a_hand_computed_table():
    # 2x2 table: (yes, yes) 20, (yes, no) 5, (no, yes) 10, (no, no) 15 -> n = 50
    # p_o = 35/50 = 0.7; p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)


def test_cohens_kappa_three_categories_and_extremes():
    # p_o = 3/4; p_e = (2*2 + 1*2 + 1*0) / 16 = 0.375; kappa = 0.375 / 0.625 = 0.6
    assert cohens_kappa([0, 1, 2, 0], [0, 1, 1, 0]) == pytest.approx(0.6)
    assert cohens_kappa([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert cohens_kappa([0, 1], [1, 0]) == pytest.approx(-1.0)
    assert cohens_kappa([1, 1, 1], [1, 1, 1]) == 1.0  # chance agreement already perfect
    with pytest.raises(ValueError, match="same items"):
        cohens_kappa([0, 1], [0])


# ---- Ranking -------------------------------------------------------------------------------------

def test_rank_is_best_first():
    responses = [" 13.", " 12.", " 12 12 12 12 12 12", " Sorry, I can not help with that."]
    # gold: 0.4, 1.0, 0.4, 0.2 -> a labeler without noise or bias puts " 12." first
    ranking = gold_labeler().rank(ADD, responses, [True] * 4, random.Random(0))
    assert ranking[0] == 1 and ranking[-1] == 3 and sorted(ranking) == [0, 1, 2, 3]
    # a cut-off correct answer (0.8) still beats a complete wrong one (0.4)
    assert gold_labeler().rank(ADD, [" 13.", " 12."], [True, False], random.Random(0)) == [1, 0]
    # and between two correct answers, the one that ended wins
    assert gold_labeler().rank(ADD, [" 12.", " 12."], [False, True], random.Random(0)) == [1, 0]


def test_noisy_rankings_are_permutations():
    rng = random.Random(0)
    for labeler in labeler_pool():
        for instr in instructions("train")[:40]:
            responses = candidate_responses(instr, 4, rng)
            ranking = labeler.rank(format_prompt(instr.text), responses, [True] * 4, rng)
            assert sorted(ranking) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="ended flags"):
        gold_labeler().rank(ADD, [" 12."], [], rng)


def test_pool_is_deterministic_and_some_labelers_are_noisier():
    pool = labeler_pool(5, seed=0)
    assert pool == labeler_pool(5, seed=0)
    assert len({l.name for l in pool}) == 5
    assert pool[-1].noise_std >= 3 * pool[0].noise_std
    assert all(0.015 < l.length_bonus < 0.045 for l in pool)


# ---- Agreement -----------------------------------------------------------------------------------

def test_two_labelers_agree_clearly_above_chance_and_below_one():
    comparisons = sample_comparisons(instructions("train"), 300, random.Random(0))
    pool = labeler_pool()
    result = pairwise_agreement(pool[1], pool[3], comparisons, seed=0)
    assert 0.2 < result["kappa"] < 0.9
    assert 0.6 < result["agreement"] < 0.97
    # a labeler agrees with itself (fresh noise) more than with a much noisier one
    quiet_self = pairwise_agreement(pool[0], pool[0], comparisons)["kappa"]
    assert quiet_self > pairwise_agreement(pool[0], pool[4], comparisons)["kappa"]


# ---- The length bias -----------------------------------------------------------------------------

def preference_for_padding(labeler: SimulatedLabeler, trials: int = 300) -> float:
    """How often ``labeler`` prefers a correct answer padded with two fillers to the concise one."""
    rng, train = random.Random(1), instructions("train")
    padded_wins = 0
    for i in range(trials):
        instr = train[i % len(train)]
        concise, padded = good_response(instr, rng), padded_response(instr, rng, fillers=2)
        padded_wins += not labeler.prefers_first(format_prompt(instr.text), concise, padded, rng)
    return padded_wins / trials


def test_labelers_like_longer_answers_but_gold_does_not():
    labeler = labeler_pool()[1]  # measured: prefers padding 57% of the time, 34% without the bias
    unbiased = SimulatedLabeler("unbiased", noise_std=labeler.noise_std, length_bonus=0.0)
    biased_rate, unbiased_rate = preference_for_padding(labeler), preference_for_padding(unbiased)
    assert 0.5 < biased_rate < 0.98  # a clear bias, but not absolute
    assert unbiased_rate < 0.45  # without it, padding loses (gold penalises it)
    assert unbiased_rate + 0.15 < biased_rate


def test_labelers_still_prefer_correct_to_wrong():
    rng, train = random.Random(2), instructions("train")
    for labeler in labeler_pool():
        wins = sum(labeler.prefers_first(format_prompt(i.text), good_response(i, rng), wrong_response(i, rng), rng)
                   for i in train[:300])
        assert wins / 300 > 0.7, labeler.name


# ---- Demonstrations and candidates ---------------------------------------------------------------

def test_demonstrations_without_habits_are_mostly_ideal_with_some_imperfections():
    rng, train = random.Random(3), instructions("train")
    labeler = SimulatedLabeler("careless", noise_std=0.1, length_bonus=0.03, error_rate=0.1, verbosity=0.2)
    scores = [gold_reward(format_prompt(i.text), labeler.write_demonstration(i, rng), True)
              for i in train * 2]
    perfect = sum(s == pytest.approx(1.0) for s in scores) / len(scores)
    assert 0.55 < perfect < 0.95
    assert statistics.mean(scores) > 0.85
    careful = SimulatedLabeler("careful", noise_std=0.1, length_bonus=0.03)
    assert all(gold_reward(format_prompt(i.text), careful.write_demonstration(i, rng), True) == pytest.approx(1.0)
               for i in train)


def test_candidate_responses_are_distinct_and_varied():
    rng = random.Random(4)
    scores = []
    for instr in instructions("train")[:100]:
        responses = candidate_responses(instr, 4, rng)
        assert len(set(responses)) == 4 and all(r.startswith(" ") for r in responses)
        scores += [gold_reward(format_prompt(instr.text), r, True) for r in responses]
    assert max(scores) == pytest.approx(1.0)
    assert sum(s < 0.5 for s in scores) > 0.2 * len(scores)
    assert sum(s == pytest.approx(1.0) for s in scores) > 0.2 * len(scores)


# ---- Files ------------------------------------------------------------------------------------------

def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_generate_task_data_writes_the_documented_formats(tmp_path):
    paths = generate_task_data(tmp_path, seed=0, num_demonstrations=40, num_rankings=20, k=4)
    assert set(paths) == {f"{kind}_{split}" for kind in ("sft", "rankings", "comparisons", "prompts")
                          for split in ("train", "test")} | {"sft_ideal_train"}
    n_test = len(instructions("test"))
    sft = read_jsonl(paths["sft_train"])
    assert len(sft) == 40 and all(set(r) == {"prompt", "completion", "labeler"} for r in sft)
    assert len(read_jsonl(paths["sft_test"])) == n_test
    rankings = read_jsonl(paths["rankings_train"])
    assert len(rankings) == 20 and len(read_jsonl(paths["rankings_test"])) == 2 * n_test
    for r in rankings:
        assert set(r) == {"prompt", "responses", "ranking", "labeler"}
        assert len(r["responses"]) == 4 and sorted(r["ranking"]) == [0, 1, 2, 3]
    comparisons = read_jsonl(paths["comparisons_train"])
    assert len(comparisons) == 20 * 6 and all(set(c) == {"prompt", "chosen", "rejected", "labeler"}
                                              for c in comparisons)
    assert comparisons[0]["chosen"] == rankings[0]["responses"][rankings[0]["ranking"][0]]
    prompts = read_jsonl(paths["prompts_test"])
    assert [p["prompt"] for p in prompts] == [format_prompt(i.text) for i in instructions("test")]
    assert all(parse_instruction(r["prompt"]) is not None for r in sft + rankings)
    # deterministic given the seed
    again = generate_task_data(tmp_path / "again", seed=0, num_demonstrations=40, num_rankings=20, k=4)
    assert all(paths[k].read_bytes() == again[k].read_bytes() for k in paths)


def test_demonstrations_can_leave_out_a_kind_that_rankings_still_cover(tmp_path):
    full = generate_task_data(tmp_path / "all", seed=0, num_demonstrations=60, num_rankings=40, k=4)
    part = generate_task_data(tmp_path / "part", seed=0, num_demonstrations=60, num_rankings=40, k=4,
                              demonstration_kinds=["arithmetic", "list", "sentence", "yesno"])
    kinds = {name: {parse_instruction(r["prompt"]).kind for r in read_jsonl(part[name])} for name in part}
    assert kinds["sft_train"] == kinds["sft_test"] == {"arithmetic", "list", "sentence", "yesno"}
    assert "harmful" in kinds["rankings_train"] and "harmful" in kinds["prompts_test"]
    assert "harmful" in {parse_instruction(r["prompt"]).kind for r in read_jsonl(full["sft_train"])}
    assert len(read_jsonl(part["sft_train"])) == 60
    assert part["rankings_train"].read_bytes() == full["rankings_train"].read_bytes()  # same rankings either way
    with pytest.raises(ValueError, match="demonstration_kinds must be a non-empty subset"):
        generate_task_data(tmp_path / "bad", demonstration_kinds=["poems"])


def test_comparison_records_follow_the_ranking():
    record = {"prompt": ADD, "responses": ["a", "b", "c"], "ranking": [2, 0, 1], "labeler": "x"}
    comparisons = comparison_records([record])
    assert [(c["chosen"], c["rejected"]) for c in comparisons] == [("c", "a"), ("c", "b"), ("a", "b")]
    assert all(c["labeler"] == "x" and c["prompt"] == ADD for c in comparisons)


def test_simulated_and_gold_labelers_are_labelers():
    assert isinstance(gold_labeler(), Labeler) and all(isinstance(l, Labeler) for l in labeler_pool())


def test_write_jsonl_is_utf8_and_leaves_no_temp_file(tmp_path):
    path = write_jsonl(tmp_path / "sub" / "x.jsonl", [{"prompt": "café"}, {"prompt": "2"}])
    assert path.read_text(encoding="utf-8") == '{"prompt": "café"}\n{"prompt": "2"}\n'
    assert [p.name for p in path.parent.iterdir()] == ["x.jsonl"]
