"""rlhf gsm8k-eval: the accuracy, its standard errors, the problem loader's errors, scoring on a
scripted generator, and greedy generation on the tiny model (deterministic, one answer each)."""

import json
import math
from pathlib import Path

import pytest

from rlhf.config.gsm8k_eval import GSM8KEvalConfig
from rlhf.data.errors import DataError
from rlhf.evaluation.gsm8k import (GreedyGenerator, accuracy_stderr, evaluate, load_problems, paired_difference,
                                   run)

GSM8K_TEST = Path(__file__).parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


PROBLEMS = [
    {"question": "Ann has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A pen costs $1,200. Two pens?", "answer": "2*1200=<<2*1200=2400>>2400\n#### 2,400"},
    {"question": "Half of 9?", "answer": "9/2=<<9/2=4.5>>4.5\n#### 4.5"},
    {"question": "10 minus 12?", "answer": "#### -2"},
]


def test_accuracy_stderr_by_hand():
    # 3 of 4 right: p = 0.75, se = sqrt(0.75 * 0.25 / 4) = sqrt(0.046875) = 0.216506
    p, se = accuracy_stderr([1.0, 0.0, 1.0, 1.0])
    assert p == 0.75 and se == pytest.approx(0.216506, abs=1e-6)
    assert accuracy_stderr([0.0] * 5) == (0.0, 0.0)  # all wrong: no spread
    with pytest.raises(ValueError, match="0 problems"):
        accuracy_stderr([])


def test_paired_difference_by_hand():
    # d = [1, 0, 0, 1]: mean 0.5; unbiased var = 4 * 0.25 / 3 = 1/3; se = sqrt(1/3 / 4) = sqrt(1/12) = 0.288675
    mean, se = paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    assert mean == 0.5 and se == pytest.approx(0.288675, abs=1e-6)
    # The same problems solved by both: a gain of 0 with error 0 (unpaired errors would say 0.25 each)
    assert paired_difference([1, 0, 1, 0], [1, 0, 1, 0]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same problems: 3 against 2"):
        paired_difference([1, 0, 1], [1, 0])


def test_evaluate_scores_final_answers_of_a_scripted_generator(tmp_path):
    problems = load_problems(write(tmp_path / "t.jsonl", PROBLEMS))
    assert [p["reference"] for p in problems] == ["7", "2400", "4.5", "-2"]
    scripted = {  # question -> response
        PROBLEMS[0]["question"]: "3 + 4 = 7 apples\n#### 7",  # right, GSM8K form
        PROBLEMS[1]["question"]: "Two pens cost $2,400.00.",  # right: "$2,400.00" -> 2400, no '####'
        PROBLEMS[2]["question"]: "#### 4.5 and then I said 5",  # right: the text after the last #### counts
        PROBLEMS[3]["question"]: "12 - 10 = 2\n#### 2",  # wrong sign
    }
    calls = []

    def generator(batch):
        calls.append(len(batch))
        return [scripted[p["question"]] for p in batch]

    summary, records = evaluate(generator, problems)
    assert calls == [4]
    assert [r["predicted"] for r in records] == ["7", "2400", "4.5", "2"]
    assert [r["correct"] for r in records] == [1.0, 1.0, 1.0, 0.0]
    assert summary["accuracy"] == 0.75 and summary["stderr"] == pytest.approx(0.216506, abs=1e-6)
    assert summary["format_frac"] == 0.5  # "#### 7" and "#### 2" end the text; "#### 4.5 and ..." does not
    assert summary["num_problems"] == 4
    with pytest.raises(ValueError, match="returned 3 responses for 4 problems"):
        evaluate(lambda batch: ["1"] * 3, problems)


@pytest.mark.skipif(not GSM8K_TEST.exists(), reason="needs ../shared/data/gsm8k")
def test_real_test_file_fixed_subset_and_reference_solutions_score_one():
    problems = load_problems(GSM8K_TEST, 20)
    assert len(problems) == 20
    assert problems[0]["question"].startswith("Janet’s ducks lay 16 eggs")  # the first problem, always
    assert problems[0]["reference"] == "18"
    summary, _ = evaluate(lambda batch: [p["answer"] for p in batch], problems)
    assert summary["accuracy"] == 1.0 and summary["format_frac"] == 1.0
    summary, _ = evaluate(lambda batch: ["I do not know."] * len(batch), problems)
    assert summary["accuracy"] == 0.0


def test_load_problems_errors_name_file_line_and_field(tmp_path):
    bad = write(tmp_path / "bad.jsonl", [PROBLEMS[0], {"question": "Q?", "answer": "no number here"}])
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2, field 'answer': has no final number"):
        load_problems(bad)
    assert len(load_problems(bad, 1)) == 1  # the bad record is past the subset
    assert [p["index"] for p in load_problems(write(tmp_path / "t.jsonl", PROBLEMS), 2, first_problem=1)] == [1, 2]
    missing = write(tmp_path / "missing.jsonl", [{"answer": "#### 3"}])
    with pytest.raises(DataError, match=r"missing\.jsonl, line 1, field 'question'"):
        load_problems(missing)
    with pytest.raises(DataError, match="has 4 problems, fewer than first_problem 0 \\+ num_problems 10"):
        load_problems(write(tmp_path / "t.jsonl", PROBLEMS), 10)


def test_greedy_generator_is_deterministic_and_run_writes_summary(tiny_model_dir, tmp_path):
    test_file = write(tmp_path / "t.jsonl", PROBLEMS)
    generator = GreedyGenerator(str(tiny_model_dir), max_new_tokens=6, batch_size=3, progress="")
    problems = load_problems(test_file)
    first, second = generator(problems), generator(list(reversed(problems)))
    assert len(first) == 4 and all(isinstance(t, str) for t in first)
    assert first == list(reversed(second))  # greedy: an answer depends on its question only, not the batch order
    out = tmp_path / "eval" / "tiny.json"
    summary = run(GSM8KEvalConfig(model_name_or_path=str(tiny_model_dir), test_file=str(test_file), num_problems=3,
                                  max_new_tokens=6, batch_size=2, output_file=str(out)))
    assert json.loads(out.read_text())["num_problems"] == 3 == summary["num_problems"]
    samples = [json.loads(line) for line in out.with_suffix(".samples.jsonl").read_text().splitlines()]
    assert [s["response"] for s in samples] == first[:3]
    assert math.isclose(summary["accuracy"], sum(s["correct"] for s in samples) / 3)


def test_config_errors():
    from rlhf.config.base import ConfigError

    with pytest.raises(ConfigError, match="needs --model_name_or_path"):
        GSM8KEvalConfig().validate()
    with pytest.raises(ConfigError, match="num_problems must be >= 0"):
        GSM8KEvalConfig(model_name_or_path="m", num_problems=-1).validate()
