"""Everything that scores a response (rlhf.rewards): ensemble aggregations on a hand-written batch,
scorers on tiny reward models, reward-model evaluation and agreement with gold, by hand."""

import math
import random

import pytest
import torch

from conftest import train_byte_bpe
from rlhf.data import pad_sequences
from rlhf.models.loading import load_tokenizer
from rlhf.models.scalar_model import ScalarModel
from rlhf.models.tiny import build_tiny_model_for_tokenizer
from rlhf.rewards.agreement import Agreement, agreement_with_gold
from rlhf.rewards.ensemble import (
    aggregate_rewards,
    mean_reward,
    uncertainty_penalized_reward,
    worst_case_reward,
)
from rlhf.rewards.evaluation import pairwise_calibration, reward_margins, reward_statistics, summarize_margins
from rlhf.rewards.scorers import RewardModelScorer, load_reward_model, score_responses
from rlhf.rollout.generation import Rollout


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# --- ensemble aggregations ----------------------------------------------------------------------
# 3 members x 2 responses:
#   response 0: [1, 2, 6] -> mean 3, min 1, population std sqrt((4 + 1 + 9) / 3) = sqrt(14/3)
#   response 1: [0, 0, 0] -> mean 0, min 0, std 0
MEMBERS = [[1.0, 0.0], [2.0, 0.0], [6.0, 0.0]]


def test_mean_reward():
    torch.testing.assert_close(mean_reward(t(MEMBERS)), t([3.0, 0.0]))


def test_worst_case_reward():
    torch.testing.assert_close(worst_case_reward(t(MEMBERS)), t([1.0, 0.0]))


def test_uncertainty_penalized_reward():
    # lambda = 0.5: 3 - 0.5 * sqrt(14/3); the unanimous response keeps its mean
    torch.testing.assert_close(uncertainty_penalized_reward(t(MEMBERS), 0.5), t([3 - 0.5 * math.sqrt(14 / 3), 0.0]))
    # two members: std = |r1 - r2| / 2 = 1 -> 1.5 - 2 * 1
    torch.testing.assert_close(uncertainty_penalized_reward(t([[1.0], [3.0]]), 2.0), t([0.0]))
    # one member is just itself (the population std of one value is 0, not NaN)
    torch.testing.assert_close(uncertainty_penalized_reward(t([[4.0, -1.0]]), 3.0), t([4.0, -1.0]))


def test_aggregate_rewards_by_name_and_errors():
    torch.testing.assert_close(aggregate_rewards(t(MEMBERS), "min"), t([1.0, 0.0]))
    torch.testing.assert_close(aggregate_rewards(t(MEMBERS), "mean_minus_std", 1.0), t([3 - math.sqrt(14 / 3), 0.0]))
    with pytest.raises(ValueError, match="unknown reward aggregation 'max'; choose one of mean, min, mean_minus_std"):
        aggregate_rewards(t(MEMBERS), "max")
    with pytest.raises(ValueError, match="must be >= 0, got -1"):
        aggregate_rewards(t(MEMBERS), "mean_minus_std", -1.0)
    with pytest.raises(ValueError, match=r"member scores must be \(M, B\)"):
        aggregate_rewards(t([1.0, 2.0]), "mean")


# --- scorers on tiny reward models --------------------------------------------------------------


def save_tiny_reward_model(tokenizer, path, seed):
    """A tiny reward model (random backbone and head drawn from ``seed``) saved like ``rlhf rm``'s output."""
    lm_path = path.parent / f"{path.name}_lm"
    build_tiny_model_for_tokenizer(tokenizer, n_layer=1, n_embd=16, n_head=2, seed=seed).save_pretrained(lm_path)
    tokenizer.save_pretrained(lm_path)
    torch.manual_seed(seed)  # the new score head
    ScalarModel.from_pretrained(lm_path, tokenizer, allow_new_head=True).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_other_tokenizer():
    """A BPE of the same size as the test tokenizer but trained on other text: other ids for the same words."""
    rng = random.Random(1)
    words = "human assistant what is plus one two three yes no good bad sorry the cat".split()
    texts = [" ".join(rng.choice(words)[::-1] for _ in range(10)) for _ in range(300)]
    return train_byte_bpe(texts, special_tokens=("<|pad|>", "<|endoftext|>"))


PROMPTS = ["\n\nHuman: what is one plus two?\n\nAssistant:", "\n\nHuman: is the cat red?\n\nAssistant:",
           "\n\nHuman: write a list\n\nAssistant:"]
RESPONSES = [" three", " yes the cat is red good", " no"]
ENDED = [True, False, True]


