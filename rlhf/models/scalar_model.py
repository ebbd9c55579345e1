"""A transformer backbone with a scalar head: the reward model (read at the last real token)
and the value model (read at every token).

The container is transformers' ``AutoModelForSequenceClassification`` with one label, so a
checkpoint is a standard save_pretrained folder that other tools (TRL, OpenRLHF) can load,
and initialising from a causal LM (normally the SFT checkpoint) keeps its backbone and adds a
fresh head. We do not use its own pooling, which finds the last token by looking for the pad
id and so breaks when pad equals end-of-text; we read the attention mask instead, which is
right for left and right padding alike.

A head that transformers initialises because the weights lack it is random: right for
``rlhf rm``, which trains it, and wrong for a reward model, which PPO would then follow blindly.
``from_pretrained`` therefore refuses such a checkpoint unless the caller allows a new head.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rlhf.errors import UserError
from rlhf.models.loading import align_model_with_tokenizer, check_local_model_path, training_stage_of, use_fused_gelu
from rlhf.models.positions import position_ids_from_mask
from rlhf.models.shared_prefix import forward_sharing_prefix

REWARD_STATS_FILE = "reward_stats.json"
HEAD_NAMES = ("score", "classifier", "head")  # where transformers' sequence classifiers keep the head


class ScalarHeadError(UserError):
    """A reward or value checkpoint whose weights hold no trained scalar head (e.g. a causal LM)."""


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token, for left or right padding."""
    T = attention_mask.shape[-1]
    return T - 1 - attention_mask.long().flip(-1).argmax(-1)  # (B,)


class ScalarModel(nn.Module):
    """Backbone + linear head giving one number per sequence (reward) or per token (value)."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf_model = hf_model
        self.backbone = hf_model.base_model
        self.head = _score_head(hf_model)

    @classmethod
    def from_pretrained(cls, path: str | Path, tokenizer=None, dtype: torch.dtype = torch.float32,
                        trust_remote_code: bool = False, allow_new_head: bool = False,
                        role: str = "reward model", hint: str = "") -> "ScalarModel":
        """Load a reward/value checkpoint. A checkpoint without a trained scalar head (a causal LM)
        raises :class:`ScalarHeadError` naming ``role`` and ending with ``hint`` (what to do),
        unless ``allow_new_head`` (``rlhf rm`` starting from the SFT model): the head is then new."""
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging as hf_logging

        path = check_local_model_path(path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the "newly initialized score weights" case is decided below
        try:
            hf_model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=1, local_files_only=True, use_safetensors=True, dtype=dtype,
                trust_remote_code=trust_remote_code, output_loading_info=True,
            )
        finally:
            hf_logging.set_verbosity(verbosity)
        missing = sorted(k for k in info["missing_keys"] if k.split(".")[0] in HEAD_NAMES)
        if missing and not allow_new_head:
            raise ScalarHeadError(f"{role} {str(path)!r} has no trained scalar head (its weights lack "
                                  f"{', '.join(missing)}): it is {describe_checkpoint(path)}, and its score head "
                                  "would be random" + (f"; {hint}" if hint else ""))
        if tokenizer is not None:
            align_model_with_tokenizer(hf_model, tokenizer)
        use_fused_gelu(hf_model)
        return cls(hf_model)

    @property
    def config(self):
        return self.hf_model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, per_token: bool = False,
                shared_prefix_length: int = 0) -> torch.Tensor:
        """Scores (B,) read at each row's last real token, or (B, T) at every token with ``per_token``.
        ``shared_prefix_length``: rows that repeat their first columns (a prompt) may run them once
        (rlhf/models/shared_prefix.py); for a score, whose last real token must lie after them."""
        if not per_token and shared_prefix_length > 0:
            score = self._score_sharing_prefix(input_ids, attention_mask, shared_prefix_length)
            if score is not None:
                return score
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        ).last_hidden_state  # (B, T, H)
        if per_token:
            return self.head(hidden).squeeze(-1).float()  # (B, T)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, last_token_index(attention_mask)]  # (B, H)
        return self.head(last).squeeze(-1).float()  # (B,)

    def _score_sharing_prefix(self, input_ids, attention_mask, prefix_length: int) -> torch.Tensor | None:
        last = last_token_index(attention_mask)  # (B,)
        if bool((last < prefix_length).any()):  # a row whose last real token lies in the prefix
            return None
        output = forward_sharing_prefix(self.backbone, input_ids, attention_mask, prefix_length)
        if output is None:
            return None
        hidden = output.last_hidden_state  # (B, T - prefix_length, H)
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return self.head(hidden[rows, last - prefix_length]).squeeze(-1).float()  # (B,)

    def save_pretrained(self, path: str | Path, **kwargs) -> None:
        self.hf_model.save_pretrained(path, **kwargs)


def _score_head(hf_model) -> nn.Module:
    for name in HEAD_NAMES:
        head = getattr(hf_model, name, None)
        if isinstance(head, nn.Linear):
            return head
    raise ValueError(f"{type(hf_model).__name__} has no linear score head (looked for score, classifier, head)")


def describe_checkpoint(path: str | Path) -> str:
    """What a checkpoint is, for error messages: the stage that saved it, else its architecture."""
    stage = training_stage_of(path)
    if stage:
        return f"a model saved by `rlhf {stage}`"
    try:
        architectures = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError):
        architectures = None
    return f"a {architectures[0]} checkpoint" if architectures else "a checkpoint of unknown kind"


def load_reward_stats(path: str | Path) -> dict[str, float] | None:
    """The reward's mean and std on its training responses, saved beside the weights."""
    file = Path(path) / REWARD_STATS_FILE
    if not file.is_file():
        return None
    stats = json.loads(file.read_text(encoding="utf-8"))
    return {"mean": float(stats["mean"]), "std": float(stats["std"])}
