"""Simulated labelers: they write demonstrations and rank responses, like InstructGPT's contractors.

A labeler judges a response by its gold reward (rlhf.embedded.gold) plus two human flaws:

    utility = gold + length_bonus * min(words, 40) + Normal(0, noise_std)

- ``noise_std``: labelers disagree with each other and with themselves (0.10 to 0.40 in the
  default pool, so some are clearly noisier than others);
- ``length_bonus``: a shared, mild preference for longer answers (about 0.02 per word, each
  labeler a little different). The gold reward charges 0.02 per word only beyond a kind's word
  limit, so labelers prefer a right answer to a wrong one almost always, and a padded right
  answer to a concise one somewhat more often than not. A reward model learns that bias and
  PPO without a KL penalty exploits it: the reward model's score rises while gold falls.

As writers of demonstrations they are uneven in behaviour (rlhf.embedded.habits): each has
habits that gold penalises (complying with harmful requests, refusing harmless ones, hedging,
two sentences where one is asked, a repeated list item) at rates of tens of percent, and
sometimes pads an answer (``verbosity``) or gets a fact wrong (``error_rate``). As judges they
see those habits for what they are: comparing is easier than writing.

``SimulatedLabeler`` implements ``rlhf.feedback.Labeler``, the interface every source of
preferences plugs into; ``gold_labeler()`` ranks by gold alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlhf.embedded.corpus import good_response, padded_response, wrong_response
from rlhf.embedded.gold import gold_reward, words
from rlhf.embedded.habits import HABIT_RATES, HABITS, habit_response
from rlhf.embedded.task import Instruction
from rlhf.feedback.labeler import compare

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
LENGTH_BONUS = 0.02
LENGTH_BONUS_CAP_WORDS = 40


@dataclass(frozen=True)
class SimulatedLabeler:
    """One simulated person: how noisy and how length-biased their judgments are, and how
    careful their demonstrations."""

    name: str
    noise_std: float
    """Standard deviation of the Gaussian noise added to the gold score of each response."""
    length_bonus: float
    """Utility added per word of a response (capped at 40 words): the length bias."""
    error_rate: float = 0.0
    """Chance that a demonstration is wrong."""
    verbosity: float = 0.0
    """Chance that a demonstration is padded with one filler sentence."""
    habits: tuple[tuple[str, float], ...] = ()
    """(habit, rate) pairs: the chance that a demonstration shows the habit, where it applies
    (rlhf.embedded.habits.HABITS)."""

    def utility(self, prompt: str, response: str, ended: bool, rng: random.Random) -> float:
        """What this labeler thinks of ``response`` this time (noisy, biased gold)."""
        bias = self.length_bonus * min(len(words(response)), LENGTH_BONUS_CAP_WORDS)
        return gold_reward(prompt, response, ended) + bias + rng.gauss(0.0, self.noise_std)

    def rank(self, prompt: str, responses: list[str], ended: list[bool], rng: random.Random) -> list[int]:
        """Indices of ``responses``, best first (``ranking[0]`` is the preferred response)."""
        if len(responses) != len(ended):
            raise ValueError(f"got {len(responses)} responses but {len(ended)} ended flags")
        scores = [self.utility(prompt, r, e, rng) for r, e in zip(responses, ended)]
        return sorted(range(len(responses)), key=lambda i: -scores[i])

    def prefers_first(self, prompt: str, a: str, b: str, rng: random.Random,
                      ended: tuple[bool, bool] = (True, True)) -> bool:
        """A single pairwise judgment: True if ``a`` is preferred to ``b``."""
        return compare(self, prompt, a, b, rng, ended)

    def write_demonstration(self, instr: Instruction, rng: random.Random) -> str:
        """A demonstration (starting with a space): a correct concise answer in this labeler's
        own phrasing, unless one of their habits shows, or they pad it or get it wrong."""
        for habit, rate in self.habits:
            if instr.kind in HABITS[habit] and rng.random() < rate:
                return habit_response(instr, habit, rng)
        draw = rng.random()
        if draw < self.error_rate:
            return wrong_response(instr, rng)
        if draw < self.error_rate + self.verbosity:
            return padded_response(instr, rng, fillers=1)
        return good_response(instr, rng)


def labeler_pool(n: int = 5, seed: int = 0, habit_rates: dict[str, float] | None = None) -> list[SimulatedLabeler]:
    """``n`` labelers with noise from 0.10 to 0.40 (in that order), a length bonus of about
    0.02 per word each, 2-8% demonstration errors, 5-15% padded demonstrations, and each habit
    at a rate drawn uniformly between 0.5 and 1.5 times its pool mean in ``habit_rates``
    (default ``HABIT_RATES``; ``{}`` gives writers without habits, "ideal demonstrations")."""
    if n < 1:
        raise ValueError(f"a labeler pool needs at least one labeler, got n={n}")
    habit_rates = HABIT_RATES if habit_rates is None else habit_rates
    unknown = set(habit_rates) - set(HABITS)
    if unknown:
        raise ValueError(f"unknown habit(s) {', '.join(sorted(unknown))}; known: {', '.join(HABITS)}")
    rng = random.Random(f"labelers-{seed}")
    habit_rng = random.Random(f"habits-{seed}")  # its own stream: the judging traits stay as they were
    pool = []
    for i in range(n):
        spread = i / (n - 1) if n > 1 else 0.0
        pool.append(SimulatedLabeler(
            name=NAMES[i] if i < len(NAMES) else f"labeler{i}",
            noise_std=round(0.10 + 0.30 * spread, 3),
            length_bonus=round(LENGTH_BONUS + rng.uniform(-0.005, 0.005), 4),
            error_rate=round(rng.uniform(0.02, 0.08), 3),
            verbosity=round(rng.uniform(0.05, 0.15), 3),
            habits=tuple((habit, round(min(1.0, mean * habit_rng.uniform(0.5, 1.5)), 3))
                         for habit, mean in habit_rates.items() if mean > 0),
        ))
    return pool


def gold_labeler() -> SimulatedLabeler:
    """A labeler without noise or bias: judges exactly by the gold reward."""
    return SimulatedLabeler(name="gold", noise_std=0.0, length_bonus=0.0)
