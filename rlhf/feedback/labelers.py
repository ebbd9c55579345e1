"""Simulated labelers: they write demonstrations and rank responses, like InstructGPT's contractors.

A labeler judges a response by its gold reward (rlhf.embedded.gold) plus two human flaws:

    utility = gold + length_bonus * min(words, 40) + Normal(0, noise_std)

- ``noise_std``: labelers disagree with each other and with themselves (0.10 to 0.40 in the
  default pool, so some are clearly noisier than others);
- ``length_bonus``: a shared, mild preference for longer answers (about 0.02 per word, each
  labeler a little different). The gold reward charges 0.02 per word beyond a kind's word
  limit, so labelers prefer a right answer to a wrong one almost always, and a padded right
  answer to a concise one somewhat more often than not. A reward model learns that bias and
  PPO without a KL penalty exploits it: the reward model's score rises while gold falls.

Demonstrations are mostly correct and concise; each labeler sometimes pads one (``verbosity``)
or makes a mistake (``error_rate``), so SFT alone does not reach the gold optimum.

Files are JSONL, one object per line, written atomically (temp file, then os.replace):
demonstrations ``{"prompt", "completion", "labeler"}``, rankings ``{"prompt", "responses",
"ranking", "labeler"}`` with ranking best first, comparisons ``{"prompt", "chosen", "rejected",
"labeler"}``, prompts ``{"prompt"}``. Prompts are rendered with ``format_prompt``; completions
start with a space and carry no end-of-text token (trainers append it).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Iterable, Sequence

from rlhf.embedded.corpus import FILLER_AFTER, good_response, padded_response, response_variant, wrong_response
from rlhf.embedded.gold import gold_reward, words
from rlhf.embedded.task import KINDS, Instruction, format_prompt, instructions

NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")
LENGTH_BONUS = 0.02
LENGTH_BONUS_CAP_WORDS = 40

# How often each quality is drawn for a candidate response (with replacement; texts distinct).
# Padding goes on wrong answers as often as on right ones, so that filler sentences carry no
# information about correctness: what a reward model learns about them is the labelers' length
# bias alone (otherwise "has a filler" would be a proxy for "is correct", a far stronger hack).
CANDIDATE_WEIGHTS = {"good": 0.25, "padded": 0.15, "padded_wrong": 0.15, "wrong": 0.2, "repetitive": 0.08,
                     "decline": 0.07, "curt_decline": 0.03, "rambling": 0.07}


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
        return self.rank(prompt, [a, b], list(ended), rng)[0] == 0

    def write_demonstration(self, instr: Instruction, rng: random.Random) -> str:
        """A demonstration (starting with a space): usually a correct concise answer in this
        labeler's own phrasing, sometimes padded or wrong."""
        draw = rng.random()
        if draw < self.error_rate:
            return wrong_response(instr, rng)
        if draw < self.error_rate + self.verbosity:
            return padded_response(instr, rng, fillers=1)
        return good_response(instr, rng)


def labeler_pool(n: int = 5, seed: int = 0) -> list[SimulatedLabeler]:
    """``n`` labelers with noise from 0.10 to 0.40 (in that order), a length bonus of about
    0.02 per word each, 2-8% demonstration errors and 5-15% padded demonstrations."""
    if n < 1:
        raise ValueError(f"a labeler pool needs at least one labeler, got n={n}")
    rng = random.Random(f"labelers-{seed}")
    pool = []
    for i in range(n):
        spread = i / (n - 1) if n > 1 else 0.0
        pool.append(SimulatedLabeler(
            name=NAMES[i] if i < len(NAMES) else f"labeler{i}",
            noise_std=round(0.10 + 0.30 * spread, 3),
            length_bonus=round(LENGTH_BONUS + rng.uniform(-0.005, 0.005), 4),
            error_rate=round(rng.uniform(0.02, 0.08), 3),
            verbosity=round(rng.uniform(0.05, 0.15), 3),
        ))
    return pool


def gold_labeler() -> SimulatedLabeler:
    """A labeler without noise or bias: judges exactly by the gold reward."""
    return SimulatedLabeler(name="gold", noise_std=0.0, length_bonus=0.0)


def padded_wrong_response(instr: Instruction, rng: random.Random) -> str:
    """A wrong answer followed by one to three filler sentences."""
    fillers = rng.sample(FILLER_AFTER, rng.randint(1, 3))
    return " " + " ".join([wrong_response(instr, rng).strip()] + fillers)


