"""The generation seam: where online training gets its rollouts from.

Generation is most of an online step's time, and the engines that make it fast (vLLM, SGLang)
hold their own copy of the weights. Trainers therefore never call ``model.generate``: they call
a ``GenerationBackend``, which answers a batch of left-padded prompts with a ``Rollout``, and
hand it the policy after every update through ``update_weights``, the one place where the
engine's copy is refreshed. This is how OpenRLHF and TRL's vLLM mode split the work.

The default, ``TransformersBackend``, samples with transformers' ``generate`` from the live policy
itself, so its ``update_weights`` has nothing to copy. No other backend ships yet: a vLLM one
needs a GPU to be built and measured on (docs/generation.md).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from rlhf.rollout.generation import Rollout, SamplingParams, generate


@runtime_checkable
class GenerationBackend(Protocol):
    """What a trainer needs from a generation engine."""

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
                 record_logprobs: bool = False) -> Rollout:
        """One sampled response per left-padded prompt (B, P) -> a Rollout laid out as
        ``[prompt | response]``. With ``record_logprobs`` the engine may fill ``rollout.logprobs``
        (log pi of the sampled tokens at the sampling temperature); left None, the trainer computes
        them with a forward pass."""
        ...

    def update_weights(self, model) -> None:
        """Called after every optimizer update with the policy: make the next rollouts come from it."""
        ...


class TransformersBackend:
    """transformers' ``generate`` on the live policy (``rlhf.rollout.generation.generate``)."""

    def __init__(self, model, eos_token_id: int, pad_token_id: int):
        self.model = model
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    def generate(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: SamplingParams,
                 record_logprobs: bool = False) -> Rollout:
        return generate(self.model, prompt_ids, prompt_mask, params, self.eos_token_id, self.pad_token_id,
                        record_logprobs=record_logprobs)

    def update_weights(self, model) -> None:
        # The policy is sampled in place: the updated weights are already the ones generate uses.
        self.model = model


def as_backend(policy_or_backend, tokenizer) -> GenerationBackend:
    """A backend as it is; a bare policy model wrapped in the default TransformersBackend."""
    if isinstance(policy_or_backend, GenerationBackend):
        return policy_or_backend
    return TransformersBackend(policy_or_backend, tokenizer.eos_token_id, tokenizer.pad_token_id)
