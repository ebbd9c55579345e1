"""Turn conversations into prompt text, and split Anthropic HH-RLHF dialogues.

A conversation is rendered with the tokenizer's own chat template when it has one (so a chat
model sees the format it was trained on), else with the DEFAULT template below, which is the
plain-text format of Anthropic's HH-RLHF data (Bai et al. 2022, arXiv:2204.05862), so that
conversational files and HH files produce the same text::

    system     ->  "{content}"              (only as the first message)
    user       ->  "\\n\\nHuman: {content}"
    assistant  ->  "\\n\\nAssistant: {content}"
    generation prompt -> "\\n\\nAssistant:"

With the default template a response is written " " + content, so that prompt and response
join as "Assistant: answer" exactly as in HH-RLHF, where every response starts with a space.
"""

from __future__ import annotations

import os
import re
from typing import Any

from rlhf.data.errors import DataError
from rlhf.data.records import Source

ROLES = ("system", "user", "assistant")
# The one definition of the HH-RLHF turn markers: a user turn is f"{HUMAN} {content}", and a prompt
# ends with ASSISTANT (one user message renders as f"{HUMAN} {text}{ASSISTANT}").
HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"

# The format a record's text is in, remembered on every normalized record (``record.format``) so a
# stage can say what it trained on and warn when a chat model is trained on text without its template.
TEXT = "text"                          # a plain string, used as written
CHAT_TEMPLATE = "chat_template"        # rendered with the tokenizer's own chat template
DEFAULT_TEMPLATE = "default_template"  # rendered with the built-in HH-style template (no tokenizer template)
HH = "hh"                              # HH-RLHF dialogue text ("\n\nHuman: ...\n\nAssistant:") as written
FORMAT_NAMES = {TEXT: "plain text", CHAT_TEMPLATE: "chat template", DEFAULT_TEMPLATE: "default template",
                HH: "HH-RLHF dialogue text"}
_HH_MARKERS = re.compile(r"(\n\nHuman:|\n\nAssistant:)")
_SENTINEL = "\x00rlhf-sentinel\x00"


