"""AI judges: the two-order arithmetic, position bias, Copeland ranking, the local judge's
log-probability read, the constitution and the answer cache (rlhf.feedback.judges, judge_http)."""

import json
import math
import random

import pytest
import torch

from rlhf.feedback.constitution import ConstitutionError, load_constitution
from rlhf.feedback.judge_http import JudgeCache, cache_key, logprob_preference, parse_answer
from rlhf.feedback.judges import (JudgeLabeler, JudgeStats, LocalJudge, PairVerdict, Query, combine_orders,
                                  copeland_ranking, judge_pairs, judge_rankings, label_token_ids, proportion_stderr,
                                  reasoning_before_answer)

CONSTITUTION = load_constitution()
PRINCIPLE = CONSTITUTION.principles[0]


class ScriptedJudge:
    """Answers P(first better) by a rule on the two texts, and counts its calls."""

    def __init__(self, rule, name="scripted"):
        self.rule, self.name, self.calls, self.asked = rule, name, 0, 0

    def judge(self, queries):
        self.calls += 1
        self.asked += len(queries)
        return [self.rule(q) for q in queries]


def always_first(query):
    return 0.9


def prefers_good(query):
    # knows which response is better (more "good"s), whatever slot it is in; 0.5 on a tie
    first, second = query.first.count("good"), query.second.count("good")
    return 0.8 if first > second else 0.2 if first < second else 0.5


# --- the arithmetic of two orders -----------------------------------------------------------

def test_combine_orders_averages_the_two_orders():
    # (a, b): P(a) = 0.8; (b, a): P(b first) = 0.3 so P(a) = 0.7; mean (0.8 + 0.7) / 2 = 0.75
    verdict = combine_orders(0.8, 0.3)
    assert verdict.p_a == pytest.approx(0.75)
    assert (verdict.label, verdict.flipped, verdict.unreadable) == (0, False, False)
    # both orders pick b: P(a) = 0.1 and 1 - 0.6 = 0.4, mean 0.25, label 1
    verdict = combine_orders(0.1, 0.6)
    assert verdict.p_a == pytest.approx(0.25) and verdict.label == 1


def test_a_flip_with_the_order_gives_no_label_unless_kept():
    # slot 1 wins in both orders: P(a) = 0.9 then 1 - 0.8 = 0.2, mean 0.55: flipped
    verdict = combine_orders(0.9, 0.8)
    assert verdict.p_a == pytest.approx(0.55)
    assert (verdict.label, verdict.flipped) == (None, True)
    assert combine_orders(0.9, 0.8, keep_flipped=True).label == 0  # mean 0.55 > 0.5: a
    # the same slot-1 probability in both orders: mean exactly 0.5, no label even when kept
    assert combine_orders(0.7, 0.7, keep_flipped=True).label is None


def test_an_unreadable_answer_in_either_order_gives_no_label():
    assert combine_orders(None, 0.3) == PairVerdict(None, None, False, True)
    assert combine_orders(0.3, None).unreadable


def test_a_judge_that_always_picks_the_first_slot_is_fully_biased_and_labels_nothing():
    judge = ScriptedJudge(always_first)
    stats = JudgeStats()
    records = [{"prompt": f"q{i}", "responses": ["x good", "y", "z"]} for i in range(4)]
    ranked = judge_rankings(judge, CONSTITUTION, records, seed=0, stats=stats)
    assert ranked == []  # no record keeps a ranking
    summary = stats.summary()
    assert summary["pairs"] == 12 and summary["labelled"] == 0
    assert summary["position_bias"] == 1.0 and summary["first_slot_rate"] == 1.0
    assert summary["dropped_records"] == 4
    assert judge.calls == 1 and judge.asked == 24  # every pair in both orders, one batch


def test_an_unbiased_judge_labels_every_pair_and_ranks_by_wins():
    judge = ScriptedJudge(prefers_good)
    stats = JudgeStats()
    ranked = judge_rankings(judge, CONSTITUTION, [{"prompt": "q", "responses": ["bad", "good good", "good"]}], 0, stats)
    assert ranked[0]["ranking"] == [1, 2, 0] and ranked[0]["labeler"] == "ai:scripted"
    assert stats.summary()["position_bias"] == 0.0 and stats.labelled == 3


