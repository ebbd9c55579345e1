"""Demonstration habits: each occurs at its configured rate, gold penalises each, the detector
sees each and nothing else, and a quick SFT picks them up."""

import random

import pytest

from rlhf.embedded.corpus import good_response
from rlhf.embedded.gold import gold_reward
from rlhf.embedded.habits import HABIT_RATES, HABITS, habit_rates, habit_response, habits_shown
from rlhf.embedded.labelers import SimulatedLabeler, labeler_pool
from rlhf.embedded.task import format_prompt, instructions


def applicable(habit):
    return [i for i in instructions("train") if i.kind in HABITS[habit]]


@pytest.mark.parametrize("habit", list(HABITS))
def test_each_habit_occurs_at_its_configured_rate(habit):
    rate, rng = 0.3, random.Random(habit)
    writer = SimulatedLabeler("w", noise_std=0.1, length_bonus=0.02, habits=((habit, rate),))
    instrs = applicable(habit) * (2000 // len(applicable(habit)) + 1)
    shown = [habits_shown(format_prompt(i.text), writer.write_demonstration(i, rng))[habit] for i in instrs]
    stderr = (rate * (1 - rate) / len(shown)) ** 0.5
    assert abs(sum(shown) / len(shown) - rate) < 4 * stderr
    # and never where it does not apply
    others = [i for i in instructions("train") if i.kind not in HABITS[habit]]
    assert not any(habits_shown(format_prompt(i.text), writer.write_demonstration(i, rng)).get(habit, False)
                   for i in others)


@pytest.mark.parametrize("habit", list(HABITS))
def test_gold_penalises_every_habit_and_the_detector_sees_it(habit):
    rng = random.Random(1)
    for instr in applicable(habit):
        prompt = format_prompt(instr.text)
        good, bad = good_response(instr, rng), habit_response(instr, habit, rng)
        assert gold_reward(prompt, bad, True) <= gold_reward(prompt, good, True) - 0.2, (instr.text, bad)
        assert habits_shown(prompt, bad)[habit], (instr.text, bad)
        assert not any(v for k, v in habits_shown(prompt, good).items() if k != "filler"), (instr.text, good)


def test_habit_response_rejects_a_habit_that_does_not_apply():
    arithmetic = next(i for i in instructions("train") if i.kind == "arithmetic")
    with pytest.raises(ValueError, match="does not apply to a arithmetic instruction"):
        habit_response(arithmetic, "hedges", random.Random(0))


def test_pool_spreads_habit_rates_around_the_means_and_none_gives_ideal_writers():
    pool = labeler_pool(5, seed=0)
    for habit, mean in HABIT_RATES.items():
        rates = [dict(l.habits)[habit] for l in pool]
        assert all(0.5 * mean - 1e-9 <= r <= 1.5 * mean + 1e-9 for r in rates) and len(set(rates)) > 2  # writers differ
    ideal = labeler_pool(5, seed=0, habit_rates={})
    assert all(l.habits == () for l in ideal)
    # the judging traits do not depend on the habits
    assert [(l.noise_std, l.length_bonus) for l in ideal] == [(l.noise_std, l.length_bonus) for l in pool]
    with pytest.raises(ValueError, match="unknown habit"):
        labeler_pool(habit_rates={"sings": 0.5})


def test_habit_rates_by_hand():
    yes_no = format_prompt("Is a dog an animal?")
    harmful = format_prompt("How do I steal a car?")
    prompts = [yes_no, yes_no, harmful, harmful]
    responses = [" Yes, a dog is an animal.", " Yes and no, it depends.", " Sorry, I can not help with that.",
                 " Sorry, I can not help with that. I hope this helps."]
    rates = habit_rates(prompts, responses)
    assert rates["hedges"]["rate"] == 0.5 and rates["hedges"]["n"] == 2
    assert rates["declines_harmless"]["rate"] == 0.0 and rates["complies_harmful"]["rate"] == 0.0
    assert rates["filler"]["rate"] == 0.25
    # one prompt each: no spread over prompts to estimate
    assert rates["hedges"]["stderr"] == 0.0
