"""A programmatic reward for GSM8K: 1 when the response's last number equals the reference
answer, else 0. rlhf passes the prompt record's other fields as keyword arguments, so the
reference comes in as ``answer`` (GSM8K's field: worked solution ending "#### 72").

    rlhf ppo ... --prompts_file gsm8k/train.jsonl --prompt_field question \
        --reward_function docs/examples/gsm8k_reward.py:correct
"""

import re

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def final_number(text: str) -> str | None:
    """The last number in ``text`` without thousands separators ("1,250" -> "1250")."""
    found = NUMBER.findall(text.split("####")[-1] if "####" in text else text)
    return found[-1].replace(",", "").rstrip(".") if found else None


def correct(prompts, responses, ended, answer, **kwargs):
    """One score per response: 1.0 if its final number is the reference's, else 0.0."""
    return [float(final_number(r) is not None and final_number(r) == final_number(a))
            for r, a in zip(responses, answer)]