def test_copeland_ranking_by_hand():
    # (0,1): 1 wins; (0,2): no label, 0.5 each; (1,2): 1 wins. wins: 0 -> 0.5, 1 -> 2, 2 -> 0.5.
    # tie of 0 and 2 broken by summed P(win): 0 -> 0.2 + 0.5 = 0.7, 2 -> 0.5 + (1 - 0.9) = 0.6
    verdicts = {(0, 1): PairVerdict(0.2, 1, False, False), (0, 2): PairVerdict(0.5, None, True, False),
                (1, 2): PairVerdict(0.9, 0, False, False)}
    assert copeland_ranking(3, verdicts) == [1, 0, 2]
    # an unreadable pair counts 0.5 in both the wins and the probability mass
    assert copeland_ranking(2, {(0, 1): PairVerdict(None, None, False, True)}) == [0, 1]


def test_proportion_stderr_by_hand():
    p, se = proportion_stderr(3, 4)  # 0.75, sqrt(0.75 * 0.25 / 4) = 0.21651
    assert p == 0.75 and se == pytest.approx(0.216506, abs=1e-6)
    assert all(math.isnan(x) for x in proportion_stderr(0, 0))


def test_judge_labeler_is_a_labeler_with_the_ai_name():
    from rlhf.feedback import Labeler, compare

    labeler = JudgeLabeler(ScriptedJudge(prefers_good), CONSTITUTION)
    assert isinstance(labeler, Labeler) and labeler.name == "ai:scripted"
    assert compare(labeler, "q", "good one", "bad one", random.Random(0))
    assert not compare(labeler, "q", "bad one", "good one", random.Random(0))


# --- the local judge ------------------------------------------------------------------------

def test_local_judge_reads_the_label_log_probs_at_the_next_token(tiny_model_dir):
    """The batched, left-padded judge equals a by-hand forward of each prompt alone, read at
    the position where " A" and " B" first differ after "Assistant:" (this byte-level BPE writes
    them as a shared space token, then the letter)."""
    judge = LocalJudge(str(tiny_model_dir), batch_size=2)
    queries = [Query(PRINCIPLE, "what is one plus two?", "three", "the cat is red and blue and a dog"),
               Query(PRINCIPLE, "what is one plus two?", "the cat is red and blue and a dog", "three"),
               Query(PRINCIPLE, "list two fruits", "apple pear", "no")]
    got = judge.judge(queries)
    tokenizer, model = judge.tokenizer, judge.model
    rendered = judge.render(queries[0])
    assert rendered.endswith("\n\nAssistant:")  # no chat template: the default one
    shared, (ids_a, ids_b) = label_token_ids(tokenizer, rendered)
    with_a = tokenizer(rendered + " A", add_special_tokens=False)["input_ids"]
    with_b = tokenizer(rendered + " B", add_special_tokens=False)["input_ids"]
    assert shared == [tokenizer.convert_tokens_to_ids("\u0120")]  # the space token both labels start with
    assert with_a[-2:] == shared + [ids_a] and with_b[-2:] == shared + [ids_b]
    expected = []
    with torch.no_grad():
        for query in queries:
            ids = torch.tensor([tokenizer(judge.render(query), add_special_tokens=False)["input_ids"] + shared])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], dim=-1)
            expected.append(1.0 / (1.0 + math.exp(logp[ids_b].item() - logp[ids_a].item())))
    assert got == pytest.approx(expected, abs=1e-5)
    assert len({round(p, 6) for p in got}) == 3  # a random model still has an opinion per prompt


@pytest.fixture(scope="module")
def long_tiny_model_dir(tmp_path_factory):
    """The tiny random GPT-2 with 512 positions, so a chain-of-thought question and its
    reasoning fit uncut and can be checked against a plain forward pass."""
    from conftest import build_test_tokenizer
    from rlhf.models.tiny import build_tiny_model_for_tokenizer

    path = tmp_path_factory.mktemp("tiny_lm_512")
    tokenizer = build_test_tokenizer()
    tokenizer.save_pretrained(path)
    build_tiny_model_for_tokenizer(tokenizer, n_layer=2, n_embd=32, n_head=2, seed=0, n_positions=512).save_pretrained(path)
    return path