def uses_tokenizer_template(tokenizer) -> bool:
    """True when ``tokenizer`` brings its own chat template, which then takes precedence."""
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def validate_messages(messages: Any, source: Source, field: str) -> list[dict[str, str]]:
    """Check a message list (``[{"role", "content"}, ...]``) and return it as plain dicts.

    Errors name the field and the message index, e.g. ``field 'messages': message 2 has role 'bot'``.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(source.path, source.line, field, "expected a non-empty list of messages")
    checked = []
    for i, message in enumerate(messages):
        where = f"message {i}"
        if not isinstance(message, dict):
            raise DataError(source.path, source.line, field, f"{where} is not an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(source.path, source.line, field,
                            f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise DataError(source.path, source.line, field,
                            f"{where} content must be a string, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise DataError(source.path, source.line, field, f"{where}: a system message may only come first")
        checked.append({"role": role, "content": content})
    return checked


def render_prompt(messages: list[dict[str, str]], tokenizer=None) -> str:
    """Render ``messages`` as a prompt ending with the generation prompt (the assistant's cue)."""
    if uses_tokenizer_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return render_default(messages) + ASSISTANT


def rendered_format(tokenizer) -> str:
    """The format of text that :func:`render_prompt` produces with ``tokenizer``."""
    return CHAT_TEMPLATE if uses_tokenizer_template(tokenizer) else DEFAULT_TEMPLATE


def text_format(text: str) -> str:
    """HH for a plain string that is an HH-RLHF dialogue prompt (Human and Assistant turns ending
    with the Assistant cue), else TEXT."""
    return HH if hh_to_messages(text) is not None else TEXT


def hh_to_messages(prompt: str) -> list[dict[str, str]] | None:
    """The messages of an HH-RLHF dialogue prompt (``"\\n\\nHuman: a\\n\\nAssistant: b ...\\n\\nAssistant:"``),
    or None when ``prompt`` is not one. Text before the first turn becomes a system message; each
    turn's leading space (the HH convention) is dropped; the final empty Assistant cue is the
    generation prompt, not a message."""
    parts = _HH_MARKERS.split(prompt)
    if len(parts) < 5 or parts[-2] != ASSISTANT or parts[-1].strip() or parts[1] != HUMAN:
        return None
    messages = [{"role": "system", "content": parts[0]}] if parts[0].strip() else []
    for marker, content in zip(parts[1:-2:2], parts[2:-2:2]):
        role = "user" if marker == HUMAN else "assistant"
        content = content[1:] if content.startswith(" ") else content
        if messages and messages[-1]["role"] == role:  # a turn whose text holds the other's marker
            messages[-1]["content"] += marker + " " + content
        else:
            messages.append({"role": role, "content": content})
    return messages


def template_head(tokenizer=None) -> str:
    """The text a rendered one-message prompt has before the message's content: the chat
    template's system header and the start of the user turn (e.g. "<|im_start|>user\\n"), or
    "\\n\\nHuman: " for the default template. Found by rendering a sentinel content, so it works
    for any template, including one that inserts a default system message."""
    rendered = render_prompt([{"role": "user", "content": _SENTINEL}], tokenizer)
    head, found, _ = rendered.partition(_SENTINEL)
    return head if found else ""


def render_default(messages: list[dict[str, str]]) -> str:
    """The DEFAULT (HH-RLHF style) template, without the generation prompt."""
    parts = []
    for message in messages:
        if message["role"] == "system":
            parts.append(message["content"])
        elif message["role"] == "user":
            parts.append(f"{HUMAN} {message['content']}")
        else:
            parts.append(f"{ASSISTANT} {message['content']}")
    return "".join(parts)


def response_text(content: str, tokenizer=None) -> str:
    """The text of an assistant reply that follows a rendered prompt.

    The default template's generation prompt ends in "Assistant:", so the reply gets a leading
    space; a tokenizer's template ends its cue itself (e.g. "<|im_start|>assistant\\n"), so the
    content is used as is and the end-of-text token is appended at tokenization.
    """
    return content if uses_tokenizer_template(tokenizer) else " " + content


def split_hh_dialogue(chosen: str, rejected: str, source: Source,
                      fields: tuple[str, str] = ("chosen", "rejected")) -> tuple[str, str, str]:
    """Split two HH-RLHF dialogues into ``(prompt, chosen_response, rejected_response)``.

    The split is at the last "\\n\\nAssistant:" inside the longest common prefix: the prompt
    ends with "\\n\\nAssistant:" and the responses are the final turns (" Sure..."). Splitting
    at the common prefix rather than at each string's last "Assistant:" matters because a few
    HH responses contain "Assistant:" themselves (5 of 2,312 in harmless-base test).
    ``fields`` are the record's names for chosen and rejected, for the error message.
    """
    common = os.path.commonprefix([chosen, rejected])
    cut = common.rfind(ASSISTANT)
    if cut < 0:
        raise DataError(source.path, source.line, fields[0],
                        f'{fields[0]} and {fields[1]} share no prompt ending in "\\n\\nAssistant:"; expected '
                        'HH-RLHF dialogues ("\\n\\nHuman: ...\\n\\nAssistant: ...") or give a prompt field')
    end = cut + len(ASSISTANT)
    return chosen[:end], chosen[end:], rejected[end:]


def common_message_prefix(chosen: list[dict], rejected: list[dict], source: Source,
                          fields: tuple[str, str] = ("chosen", "rejected")) -> tuple[list[dict], dict, dict]:
    """Split two conversations into (shared messages, chosen final message, rejected final message).

    Both must end with one assistant message each after the shared part; anything else is
    ambiguous about what was compared. ``fields`` name chosen and rejected in errors.
    """
    chosen_field, rejected_field = fields
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    for field, messages in ((chosen_field, chosen), (rejected_field, rejected)):
        rest = messages[n:]
        if len(rest) != 1 or rest[0]["role"] != "assistant":
            if chosen == rejected:
                raise DataError(source.path, source.line, rejected_field,
                                f"{chosen_field} and {rejected_field} are identical")
            raise DataError(source.path, source.line, field,
                            f"{chosen_field} and {rejected_field} must differ only in a final assistant message "
                            f"(after {n} shared message(s), {field} has {len(rest)} more"
                            + (f", the last from {rest[-1]['role']!r})" if rest else ")"))
    if n == 0:
        raise DataError(source.path, source.line, chosen_field,
                        f"{chosen_field} and {rejected_field} share no prompt messages")
    return chosen[:n], chosen[n], rejected[n]
