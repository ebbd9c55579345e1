"""The embedded task's data files: demonstrations, rankings of candidate responses, their
comparisons and the prompts, all written by the simulated labelers (rlhf.embedded.labelers).

Files are JSONL, one object per line, written atomically: demonstrations ``{"prompt",
"completion", "labeler"}``, rankings ``{"prompt", "responses", "ranking", "labeler"}`` with
ranking best first, comparisons ``{"prompt", "chosen", "rejected", "labeler"}``, prompts
``{"prompt"}``. Prompts are rendered with ``format_prompt``; completions start with a space and
carry no end-of-text token (trainers append it).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from rlhf.atomic_io import write_jsonl
from rlhf.data.formats import Ranking, rankings_to_comparisons
from rlhf.embedded.corpus import FILLER_AFTER, response_variant, wrong_response
from rlhf.embedded.labelers import SimulatedLabeler, labeler_pool
from rlhf.embedded.task import KINDS, Instruction, format_prompt, instructions
from rlhf.feedback.labeler import ranking_record

# How often each quality is drawn for a candidate response (with replacement; texts distinct).
# Padding goes on wrong answers as often as on right ones, so that filler sentences carry no
# information about correctness: what a reward model learns about them is the labelers' length
# bias alone (otherwise "has a filler" would be a proxy for "is correct", a far stronger hack).
CANDIDATE_WEIGHTS = {"good": 0.25, "padded": 0.15, "padded_wrong": 0.15, "wrong": 0.2, "repetitive": 0.08,
                     "decline": 0.07, "curt_decline": 0.03, "rambling": 0.07}

# A comparison: (prompt, response a, response b).
Comparison = tuple[str, str, str]


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


def sample_comparisons(instrs: Sequence[Instruction], n: int, rng: random.Random) -> list[Comparison]:
    """``n`` comparisons of two candidate responses to instructions drawn from ``instrs``."""
    comparisons = []
    for _ in range(n):
        instr = rng.choice(instrs)
        a, b = candidate_responses(instr, 2, rng)
        comparisons.append((format_prompt(instr.text), a, b))
    return comparisons


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


def comparison_records(ranking_records: Sequence[dict]) -> list[dict]:
    """Every pair of each ranking record as a comparisons-file record (K responses, K(K-1)/2 pairs)."""
    pairs = rankings_to_comparisons(Ranking(r["prompt"], r["responses"], r["ranking"], r["labeler"])
                                    for r in ranking_records)
    return [{"prompt": c.prompt, "chosen": c.chosen, "rejected": c.rejected, "labeler": c.labeler} for c in pairs]


def generate_task_data(out_dir: str | Path, seed: int = 0, num_demonstrations: int = 1500,
                       num_rankings: int = 1500, k: int = 4, num_labelers: int = 5,
                       demonstration_kinds: Sequence[str] | None = None,
                       habit_rates: dict[str, float] | None = None) -> dict[str, Path]:
    """Write the embedded task's data files and return their paths by name: sft_train/test
    (demonstrations), sft_ideal_train (the same prompts demonstrated by the same writers without
    their habits: what SFT reaches when demonstrations are near-perfect), rankings_train/test (K
    candidates ranked), comparisons_train/test (their pairs) and prompts_train/test. Test files
    hold one demonstration and two rankings per test prompt. Deterministic given ``seed``.

    ``demonstration_kinds`` limits the demonstrations (the SFT files) to those kinds of
    instruction (default: all); rankings and prompts always cover every kind. ``habit_rates``
    sets the writers' habits (default ``rlhf.embedded.habits.HABIT_RATES``; ``{}`` for none)."""
    out_dir = Path(out_dir)
    rng = random.Random(f"task-data-{seed}")
    pool = labeler_pool(num_labelers, seed, habit_rates)
    train, test = instructions("train", seed), instructions("test", seed)
    rank_train = rankings(train, num_rankings, k, pool, rng)
    rank_test = rankings(test, 2 * len(test), k, pool, rng)
    kinds = set(KINDS if demonstration_kinds is None else demonstration_kinds)
    if not kinds or kinds - set(KINDS):
        raise ValueError(f"demonstration_kinds must be a non-empty subset of {KINDS}, got {sorted(kinds)}")
    demo_train, demo_test = [i for i in train if i.kind in kinds], [i for i in test if i.kind in kinds]
    ideal = demonstrations(demo_train, num_demonstrations, labeler_pool(num_labelers, seed, habit_rates={}),
                           random.Random(f"ideal-demonstrations-{seed}"))
    files = {
        "sft_train": demonstrations(demo_train, num_demonstrations, pool, rng),
        "sft_test": demonstrations(demo_test, len(demo_test), pool, rng),
        "sft_ideal_train": ideal,
        "rankings_train": rank_train,
        "rankings_test": rank_test,
        "comparisons_train": comparison_records(rank_train),
        "comparisons_test": comparison_records(rank_test),
        "prompts_train": [{"prompt": format_prompt(i.text)} for i in train],
        "prompts_test": [{"prompt": format_prompt(i.text)} for i in test],
    }
    return {name: write_jsonl(out_dir / f"{name}.jsonl", records) for name, records in files.items()}