def test_chain_of_thought_reads_the_label_after_the_reasoning_and_answer_cue(long_tiny_model_dir):
    """With chain-of-thought the judge first generates greedily after the question (the same
    tokens as a plain model.generate), then reads " A" against " B" after "\nAnswer:" appended to
    that reasoning: the same number as a by-hand forward of question + reasoning + cue."""
    judge = LocalJudge(str(long_tiny_model_dir), batch_size=2, cot_max_new_tokens=6)
    queries = [Query(PRINCIPLE, "what is one plus two?", "three", "the cat is red and blue and a dog"),
               Query(PRINCIPLE, "list two fruits", "apple pear", "no")]
    got = judge.judge(queries)
    tokenizer, model = judge.tokenizer, judge.model
    assert judge.render(queries[0]).endswith('end with a final line "Answer: A" or "Answer: B".\n\nAssistant:')
    shared, (ids_a, ids_b) = label_token_ids(tokenizer, judge.render(queries[0]) + " x\nAnswer:",
                                             written=(" A", " B"))
    expected = []
    with torch.no_grad():
        for query, reasoning in zip(queries, judge.reasonings):
            question = tokenizer(judge.render(query), add_special_tokens=False)["input_ids"]
            ids = torch.tensor([question])
            greedy = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id)[0, len(question):]
            assert reasoning and reasoning == tokenizer.decode(greedy, skip_special_tokens=True).strip()
            read = judge.render(query) + " " + reasoning + "\nAnswer:"
            ids = torch.tensor([tokenizer(read, add_special_tokens=False)["input_ids"] + shared])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1], dim=-1)
            expected.append(1.0 / (1.0 + math.exp(logp[ids_b].item() - logp[ids_a].item())))
    assert got == pytest.approx(expected, abs=1e-5)
    plain = LocalJudge(str(long_tiny_model_dir), batch_size=2, model=model, tokenizer=tokenizer)
    assert plain.judge(queries) != pytest.approx(got, abs=1e-4)  # not the answer read without reasoning


def test_chain_of_thought_is_off_by_default_and_in_the_cache_key(tiny_model_dir, tmp_path):
    from rlhf.config.ai_feedback import AILabelConfig

    assert AILabelConfig().judge_chain_of_thought is False
    judge = LocalJudge(str(tiny_model_dir))
    judge._generate_rendered = lambda *args: pytest.fail("generated without chain-of-thought")
    assert judge.cot_max_new_tokens == 0 and len(judge.judge([Query(PRINCIPLE, "q", "a", "b")])) == 1
    assert "Answer with a single letter" in judge.render(Query(PRINCIPLE, "q", "a", "b"))
    assert judge.cache_id == judge.name != LocalJudge(str(tiny_model_dir), cot_max_new_tokens=64).cache_id
    # a cache filled without chain-of-thought answers nothing for the same judge with it
    cache_file = tmp_path / "cache.jsonl"
    plain, cot = ScriptedJudge(prefers_good), ScriptedJudge(prefers_good)
    cot.cache_id = "scripted+cot64"
    records = [{"prompt": "q", "responses": ["good", "bad"]}]
    judge_rankings(JudgeCache(plain, cache_file), CONSTITUTION, records, seed=0)
    cached = JudgeCache(cot, cache_file)
    judge_rankings(cached, CONSTITUTION, records, seed=0)
    assert (plain.asked, cot.asked, cached.hits) == (2, 2, 0)
    again = ScriptedJudge(prefers_good)
    again.cache_id = "scripted+cot64"
    judge_rankings(JudgeCache(again, cache_file), CONSTITUTION, records, seed=0)
    assert again.calls == 0  # its own setting's answers are cached


def test_reasoning_is_cut_before_an_answer_the_model_wrote_itself():
    assert reasoning_before_answer(" B is shorter and right.\nAnswer: B\nmore") == "B is shorter and right."
    assert reasoning_before_answer("both fine. Final answer: A") == "both fine."
    assert reasoning_before_answer("no verdict yet ") == "no verdict yet"


