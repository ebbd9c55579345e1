"""A programmatic reward for GSM8K: 1 when the response's final answer equals the reference
answer, else 0. It is now shipped with the package as ``rlhf.rewards.programmatic:gsm8k_correctness``
(with a format reward beside it, ``gsm8k_format``; see docs/rewards.md); this file keeps the
older spelling working. rlhf passes the prompt record's other fields as keyword arguments, so the
reference comes in as ``answer`` (GSM8K's field: worked solution ending "#### 72").

    rlhf ppo ... --prompts_file gsm8k/train.jsonl --prompt_field question \
        --reward_function rlhf.rewards.programmatic:gsm8k_correctness
"""

from rlhf.rewards.programmatic import extract_answer as final_number  # noqa: F401 (the old name)
from rlhf.rewards.programmatic import gsm8k_correctness as correct  # noqa: F401
