"""Rank a policy's own samples (InstructGPT section 3.5: labelers rank outputs of the current
models): the step that the demo, ``rlhf pipeline`` and iterative rounds share.

Each ranking keeps some of its existing responses and replaces the rest with fresh samples of
the policy; the labeler who ranked the original set ranks the mixed one, end-of-text flags
included (a response cut off at the token limit is worse).
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import torch

from rlhf.feedback.labeler import Labeler, ranking_record
from rlhf.rollout.generation import SamplingParams, sample_responses


@torch.no_grad()
def rank_policy_samples(policy, tokenizer, rankings: Sequence[dict], labeler_for: Callable[[dict], Labeler],
                        samples_per_ranking: int, k: int, sampling: SamplingParams, seed: int,
                        batch_size: int = 64) -> list[dict]:
    """New ranking records in which ``samples_per_ranking`` of each record's ``k`` responses are
    samples of ``policy``; ``labeler_for(record)`` names who ranks it. Records left with fewer
    than two distinct non-empty responses are dropped. Deterministic given ``seed``."""
    if not 0 <= samples_per_ranking <= k:
        raise ValueError(f"samples_per_ranking must be between 0 and k={k}, got {samples_per_ranking}")
    rng = random.Random(f"policy-rankings-{seed}")
    m = samples_per_ranking
    if m == 0:
        return [dict(record) for record in rankings]
    torch.manual_seed(seed)
    prompts = [record["prompt"] for record in rankings for _ in range(m)]
    samples, ended = sample_responses(policy, tokenizer, prompts, sampling, batch_size=batch_size * m)
    out = []
    for i, record in enumerate(rankings):
        keep = [(r, True) for r in record["responses"][: k - m]]
        drawn = [(samples[i * m + j], ended[i * m + j]) for j in range(m)]
        mixed = [(r, e) for r, e in keep + drawn if r.strip()]
        texts = list(dict.fromkeys(r for r, _ in mixed))  # distinct, in order
        if len(texts) < 2:
            continue
        ended_of = dict(mixed)
        out.append(ranking_record(labeler_for(record), record["prompt"], texts, rng,
                                  ended=[ended_of[r] for r in texts]))
    return out