def test_label_token_ids_refuses_labels_that_start_alike(tiny_model_dir):
    judge = LocalJudge(str(tiny_model_dir))
    with pytest.raises(ValueError, match="start with the same token"):
        label_token_ids(judge.tokenizer, "x\n\nAssistant:", labels=("A", "A"))


# --- the constitution -----------------------------------------------------------------------

def test_default_constitution_and_a_seeded_draw():
    assert CONSTITUTION.name == "hhh"
    assert [p.name for p in CONSTITUTION.principles] == ["helpful", "honest", "harmless", "concise", "overall"]
    assert all(p.critique_request and p.revision_request and p.comparison_question.endswith("?")
               for p in CONSTITUTION.principles)
    draws = [CONSTITUTION.draw(random.Random(7)).name for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same principle
    many = {CONSTITUTION.draw(rng).name for rng in [random.Random(0)] for _ in range(200)}
    assert many == {p.name for p in CONSTITUTION.principles}


def test_a_constitution_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\nprinciples:\n  - name: kind\n    critique_request: Is it kind?\n"
                    "    comparison_question: Which is kinder?\n")
    with pytest.raises(ConstitutionError) as err:
        load_constitution(path)
    assert str(err.value) == (f"{path}, line 3, field 'principles[0].revision_request': missing or empty "
                              "(a principle needs name, critique_request, revision_request, comparison_question)")
    path.write_text("name: mine\nprinciples: []\n")
    with pytest.raises(ConstitutionError, match="line 2, field 'principles': expected a non-empty list"):
        load_constitution(path)


# --- the answer cache and answer parsing ----------------------------------------------------

def test_the_cache_answers_a_second_run_without_a_call(tmp_path):
    cache_file = tmp_path / "cache.jsonl"
    records = [{"prompt": f"q{i}", "responses": ["good", "bad", "ok"]} for i in range(3)]
    first = ScriptedJudge(prefers_good)
    ranked = judge_rankings(JudgeCache(first, cache_file), CONSTITUTION, records, seed=0)
    assert first.asked == 18
    with open(cache_file, "a") as handle:  # a run killed mid-write leaves a torn line
        handle.write('{"key": "abc", "p_fi')
    second = ScriptedJudge(prefers_good)
    cached = JudgeCache(second, cache_file)
    assert judge_rankings(cached, CONSTITUTION, records, seed=0) == ranked
    assert second.calls == 0 and cached.hits == 18 and cached.misses == 0
    # the order is part of the key: the swapped query is another entry
    q = Query(PRINCIPLE, "q", "a", "b")
    assert cache_key("j", q) != cache_key("j", Query(PRINCIPLE, "q", "b", "a"))
    assert cache_key("j", q) != cache_key("k", q)


def test_parse_answer_and_logprob_preference_by_hand():
    assert parse_answer("A") == 1.0 and parse_answer(" (B).") == 0.0 and parse_answer("**A**") == 1.0
    assert parse_answer("Response B is better.") == 0.0 and parse_answer("The answer is: A") == 1.0
    assert parse_answer("I cannot decide") is None and parse_answer("Response A or Response B") is None
    # softmax over -1 and -2: 1 / (1 + e^(-2 - -1)) = 1 / (1 + e^-1) = 0.731059
    top = [{"token": "A", "logprob": -1.0}, {"token": " B", "logprob": -2.0}, {"token": "The", "logprob": -0.5}]
    assert logprob_preference(top) == pytest.approx(0.731059, abs=1e-6)
    assert logprob_preference([{"token": "B", "logprob": -0.1}]) == 0.0  # A below every listed token
    assert logprob_preference([{"token": "Sure", "logprob": -0.1}]) is None


def test_judge_pairs_counts_unreadable_answers():
    judge = ScriptedJudge(lambda q: None if "?" in q.first else 0.7)
    stats = JudgeStats()
    verdicts = judge_pairs(judge, [(PRINCIPLE, "q", "a?", "b"), (PRINCIPLE, "q", "a", "b")], stats)
    assert [v.unreadable for v in verdicts] == [True, False]
    assert stats.unreadable == 1 and stats.summary()["position_bias"] == 1.0  # the readable pair flips (0.7, 0.7)
    assert json.dumps(stats.summary())  # the summary is plain JSON
