"""The shipped programmatic rewards (GSM8K answer and format, code run against tests) and what
happens when a reward function raises or returns NaN/inf: a clear error, or, with
--skip_bad_rewards, the sample skipped (no gradient) and counted, never averaged in."""

import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from rlhf.config.base import parse_config
from rlhf.config.ppo import PPOConfig
from rlhf.losses import ppo_policy_loss
from rlhf.rewards import programmatic
from rlhf.rewards.functions import RewardFunction, RewardFunctionError, check_reward_function, load_function
from rlhf.rewards.programmatic import (code_tests_passed, extract_answer, extract_code, gsm8k_correctness,
                                       gsm8k_format, normalize_number)
from rlhf.rewards.sandbox import SandboxLimits
from rlhf.rollout.generation import Rollout
from rlhf.trainers import ppo
from rlhf.trainers.online import Samples, drop_skipped_rewards

GSM8K = Path(__file__).parents[2] / "shared" / "data" / "gsm8k"


def gsm8k_records(name: str, n: int) -> list[dict]:
    with open(GSM8K / name, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


# --- GSM8K ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("1,080", "1080"), ("+18.50", "18.5"), ("18.0", "18"), ("-0.50", "-0.5"), ("007", "7"), ("-0", "0"),
    ("109,200,000", "109200000"), (".5", "0.5"),
])
def test_numbers_have_one_spelling(text, expected):
    assert normalize_number(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("#### 1,080", "1080"),
    ("#### $18.00.", "18"),
    ("so 3 + 4 = 7\n#### 72\nThen 5 more", "72"),  # what follows the last #### wins over the last number
    ("The answer is \\boxed{42} and not 7", "42"),  # else the last \boxed{}
    ("I have 3, 4 apples and the answer is 12.", "12"),  # else the last number; "3, 4" is two numbers
    ("I do not know.", None),
    ("#### unknown, but 5 earlier", "5"),  # a #### without a number: the last number
])
def test_the_final_answer_is_extracted(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_correctness_on_real_test_records():
    records = gsm8k_records("test.jsonl", 40)
    answers = [r["answer"] for r in records]
    final = [a.rsplit("####", 1)[1].strip().replace(",", "") for a in answers]
    assert gsm8k_correctness(None, answers, None, answers) == [1.0] * 40  # the reference solution itself
    plain = [f"Let me think. The answer is {n}." for n in final]  # no ####: the last number counts
    assert gsm8k_correctness(None, plain, None, answers) == [1.0] * 40
    wrong = [f"#### {int(n) + 1}" for n in final]
    assert gsm8k_correctness(None, wrong, None, answers) == [0.0] * 40
    assert gsm8k_correctness(None, ["#### 18", "#### 18"], None, answers[:2]) == [1.0, 0.0]  # 18 is record 0's


def test_gsm8k_answers_with_thousands_separators_match_either_spelling():
    records = [r for r in gsm8k_records("train.jsonl", 3000) if "," in r["answer"].rsplit("####", 1)[1]]
    assert len(records) >= 5
    answers = [r["answer"] for r in records]
    spelled_out = [a.rsplit("####", 1)[1].strip() for a in answers]  # e.g. "1,080"
    plain = [s.replace(",", "") for s in spelled_out]  # "1080"
    assert gsm8k_correctness(None, [f"The total is ${s}." for s in spelled_out], None, answers) == [1.0] * len(records)
    assert gsm8k_correctness(None, [f"#### {p}" for p in plain], None, answers) == [1.0] * len(records)


def test_gsm8k_format_rewards_a_final_answer_line():
    references = [r["answer"] for r in gsm8k_records("test.jsonl", 40)]
    assert gsm8k_format(None, references, None) == [1.0] * 40  # every GSM8K solution ends "#### N"
    assert gsm8k_format(None, ["#### 72", "so #### 1,080.\n", "The answer is 72", "#### 72 apples", "####"],
                        None) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_gsm8k_correctness_is_loaded_by_name_and_gets_the_answer_field():
    function = load_function("rlhf.rewards.programmatic:gsm8k_correctness")
    records = gsm8k_records("test.jsonl", 2)
    questions, fields = [r["question"] for r in records], [{"answer": r["answer"]} for r in records]
    check_reward_function(function, questions, fields)  # the start-up check: no error
    assert function(questions, ["#### 18", "#### 18"], [True, True], fields) == [1.0, 0.0]
    with pytest.raises(RewardFunctionError, match=r"gsm8k_correctness needs the field\(s\) answer, which the "
                                                  r"records of the prompts file do not have \(they have: question\)"):
        check_reward_function(function, questions, [{"question": q} for q in questions])
    with pytest.raises(RewardFunctionError, match=r"gsm8k_correctness raised ValueError: the reference answer "
                                                  r"'unknown' has no number.* on the prompt 'Q2'"):
        function(["Q1", "Q2"], ["#### 1", "#### 2"], [True, True], [{"answer": "#### 1"}, {"answer": "unknown"}])


# --- code, run against tests --------------------------------------------------------------------

@pytest.mark.parametrize("response, code", [
    ("Here:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1\n"),
    ("```py\nx = 1\n```", "x = 1\n"),
    ("```python\nx = 2\n", "x = 2\n"),  # unterminated block: to the end
    ("def f(): return 3", "def f(): return 3"),  # no block: the whole text
])
def test_the_code_is_taken_from_a_python_block_or_the_whole_text(response, code):
    assert extract_code(response) == code


def test_code_reward_is_the_share_of_tests_passed_and_hostile_code_scores_zero(monkeypatch):
    """Through the reward-function wrapper, as a trainer calls it: one hostile response per kind,
    the call returns (the trainer keeps running) and each zero has its reason."""
    # A wall clock well above the CPU limit: 8 children share 2 cores, the loop must hit its CPU limit first.
    monkeypatch.setattr(programmatic, "CODE_LIMITS", SandboxLimits(timeout_s=30, cpu_s=1, memory_mb=256,
                                                                   output_bytes=100_000, processes=4))
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]
    responses = ["```python\ndef add(a, b):\n    return a + b\n```",
                 "def add(a, b):\n    return 3",
                 "```python\nwhile True:\n    pass\n```",
                 "import os\nwhile True:\n    os.fork()",
                 "x = bytearray(4 * 1024 ** 3)",
                 "import socket\nsocket.create_connection(('example.com', 80))",
                 "open('/tmp/rlhf-escaped.txt', 'w').write('x')",
                 "Sorry, I cannot write code."]
    function = RewardFunction(code_tests_passed, "rlhf.rewards.programmatic:code_tests_passed")
    scores = function(["p"] * len(responses), responses, [True] * len(responses), [{"tests": tests}] * len(responses))
    assert scores == [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    reasons = [r.reason for r in code_tests_passed.last_results]
    assert reasons == ["ok", "tests_failed", "cpu_limit", "denied", "memory_limit", "denied", "denied",
                       "syntax_error"]
    assert not Path("/tmp/rlhf-escaped.txt").exists()


def test_code_reward_reads_mbpp_fields_and_says_when_tests_are_missing(monkeypatch):
    monkeypatch.setattr(programmatic, "CODE_LIMITS", SandboxLimits(timeout_s=5, cpu_s=2))
    mbpp = {"test_list": ["assert double(2) == 4"], "test_setup_code": "FACTOR = 2"}
    assert code_tests_passed(["p"], ["def double(x):\n    return FACTOR * x"], [True], **{
        k: [v] for k, v in mbpp.items()}) == [1.0]
    function = RewardFunction(code_tests_passed, "rlhf.rewards.programmatic:code_tests_passed")
    with pytest.raises(RewardFunctionError, match=r"code_tests_passed raised ValueError: code_tests_passed needs each "
                                                  r"prompt record to have a 'tests'"):
        function(["p"], ["x = 1"], [True], [{"question": "q"}])


# --- rewards that raise or return NaN/inf ------------------------------------------------------

def picky(prompts, responses, ended):
    """Raises on a response saying "boom", NaN on "nan", inf on "inf", else its length."""
    scores = []
    for response in responses:
        if response == "boom":
            raise ValueError("cannot score boom")
        scores.append({"nan": math.nan, "inf": math.inf}.get(response, float(len(response))))
    return scores


def test_a_raising_reward_names_the_function_and_the_prompt():
    function = RewardFunction(picky, "my_rewards:picky")
    with pytest.raises(RewardFunctionError, match=r"reward function my_rewards:picky raised ValueError: cannot score "
                                                  r"boom \(at test_rewards_programmatic.py:\d+\) on the prompt 'P2'"):
        function(["P1", "P2"], ["ok", "boom"], [True, True])
    with pytest.raises(RewardFunctionError, match=r"my_rewards:picky returned inf for the prompt 'P2': each score "
                                                  r"must be a finite number \(or set --skip_bad_rewards"):
        function(["P1", "P2"], ["ok", "inf"], [True, True])


def test_skipped_rewards_are_nan_counted_and_warned_once():
    function = RewardFunction(picky, "my_rewards:picky", skip_errors=True)
    with pytest.warns(UserWarning, match=r"my_rewards:picky raised ValueError: cannot score boom .* on the prompt "
                                         r"'P2': skipped by --skip_bad_rewards") as caught:
        scores = function(["P1", "P2", "P3"], ["ok", "boom", "nan"], [True] * 3)
        again = function(["P1", "P2"], ["inf", "abc"], [True] * 2)
    assert len(caught) == 1  # the first skip only
    assert scores[0] == 2.0 and math.isnan(scores[1]) and math.isnan(scores[2])
    assert math.isnan(again[0]) and again[1] == 3.0
    assert function.skipped == 3
    with pytest.raises(RewardFunctionError, match="returned 1 values for 2 responses"):  # a bug, never skipped
        RewardFunction(lambda p, r, e: [1.0], "m:short", skip_errors=True)(["a", "b"], ["x", "y"], [True, True])


def test_a_skipped_reward_gets_the_mean_score_and_leaves_the_loss_mask():
    scores, skipped = drop_skipped_rewards(torch.tensor([1.0, float("nan"), 3.0]))
    assert scores.tolist() == [1.0, 2.0, 3.0]  # the placeholder is the mean of the others: (1 + 3) / 2
    assert skipped.tolist() == [False, True, False]
    rollout = Rollout(query_responses=torch.zeros(3, 4, dtype=torch.long), attention_mask=torch.ones(3, 4),
                      response_mask=torch.tensor([[1, 1], [1, 1], [1, 0]]), ended=torch.ones(3, dtype=torch.bool),
                      prompt_length=2)
    samples = Samples(rollout, [], [], scores, None, reward_skipped=skipped)
    assert samples.loss_mask.tolist() == [[1, 1], [0, 0], [1, 0]]
    assert rollout.response_mask.tolist() == [[1, 1], [1, 1], [1, 0]]  # the rollout itself is unchanged
    same, none = drop_skipped_rewards(torch.tensor([1.0, 2.0, 3.0]))
    assert same.tolist() == [1.0, 2.0, 3.0] and not none.any()
    assert Samples(rollout, [], [], same, None).loss_mask is rollout.response_mask  # nothing skipped: as before


def test_a_skipped_sample_gets_no_gradient():
    """The policy loss with row 1 masked out: d loss / d logprobs of row 1 is exactly 0, and the
    loss equals the loss of rows 0 and 2 alone."""
    logprobs = torch.tensor([[-1.0, -2.0], [-0.5, -0.5], [-1.5, -1.0]], requires_grad=True)
    old, advantages = logprobs.detach() - 0.1, torch.tensor([[1.0, -1.0], [5.0, 5.0], [0.5, 2.0]])
    mask = torch.tensor([[1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    loss, _ = ppo_policy_loss(logprobs, old, advantages, mask, 0.2)
    loss.backward()
    assert logprobs.grad[1].tolist() == [0.0, 0.0] and logprobs.grad[0].abs().sum() > 0
    keep = torch.tensor([0, 2])
    alone, _ = ppo_policy_loss(logprobs.detach()[keep], old[keep], advantages[keep], mask[keep], 0.2)
    assert torch.allclose(loss.detach(), alone)


def test_ppo_runs_with_skip_bad_rewards_and_logs_the_count(tiny_model_dir, toy_data, tmp_path):
    """A reward that is NaN for every other response: without the option the run stops naming it;
    with it the run finishes and metrics.jsonl counts the skipped samples."""
    rewards = tmp_path / "half_nan.py"
    rewards.write_text("import math\n_calls = [0]\n\ndef half_nan(prompts, responses, ended):\n"
                       "    _calls[0] += 1\n"
                       "    if _calls[0] == 1:  # the start-up check\n        return [1.0] * len(responses)\n"
                       "    return [math.nan if i % 2 else 1.0 for i in range(len(responses))]\n")
    args = ["--model_name_or_path", str(tiny_model_dir), "--prompts_file", str(toy_data["prompts"]),
            "--max_steps", "2", "--rollout_batch_size", "4", "--per_device_train_batch_size", "4", "--ppo_epochs", "1",
            "--max_new_tokens", "4", "--disable_tqdm", "true", "--report_to", "none",
            "--reward_function", f"{rewards}:half_nan"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RewardFunctionError, match=r"half_nan returned nan for the prompt"):
            ppo.run(parse_config(PPOConfig, [*args, "--output_dir", str(tmp_path / "stop")]))
        ppo.run(parse_config(PPOConfig, [*args, "--output_dir", str(tmp_path / "skip"), "--skip_bad_rewards", "true"]))
    lines = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "objective/skipped_rewards" in line]
    assert [line["objective/skipped_rewards"] for line in steps] == [2.0, 2.0]  # 2 of 4 responses each step
    assert all(math.isfinite(line["loss/policy"]) and math.isfinite(line["objective/scores"]) for line in steps)
