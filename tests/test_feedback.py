"""The feedback seam: the Labeler interface and ranking a policy's own samples."""

import random

import pytest

from rlhf.embedded.labelers import gold_labeler
from rlhf.embedded.task import format_prompt
from rlhf.feedback import Labeler, compare, rank_policy_samples, ranking_record
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.rollout.generation import SamplingParams

ADD = format_prompt("What is 7 plus 5?")


class LongestFirst:
    """A scripted labeler: prefers longer responses, ignores the noise source."""

    name = "longest"

    def rank(self, prompt, responses, ended, rng):
        return sorted(range(len(responses)), key=lambda i: -len(responses[i]))


def test_any_object_with_name_and_rank_is_a_labeler():
    assert isinstance(LongestFirst(), Labeler) and isinstance(gold_labeler(), Labeler)
    assert compare(LongestFirst(), ADD, " twelve.", " 12.", random.Random(0))
    assert not compare(gold_labeler(), ADD, " 13.", " 12.", random.Random(0))  # gold: 0.4 < 1.0
    record = ranking_record(LongestFirst(), ADD, [" a", " abc", " ab"], random.Random(0))
    assert record == {"prompt": ADD, "responses": [" a", " abc", " ab"], "ranking": [1, 2, 0], "labeler": "longest"}
    with pytest.raises(ValueError, match="3 responses but 2 ended flags"):
        ranking_record(LongestFirst(), ADD, [" a", " b", " c"], random.Random(0), ended=[True, False])


def test_rank_policy_samples_keeps_k_minus_m_and_adds_m_policy_samples(tiny_demo_model_dir):
    tokenizer = load_tokenizer(tiny_demo_model_dir, padding_side="left")
    policy = load_causal_lm(tiny_demo_model_dir, tokenizer).eval()
    records = [{"prompt": ADD, "responses": [" 12.", " 13.", " 14.", " 15."], "ranking": [0, 1, 2, 3], "labeler": "x"}
               for _ in range(6)]
    sampling = SamplingParams(max_new_tokens=6, temperature=1.0)
    ranked = rank_policy_samples(policy, tokenizer, records, lambda r: LongestFirst(), 2, 4, sampling, seed=0)
    again = rank_policy_samples(policy, tokenizer, records, lambda r: LongestFirst(), 2, 4, sampling, seed=0)
    assert ranked == again  # seeded
    assert 1 <= len(ranked) <= 6
    for record in ranked:
        assert record["responses"][:2] == [" 12.", " 13."]  # the first k - m are kept
        assert 2 <= len(record["responses"]) <= 4 and len(set(record["responses"])) == len(record["responses"])
        lengths = [len(record["responses"][i]) for i in record["ranking"]]
        assert lengths == sorted(lengths, reverse=True) and record["labeler"] == "longest"  # the labeler ranked it
    assert any(len(record["responses"]) > 2 for record in ranked)  # the policy's samples are in
    unchanged = rank_policy_samples(policy, tokenizer, records, lambda r: LongestFirst(), 0, 4, sampling, seed=0)
    assert unchanged == records
    with pytest.raises(ValueError, match="samples_per_ranking must be between 0 and k=4"):
        rank_policy_samples(policy, tokenizer, records, lambda r: LongestFirst(), 5, 4, sampling, seed=0)
