"""Programmatic rewards shipped with the package: checks of correctness, no reward model.

Each is a reward function ``f(prompts, responses, ended, **fields) -> list[float]``
(rlhf.rewards.functions), named on the command line as ``rlhf.rewards.programmatic:NAME``:

- ``gsm8k_correctness``: 1.0 when the response's final answer equals the reference's (the
  record's ``answer`` field: GSM8K's worked solution ending ``#### 72``, or a bare number), else 0.0.
- ``gsm8k_format``: 1.0 when the response ends with a final-answer line ``#### <number>``, the
  form GSM8K's solutions (and so an SFT model trained on them) use, else 0.0.
- ``code_tests_passed``: the share of the record's tests (a list of ``assert`` lines, field
  ``tests`` or MBPP's ``test_list``) that the response's code passes, run in a sandboxed
  subprocess (rlhf.rewards.sandbox); why a response scored 0 is in ``last_results``.

The final answer is what follows the last ``####``, else the content of the last ``\\boxed{}``,
else the last number in the text, normalised: thousands separators, ``$`` and ``%`` dropped,
trailing zeros of a decimal dropped ("1,080" -> "1080", "$18.00" -> "18", "-0.50" -> "-0.5").
"""

from __future__ import annotations

import re
from typing import Sequence

from rlhf.rewards.sandbox import ExecutionResult, SandboxLimits, run_many

# A number with proper thousands separators (1,080) or none (1080), optional sign and decimals;
# "3, 4" is two numbers, not "34".
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
FINAL_LINE = re.compile(r"####[ \t]*\$?[ \t]*(" + NUMBER.pattern + r")[ \t]*[.%]?\s*$")


def normalize_number(text: str) -> str:
    """One spelling per value: "1,080" -> "1080", "+18.50" -> "18.5", "18.0" -> "18", "-0" -> "0"."""
    text = text.replace(",", "").lstrip("+")
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    value = whole + ("." + fraction if fraction else "")
    return value if value == "0" else sign + value


def extract_answer(text: str) -> str | None:
    """The final answer of a solution, normalised; None when it has no number at all."""
    if "####" in text:
        found = NUMBER.findall(text.rsplit("####", 1)[1])
        if found:
            return normalize_number(found[0])
    boxed = BOXED.findall(text)
    if boxed:
        found = NUMBER.findall(boxed[-1])
        if found:
            return normalize_number(found[-1])
    found = NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


def gsm8k_correctness(prompts, responses, ended, answer, **kwargs) -> list[float]:
    """1.0 per response whose final answer equals the reference's final answer, else 0.0.
    ``answer``: each record's reference (GSM8K's solution ending "#### 72", or "72")."""
    scores = []
    for response, reference in zip(responses, answer):
        expected = extract_answer(str(reference)) if reference is not None else None
        if expected is None:
            raise ValueError(f"the reference answer {str(reference)[:60]!r} has no number: each record's answer "
                             "field must end with '#### <number>' (GSM8K) or be a number")
        scores.append(float(extract_answer(response) == expected))
    return scores


def gsm8k_format(prompts, responses, ended, **kwargs) -> list[float]:
    """1.0 per response that ends with a final-answer line ``#### <number>`` (the GSM8K form),
    else 0.0: a dense signal that teaches the form before answers are right."""
    return [float(FINAL_LINE.search(response) is not None) for response in responses]


# ---------------------------------------------------------------------------------------------
# Code: the share of the prompt's tests the response's code passes.

CODE_BLOCK = re.compile(r"```(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
CODE_LIMITS = SandboxLimits()  # the defaults: 5 s wall, 5 s CPU, 512 MiB, 1 MB of output


def extract_code(response: str) -> str:
    """The response's code: its first ```python block (an unterminated one runs to the end),
    else the whole text."""
    block = CODE_BLOCK.search(response)
    if block:
        return block.group(1)
    opened = re.search(r"```(?:python|py|python3)?[ \t]*\n", response, re.IGNORECASE)
    return response[opened.end():] if opened else response


def _test_lists(tests, test_list, n: int) -> list[list[str]]:
    lists = tests if tests is not None else test_list
    if lists is None:
        raise ValueError("code_tests_passed needs each prompt record to have a 'tests' (or MBPP's 'test_list') "
                         "field: a list of assert statements, e.g. [\"assert add(1, 2) == 3\"]")
    out = []
    for record_tests in lists:
        if isinstance(record_tests, str):
            record_tests = [record_tests]
        if not isinstance(record_tests, Sequence) or not all(isinstance(t, str) for t in record_tests):
            raise ValueError(f"a record's tests must be a list of strings (assert statements), got "
                             f"{str(record_tests)[:60]!r}")
        out.append(list(record_tests))
    if len(out) != n:
        raise ValueError(f"{len(out)} test lists for {n} responses")
    return out


def code_tests_passed(prompts, responses, ended, tests=None, test_list=None, test_setup_code=None,
                      **kwargs) -> list[float]:
    """The share of each record's tests that its response's code passes (0.0 to 1.0), each
    response run in its own sandboxed subprocess, several at a time. ``test_setup_code`` (MBPP):
    run after the code, before the tests. The results, with why a response scored 0 (timeout,
    memory_limit, syntax_error, denied, ...), are kept in ``code_tests_passed.last_results``."""
    test_lists = _test_lists(tests, test_list, len(responses))
    setups = test_setup_code or [""] * len(responses)
    codes = [extract_code(r) for r in responses]
    programs = [(code, setup or "", record_tests) for code, setup, record_tests in zip(codes, setups, test_lists)]
    results = run_many(programs, CODE_LIMITS)
    code_tests_passed.last_results = results
    return [result.reward for result in results]


code_tests_passed.last_results: list[ExecutionResult] = []