def make_rollout(tokenizer, prompts, responses, ended) -> Rollout:
    """[left-padded prompt | response + eos if ended, right-padded], as ``generate`` lays it out."""
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if e else [])
                    for r, e in zip(responses, ended)]
    pad = tokenizer.pad_token_id
    query = pad_sequences(prompt_ids, pad, "left")  # (B, P)
    response = pad_sequences(response_ids, pad)  # (B, R)
    response_mask = pad_sequences([[1] * len(r) for r in response_ids], 0)  # (B, R)
    prompt_mask = pad_sequences([[1] * len(p) for p in prompt_ids], 0, "left")  # (B, P)
    return Rollout(query_responses=torch.cat([query, response], 1),
                   attention_mask=torch.cat([prompt_mask, response_mask], 1), response_mask=response_mask,
                   ended=torch.tensor(ended), prompt_length=query.shape[1])


@pytest.fixture(scope="module")
def reward_model_dirs(tiny_model_dir, tmp_path_factory):
    tokenizer = load_tokenizer(tiny_model_dir)
    root = tmp_path_factory.mktemp("reward_models")
    return [save_tiny_reward_model(tokenizer, root / f"rm{seed}", seed) for seed in (1, 2, 3)]


def test_ensemble_scorer_equals_aggregation_of_members(tiny_model_dir, reward_model_dirs):
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    rollout = make_rollout(tokenizer, PROMPTS, RESPONSES, ENDED)
    paths = [str(p) for p in reward_model_dirs]
    members = [RewardModelScorer([p], tokenizer, "cpu")(rollout, PROMPTS, RESPONSES) for p in paths]  # 3 x (B,)
    a, b, c = members
    mean = (a + b + c) / 3
    std = (((a - mean) ** 2 + (b - mean) ** 2 + (c - mean) ** 2) / 3).sqrt()  # population std over members
    expected = {"mean": mean, "min": torch.minimum(torch.minimum(a, b), c), "mean_minus_std": mean - 0.7 * std}
    for aggregation, want in expected.items():
        scorer = RewardModelScorer(paths, tokenizer, "cpu", aggregation=aggregation, uncertainty_coef=0.7)
        torch.testing.assert_close(scorer(rollout, PROMPTS, RESPONSES), want)
        assert scorer.stats is None  # an ensemble has no single saved training mean/std
    assert not torch.allclose(expected["mean"], expected["min"])  # the members do disagree
    assert not torch.allclose(expected["mean"], expected["mean_minus_std"])


def test_scorer_rejects_unknown_aggregation(tiny_model_dir, reward_model_dirs):
    tokenizer = load_tokenizer(tiny_model_dir)
    with pytest.raises(ValueError, match="unknown reward aggregation 'median'"):
        RewardModelScorer([str(reward_model_dirs[0])], tokenizer, "cpu", aggregation="median")
    with pytest.raises(ValueError, match="must be >= 0"):
        RewardModelScorer([str(reward_model_dirs[0])], tokenizer, "cpu", aggregation="mean_minus_std",
                          uncertainty_coef=-0.1)


def test_reward_model_with_another_tokenizer_scores_retokenized_text(tiny_model_dir, tmp_path):
    policy_tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    rm_tokenizer = build_other_tokenizer()
    assert rm_tokenizer.get_vocab() != policy_tokenizer.get_vocab()
    path = save_tiny_reward_model(rm_tokenizer, tmp_path / "rm_other", seed=4)
    rollout = make_rollout(policy_tokenizer, PROMPTS, RESPONSES, ENDED)

    scores = RewardModelScorer([str(path)], policy_tokenizer, "cpu")(rollout, PROMPTS, RESPONSES)

    model, tokenizer, _ = load_reward_model(path)
    torch.testing.assert_close(scores, score_responses(model, tokenizer, PROMPTS, RESPONSES, ended=ENDED))
    # What reusing the policy's ids would have given (both vocabularies have 300 ids, so it would run):
    assert not torch.allclose(scores, model(rollout.query_responses, rollout.attention_mask), atol=1e-4)


# --- reward-model evaluation --------------------------------------------------------------------
# margins [ln 3, -ln 3, 0, ln 19]: p = sigma(m) = [3/4, 1/4, 1/2, 19/20]; confidence max(p, 1-p) =
# [0.75, 0.75, 0.5, 0.95]; correct (m > 0) = [1, 0, 0, 1]. Bins of width 0.1 from 0.5:
#   0.50-0.60: 1 pair, confidence 0.5,  accuracy 0    -> |gap| 0.5
#   0.70-0.80: 2 pairs, confidence 0.75, accuracy 0.5 -> |gap| 0.25
#   0.90-1.00: 1 pair, confidence 0.95, accuracy 1    -> |gap| 0.05
# ECE = (1 * 0.5 + 2 * 0.25 + 1 * 0.05) / 4 = 0.2625
MARGINS = [math.log(3), -math.log(3), 0.0, math.log(19)]


def test_pairwise_calibration_hand_values():
    table, ece = pairwise_calibration(t(MARGINS), num_bins=5)
    assert [row["bin"] for row in table] == ["0.50-0.60", "0.70-0.80", "0.90-1.00"]
    assert [row["count"] for row in table] == [1, 2, 1]
    assert [row["confidence"] for row in table] == pytest.approx([0.5, 0.75, 0.95])
    assert [row["accuracy"] for row in table] == pytest.approx([0.0, 0.5, 1.0])
    assert ece == pytest.approx(0.2625)


