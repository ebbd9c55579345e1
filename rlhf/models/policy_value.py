"""The trainable half of PPO in one module: the policy and its value function.

Both are optimised by one optimizer on pg_loss + vf_coef * vf_loss, and wrapping them in
one nn.Module lets accelerate prepare (DDP, DeepSpeed, FSDP) a single model. The value is
either a separate backbone with a scalar head (InstructGPT initialises it from the reward
model) or, to save compute, a head on the policy's own last hidden state.
"""

from __future__ import annotations

import torch
from torch import nn

from rlhf.models.positions import position_ids_from_mask
from rlhf.models.scalar_model import ScalarModel


class PolicyAndValue(nn.Module):
    def __init__(self, policy, value_model: ScalarModel | None = None):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        if value_model is None:  # shared backbone: a fresh scalar head on the policy's last hidden state
            self.value_head = nn.Linear(policy.config.hidden_size, 1)
            nn.init.normal_(self.value_head.weight, std=1.0 / (policy.config.hidden_size + 1) ** 0.5)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    def forward(self, query_responses: torch.Tensor, attention_mask: torch.Tensor, prompt_length: int,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits predicting each response token, at the sampling temperature (B, R, V), and the
        value of the state before each response token (B, R)."""
        R = query_responses.shape[1] - prompt_length
        shared = self.value_head is not None
        output = self.policy(
            input_ids=query_responses, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
            use_cache=False, logits_to_keep=R + 1, output_hidden_states=shared,
        )
        logits = output.logits[:, :-1].float() / temperature  # (B, R, V)
        if shared:
            hidden = output.hidden_states[-1][:, prompt_length - 1:-1]  # (B, R, H)
            values = self.value_head(hidden).squeeze(-1).float()  # (B, R)
        else:
            values = self.separate_values(query_responses, attention_mask, prompt_length)
        return logits, values

    def separate_values(self, query_responses: torch.Tensor, attention_mask: torch.Tensor,
                        prompt_length: int) -> torch.Tensor:
        """The separate value model's value of the state before each response token (B, R),
        without a policy forward (PPO's rollout needs only these when the sampler recorded the
        policy's log-probs)."""
        return self.value_model(query_responses, attention_mask, per_token=True)[:, prompt_length - 1:-1]


def disable_dropout(model: nn.Module) -> None:
    """PPO's ratio pi/pi_old and DPO's log-ratios assume a deterministic forward pass;
    dropout would make the same policy disagree with itself (TRL and OpenRLHF do the same)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
