"""The reward role of PPO: a frozen reward model, an ensemble of them, or a Python function.

Each is called on a rollout (token ids plus the decoded texts) and returns one score per
response (B,). A reward model sharing the policy's tokenizer scores the token ids as they
were sampled; one with another tokenizer scores the text re-tokenised with its own tokenizer.
An ensemble's members are combined by one of ``rlhf.rewards.ensemble.AGGREGATIONS``.
A function gets the prompts as the user wrote them and the records' other fields
(rlhf.rewards.functions); a reward model scores the text the policy saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from rlhf.data import pad_sequences
from rlhf.models.loading import load_tokenizer, training_stage_of
from rlhf.models.scalar_model import ScalarHeadError, ScalarModel, load_reward_stats
from rlhf.rewards.ensemble import AGGREGATIONS, aggregate_rewards
from rlhf.rewards.functions import RewardFunction, RewardFunctionError, load_function  # noqa: F401 (re-exported)
from rlhf.rollout.generation import Rollout

POLICY_STAGES = ("sft", "ppo", "dpo")  # stages that save a causal LM (a policy), never a reward model
REWARD_MODEL_HINT = ("pass the model folder written by `rlhf rm` (OUTPUT_DIR/model) as --reward_model_path, or "
                     "score with a Python function via --reward_function")


def check_reward_model_path(path: str | Path) -> None:
    """Refuse a checkpoint whose rlhf_training.json says a policy stage produced it."""
    stage = training_stage_of(path)
    if stage in POLICY_STAGES:
        raise ScalarHeadError(f"reward model {str(path)!r} was saved by `rlhf {stage}`: it is a policy (a causal LM), "
                              f"not a reward model, and its score head would be random; {REWARD_MODEL_HINT}")


def load_reward_model(path: str | Path, trust_remote_code: bool = False):
    """Load a reward model saved by ``rlhf rm``: (model in eval mode, its tokenizer, its saved
    training mean/std or None). A policy checkpoint or one without a trained head is refused."""
    check_reward_model_path(path)
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    model = ScalarModel.from_pretrained(path, tokenizer, trust_remote_code=trust_remote_code,
                                        hint=REWARD_MODEL_HINT).eval()
    model.requires_grad_(False)
    return model, tokenizer, load_reward_stats(path)


@torch.no_grad()
def score_responses(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32,
                    max_length: int = 512, ended: Sequence[bool] | None = None) -> torch.Tensor:
    """Reward of each (prompt, response) pair, in batches: (N,).

    Texts are encoded as in training (prompt and response separately, end-of-text appended to
    each response unless ``ended`` says it never ended); over-long rows keep their last tokens."""
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(prompts), batch_size):
        rows = []
        for i in range(start, min(start + batch_size, len(prompts))):
            ids = tokenizer(prompts[i], add_special_tokens=False)["input_ids"]
            ids = ids + tokenizer(responses[i], add_special_tokens=False)["input_ids"]
            if ended is None or ended[i]:
                ids = ids + [tokenizer.eos_token_id]
            rows.append(ids[-max_length:])
        input_ids = pad_sequences(rows, tokenizer.pad_token_id)  # (b, T) right-padded
        attention_mask = pad_sequences([[1] * len(r) for r in rows], 0)  # (b, T)
        scores.append(model(input_ids.to(device), attention_mask.to(device)).float().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


class RewardModelScorer:
    """One frozen reward model, or an ensemble of several whose scores are aggregated:
    ``mean``, ``min`` (worst case) or ``mean_minus_std`` (mean - uncertainty_coef * std over members)."""

    def __init__(self, paths: Sequence[str], policy_tokenizer, device, trust_remote_code: bool = False,
                 aggregation: str = "mean", uncertainty_coef: float = 0.0):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown reward aggregation {aggregation!r}; choose one of {', '.join(AGGREGATIONS)}")
        if uncertainty_coef < 0:
            raise ValueError(f"the uncertainty coefficient must be >= 0, got {uncertainty_coef}")
        self.aggregation, self.uncertainty_coef = aggregation, uncertainty_coef
        self.members = []
        for path in paths:
            model, tokenizer, stats = load_reward_model(path, trust_remote_code)
            same_vocab = tokenizer.get_vocab() == policy_tokenizer.get_vocab()
            self.members.append((model.to(device), tokenizer, stats, same_vocab))
        self.stats = self.members[0][2] if len(self.members) == 1 else None

    @torch.no_grad()
    def member_scores(self, rollout: Rollout, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Each member's score of each response: (M, B)."""
        scores = []
        for model, tokenizer, _, same_vocab in self.members:
            if same_vocab:  # score exactly the sampled tokens, read at the last real one
                scores.append(model(rollout.query_responses, rollout.attention_mask,
                                    shared_prefix_length=rollout.prompt_length))
            else:  # the policy's ids mean nothing to this model: re-tokenise the text with its tokenizer
                scores.append(score_responses(model, tokenizer, prompts, responses,
                                              ended=rollout.ended.tolist()).to(rollout.query_responses.device))
        return torch.stack(scores)  # (M, B)

    def __call__(self, rollout: Rollout, prompts: list[str], responses: list[str], raw_prompts: Sequence | None = None,
                 fields: Sequence[Mapping] | None = None) -> torch.Tensor:
        """Scores (B,) of the decoded texts; ``raw_prompts`` and ``fields`` are for functions only."""
        return aggregate_rewards(self.member_scores(rollout, prompts, responses), self.aggregation,
                                 self.uncertainty_coef)  # (B,)


class FunctionScorer:
    """A programmatic reward: ``f(prompts, responses, ended, **fields) -> list[float]``, checked on
    every call (rlhf.rewards.functions)."""

    def __init__(self, function: Callable):
        self.function = function if isinstance(function, RewardFunction) else RewardFunction(function)
        self.stats = None

    def __call__(self, rollout: Rollout, prompts: list[str], responses: list[str], raw_prompts: Sequence | None = None,
                 fields: Sequence[Mapping] | None = None) -> torch.Tensor:
        """Scores (B,). ``prompts`` are the decoded prompts; the function gets ``raw_prompts``
        (as the user wrote them) when given, and the records' ``fields`` as keyword arguments."""
        values = self.function(raw_prompts if raw_prompts is not None else prompts, responses,
                               rollout.ended.tolist(), fields)
        return torch.tensor(values, dtype=torch.float32, device=rollout.query_responses.device)  # (B,)