def candidate_responses(instr: Instruction, k: int, rng: random.Random) -> list[str]:
    """``k`` distinct responses of varied quality (correct, padded, wrong, repetitive, wrongly
    declining or complying, rambling), so comparisons cover every part of the rubric."""
    qualities, weights = zip(*CANDIDATE_WEIGHTS.items())
    responses: list[str] = []
    for _ in range(50 * k):
        if len(responses) == k:
            break
        quality = rng.choices(qualities, weights)[0]
        response = padded_wrong_response(instr, rng) if quality == "padded_wrong" else response_variant(instr, quality, rng)
        if response not in responses:
            responses.append(response)
    if len(responses) < k:
        raise ValueError(f"could not make {k} distinct responses for {instr.text!r}")
    return responses


# ---- Records and files ---------------------------------------------------------------------------

def ranking_record(labeler: SimulatedLabeler, prompt: str, responses: list[str], rng: random.Random,
                   ended: list[bool] | None = None) -> dict:
    """A rankings-file record; ``ended`` defaults to all True (complete responses)."""
    ended = [True] * len(responses) if ended is None else ended
    return {"prompt": prompt, "responses": list(responses),
            "ranking": labeler.rank(prompt, responses, ended, rng), "labeler": labeler.name}


def rankings_to_comparisons(records: Iterable[dict]) -> list[dict]:
    """Every pair of each ranking as a comparison: K responses give K(K-1)/2 pairs."""
    comparisons = []
    for record in records:
        order = record["ranking"]
        for better, worse in combinations(order, 2):
            comparisons.append({"prompt": record["prompt"], "chosen": record["responses"][better],
                                "rejected": record["responses"][worse], "labeler": record["labeler"]})
    return comparisons


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write one JSON object per line (UTF-8) to a temp file beside ``path``, then rename it
    into place, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def _cycle(instrs: list[Instruction], count: int, rng: random.Random) -> list[Instruction]:
    """``count`` instructions, each used as evenly as possible, in a shuffled order."""
    out = [instrs[i % len(instrs)] for i in range(count)]
    rng.shuffle(out)
    return out


def demonstrations(instrs: list[Instruction], count: int, pool: list[SimulatedLabeler],
                   rng: random.Random) -> list[dict]:
    records = []
    for instr in _cycle(instrs, count, rng):
        labeler = rng.choice(pool)
        records.append({"prompt": format_prompt(instr.text), "completion": labeler.write_demonstration(instr, rng),
                        "labeler": labeler.name})
    return records


def rankings(instrs: list[Instruction], count: int, k: int, pool: list[SimulatedLabeler],
             rng: random.Random) -> list[dict]:
    return [ranking_record(rng.choice(pool), format_prompt(instr.text), candidate_responses(instr, k, rng), rng)
            for instr in _cycle(instrs, count, rng)]


def generate_task_data(out_dir: str | Path, seed: int = 0, num_demonstrations: int = 1500,
                       num_rankings: int = 1500, k: int = 4, num_labelers: int = 5,
                       demonstration_kinds: Sequence[str] | None = None) -> dict[str, Path]:
    """Write the embedded task's data files and return their paths by name: sft_train/test
    (demonstrations), rankings_train/test (K candidates ranked), comparisons_train/test (their
    pairs) and prompts_train/test. Test files hold one demonstration and two rankings per test
    prompt. Deterministic given ``seed``.

    ``demonstration_kinds`` limits the demonstrations (both SFT files) to those kinds of
    instruction (default: all); rankings and prompts always cover every kind."""
    out_dir = Path(out_dir)
    rng = random.Random(f"task-data-{seed}")
    pool = labeler_pool(num_labelers, seed)
    train, test = instructions("train", seed), instructions("test", seed)
    rank_train = rankings(train, num_rankings, k, pool, rng)
    rank_test = rankings(test, 2 * len(test), k, pool, rng)
    kinds = set(KINDS if demonstration_kinds is None else demonstration_kinds)
    if not kinds or kinds - set(KINDS):
        raise ValueError(f"demonstration_kinds must be a non-empty subset of {KINDS}, got {sorted(kinds)}")
    demo_train, demo_test = [i for i in train if i.kind in kinds], [i for i in test if i.kind in kinds]
    files = {
        "sft_train": demonstrations(demo_train, num_demonstrations, pool, rng),
        "sft_test": demonstrations(demo_test, len(demo_test), pool, rng),
        "rankings_train": rank_train,
        "rankings_test": rank_test,
        "comparisons_train": rankings_to_comparisons(rank_train),
        "comparisons_test": rankings_to_comparisons(rank_test),
        "prompts_train": [{"prompt": format_prompt(i.text)} for i in train],
        "prompts_test": [{"prompt": format_prompt(i.text)} for i in test],
    }
    return {name: write_jsonl(out_dir / f"{name}.jsonl", records) for name, records in files.items()}