def test_summarize_margins_hand_values():
    # accuracy 2/4, stderr sqrt(0.5 * 0.5 / 4) = 0.25, mean margin ln(19) / 4
    metrics, table = summarize_margins(t(MARGINS), num_bins=5)
    assert metrics["eval/accuracy"] == 0.5
    assert metrics["eval/accuracy_stderr"] == pytest.approx(0.25)
    assert metrics["eval/margin"] == pytest.approx(math.log(19) / 4)
    assert metrics["eval/calibration_error"] == pytest.approx(0.2625)
    assert len(table) == 3


class SumOfIds(torch.nn.Module):
    """A stand-in reward model: the sum of the real token ids."""

    def forward(self, input_ids, attention_mask):
        return (input_ids * attention_mask).sum(-1).float()  # (B,)


class OneProcess:
    num_processes, process_index, device = 1, 0, torch.device("cpu")

    @staticmethod
    def gather(x):
        return x


def test_reward_margins_and_statistics_keep_pair_order_across_batches():
    # rewards (chosen, rejected): (1+2+3, 1+4) = (6, 5), (2+2, 2+7) = (4, 9), (3+5, 3+1) = (8, 4)
    pairs = [{"prompt_ids": [1], "chosen_ids": [2, 3], "rejected_ids": [4]},
             {"prompt_ids": [2], "chosen_ids": [2], "rejected_ids": [7]},
             {"prompt_ids": [3], "chosen_ids": [5], "rejected_ids": [1]}]
    margins = reward_margins(SumOfIds(), pairs, pad_id=0, batch_size=2, accelerator=OneProcess())
    torch.testing.assert_close(margins, torch.tensor([1.0, -5.0, 4.0]))
    stats = reward_statistics(SumOfIds(), pairs, pad_id=0, batch_size=2, accelerator=OneProcess())
    # rewards 6, 5, 4, 9, 8, 4: mean 6, unbiased variance (0 + 1 + 4 + 9 + 4 + 4) / 5 = 4.4
    assert stats == {"mean": pytest.approx(6.0), "std": pytest.approx(math.sqrt(4.4)), "count": 6}


# --- agreement with gold on a policy's own samples ----------------------------------------------
# Prompt p (group "a"), 3 responses: gold [1, 0, 0.5], scores [2, 1, 3]
#   (0, 1): gold +1,   score +1 -> agree;  (0, 2): gold +0.5, score -1 -> disagree
#   (1, 2): gold -0.5, score -2 -> agree                                   -> a: 2 of 3
# Prompt q (group "b"), 3 responses: gold [0.2, 0.2, 0.9], scores [5, 0, 5]
#   (0, 1): equal gold -> not a pair;   (0, 2): gold -0.7, score 0 (a tie) -> disagree
#   (1, 2): gold -0.7, score -5 -> agree                                   -> b: 1 of 2
# all: 3 of 5. Rows are interleaved: pairs are formed within a prompt, wherever its rows are.
ROWS = [("p", 2.0, 1.0, "a"), ("q", 5.0, 0.2, "b"), ("p", 1.0, 0.0, "a"), ("q", 0.0, 0.2, "b"),
        ("q", 5.0, 0.9, "b"), ("p", 3.0, 0.5, "a")]


def test_agreement_with_gold_hand_counted():
    prompts, scores, gold, groups = (list(column) for column in zip(*ROWS))
    result = agreement_with_gold(prompts, scores, gold, groups)
    assert result == {"all": Agreement(3, 5), "a": Agreement(2, 3), "b": Agreement(1, 2)}
    assert list(result) == ["all", "a", "b"]
    assert result["all"].rate == pytest.approx(0.6)
    assert agreement_with_gold(prompts, scores, gold) == {"all": Agreement(3, 5)}
    # min_gold_gap 0.6 keeps only p's (0, 1) and q's two pairs with gap 0.7: a 1 of 1, b 1 of 2
    assert agreement_with_gold(prompts, scores, gold, groups, min_gold_gap=0.6) == {
        "all": Agreement(2, 3), "a": Agreement(1, 1), "b": Agreement(1, 2)}
    assert math.isnan(agreement_with_gold(["p"], [1.0], [1.0])["all"].rate)  # no pairs


def test_agreement_with_gold_errors():
    with pytest.raises(ValueError, match="got 2 prompts, 1 scores, 2 gold"):
        agreement_with_gold(["p", "p"], [1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="min_gold_gap must be >= 0"):
        agreement_with_gold(["p"], [1.0], [0.0], min_gold_gap=-1)
    with pytest.raises(ValueError, match='"all" names the overall agreement'):
        agreement_with_gold(["p"], [1.0], [0.0], groups=["all"])
