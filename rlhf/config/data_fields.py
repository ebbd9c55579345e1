"""The data options the stages share: which record fields hold the prompt and the responses
(so GSM8K, Alpaca-style and other layouts load without conversion), and whether plain-string
prompts go through the chat template. Each stage's config declares the fields it reads with
these help texts and checks them with :func:`validate_field_names`."""

from __future__ import annotations

from rlhf.config.base import ConfigError
from rlhf.data.tokenize import PROMPT_TRUNCATION_MODES

PROMPT_FIELD_HELP = ("Record field holding the prompt (a string or a message list), e.g. question for GSM8K, "
                     "instruction for Alpaca-style files.")
COMPLETION_FIELD_HELP = "Record field holding the completion (a string or one assistant message), e.g. answer for GSM8K."
CHOSEN_FIELD_HELP = "Record field holding the preferred response (or, without a prompt field, the whole HH dialogue)."
REJECTED_FIELD_HELP = "Record field holding the dispreferred response."
APPLY_CHAT_TEMPLATE_HELP = ("Render plain-string prompts with the tokenizer's chat template (the built-in HH-style "
                            "template when it has none): a string as one user message, an HH-RLHF dialogue as its "
                            "turns. Message lists always go through the template; without this option strings are "
                            "used as written, and a model with a chat template gets a warning.")
PROMPT_TRUNCATION_HELP = ("What to do with a prompt longer than max_prompt_length: keep_head (cut from the middle, "
                          "keeping the template's head, i.e. the system header and the start of the user turn, and "
                          "the end the policy continues from), left (cut from the left; the header may go), or skip "
                          "(leave the prompt out). The number cut or skipped is reported.")

__all__ = ["PROMPT_FIELD_HELP", "COMPLETION_FIELD_HELP", "CHOSEN_FIELD_HELP", "REJECTED_FIELD_HELP",
           "APPLY_CHAT_TEMPLATE_HELP", "PROMPT_TRUNCATION_HELP", "PROMPT_TRUNCATION_MODES", "validate_field_names"]


def validate_field_names(config, names: tuple[str, ...]) -> None:
    """Each option in ``names`` names a field, and no two name the same one."""
    values = [getattr(config, name) for name in names]
    for name, value in zip(names, values):
        if not value.strip():
            raise ConfigError(f"{name} must name a field of the data records, got an empty name")
    if len(set(values)) != len(values):
        given = ", ".join(f"{name}={value}" for name, value in zip(names, values))
        raise ConfigError(f"{' and '.join(names)} must name different fields, got {given}")
