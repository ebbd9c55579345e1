"""``rlhf gsm8k-eval``: GSM8K test accuracy of a policy, greedy, on a fixed subset, with a
standard error.

Greedy decoding makes the number a property of the model alone (no sampling noise), so the
standard error is over problems only: the binomial ``sqrt(p (1 - p) / n)``. Two models evaluated
on the same problems are compared by the *paired* difference (:func:`paired_difference`): the
problems both solve or both miss cancel, so it is tighter than the two errors combined.
A response is right when its final answer (``rlhf.rewards.programmatic.extract_answer``: after
the last ``####``, else the last ``\\boxed{}``, else the last number) equals the reference's, the
same check as the ``gsm8k_correctness`` reward the RL stages train on.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from rlhf.atomic_io import write_json_atomic, write_jsonl
from rlhf.config.gsm8k_eval import GSM8KEvalConfig
from rlhf.data import collate_prompts
from rlhf.data.errors import DataError
from rlhf.data.records import read_records
from rlhf.data.templates import render_prompt
from rlhf.progress import phase_bar
from rlhf.rewards.programmatic import extract_answer, gsm8k_format
from rlhf.rollout.generation import SamplingParams, decode_responses, generate

CONFIG_CLASS = GSM8KEvalConfig

# problems (each {"question", "answer"}) -> one response text per problem
Generator = Callable[[Sequence[dict]], Sequence[str]]


def accuracy_stderr(correct: Sequence[float]) -> tuple[float, float]:
    """Accuracy p of 0/1 outcomes and its binomial standard error sqrt(p (1 - p) / n)."""
    n = len(correct)
    if n == 0:
        raise ValueError("no outcomes: the accuracy of 0 problems is undefined")
    p = sum(correct) / n
    return p, math.sqrt(p * (1.0 - p) / n)


def paired_difference(after: Sequence[float], before: Sequence[float]) -> tuple[float, float]:
    """Mean of d_i = after_i - before_i over the same problems and its standard error
    std(d) / sqrt(n) (unbiased std): the error of a gain, problem by problem."""
    if len(after) != len(before):
        raise ValueError(f"paired outcomes need the same problems: {len(after)} against {len(before)}")
    n = len(after)
    if n < 2:
        raise ValueError("a paired standard error needs at least 2 problems")
    d = [a - b for a, b in zip(after, before)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return mean, math.sqrt(var / n)


def load_problems(path: str | Path, num_problems: int = 0, first_problem: int = 0) -> list[dict]:
    """``num_problems`` records of a GSM8K file (0: all) from record ``first_problem`` on, each
    ``{"index", "question", "answer", "reference"}`` with ``reference`` the normalised final answer. A record without a
    question or an answer with a number is a DataError naming the file, line and field."""
    problems = []
    for index, (record, source) in enumerate(read_records(path)):
        if index < first_problem:
            continue
        if num_problems and len(problems) == num_problems:
            break
        for name in ("question", "answer"):
            if not isinstance(record.get(name), str) or not record[name].strip():
                raise DataError(source.path, source.line, name, "missing or not a non-empty string")
        reference = extract_answer(record["answer"])
        if reference is None:
            raise DataError(source.path, source.line, "answer", "has no final number ('#### <number>')")
        problems.append({"index": index, "question": record["question"], "answer": record["answer"],
                         "reference": reference})
    if num_problems and len(problems) < num_problems:
        raise DataError(str(path), None, None, f"has {first_problem + len(problems)} problems, fewer than "
                        f"first_problem {first_problem} + num_problems {num_problems}")
    return problems


def evaluate(generator: Generator, problems: Sequence[dict]) -> tuple[dict, list[dict]]:
    """Answer every problem with ``generator`` and score it: the summary (accuracy, its standard
    error, the share of answers in GSM8K's ``#### n`` form, n) and one record per problem."""
    responses = list(generator(problems))
    if len(responses) != len(problems):
        raise ValueError(f"the generator returned {len(responses)} responses for {len(problems)} problems")
    records = []
    for problem, response in zip(problems, responses):
        predicted = extract_answer(response)
        records.append({"index": problem.get("index"), "question": problem["question"], "reference": problem["reference"], "response": response,
                        "predicted": predicted, "correct": float(predicted == problem["reference"])})
    formatted = gsm8k_format(None, responses, None)
    accuracy, stderr = accuracy_stderr([r["correct"] for r in records])
    summary = {"accuracy": accuracy, "stderr": stderr, "format_frac": sum(formatted) / len(formatted),
               "num_problems": len(records)}
    return summary, records


class GreedyGenerator:
    """Greedy answers of a local causal LM: each question a user turn (with the chat template),
    left-padded batches, at most ``max_new_tokens`` new tokens."""

    def __init__(self, model_dir: str, max_new_tokens: int, batch_size: int, apply_chat_template: bool = True,
                 progress: str = "gsm8k"):
        from rlhf.models.loading import load_causal_lm, load_tokenizer

        self.tokenizer = load_tokenizer(model_dir, padding_side="left")
        self.model = load_causal_lm(model_dir, self.tokenizer).eval()
        self.sampling = SamplingParams(max_new_tokens=max_new_tokens, do_sample=False)
        self.batch_size, self.apply_chat_template, self.progress = batch_size, apply_chat_template, progress

    def prompt_ids(self, question: str) -> list[int]:
        text = render_prompt([{"role": "user", "content": question}], self.tokenizer) \
            if self.apply_chat_template else question
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def __call__(self, problems: Sequence[dict]) -> list[str]:
        device = next(self.model.parameters()).device
        # Longest first: a batch of similar lengths pads less, and a slow batch shows early.
        order = sorted(range(len(problems)), key=lambda i: -len(problems[i]["question"]))
        out: dict[int, str] = {}
        for start in phase_bar(range(0, len(order), self.batch_size), self.progress, f"{len(problems)} problems"):
            chunk = order[start:start + self.batch_size]
            batch = collate_prompts([{"input_ids": self.prompt_ids(problems[i]["question"])} for i in chunk],
                                    self.tokenizer.pad_token_id)
            rollout = generate(self.model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                               self.sampling, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
            out.update(zip(chunk, decode_responses(self.tokenizer, rollout)))
        return [out[i] for i in range(len(problems))]


def run(config: GSM8KEvalConfig) -> dict:
    if not Path(config.test_file).exists():
        raise FileNotFoundError(f"test_file {config.test_file} does not exist")
    problems = load_problems(config.test_file, config.num_problems, config.first_problem)
    start = time.time()
    generator = GreedyGenerator(config.model_name_or_path, config.max_new_tokens, config.batch_size,
                                config.apply_chat_template)
    summary, records = evaluate(generator, problems)
    summary.update({"model": config.model_name_or_path, "test_file": config.test_file,
                    "max_new_tokens": config.max_new_tokens, "wall_time_s": round(time.time() - start, 1)})
    if config.output_file:
        out = Path(config.output_file)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(out.with_suffix(".samples.jsonl"), records)
        write_json_atomic(out, summary)
    print(f"gsm8k {config.model_name_or_path}: accuracy {summary['accuracy']:.3f} ± {summary['stderr']:.3f} "
          f"on problems {config.first_problem}..{config.first_problem + len(problems) - 1} of {config.test_file} (greedy, {config.max_new_tokens} new "
          f"tokens; '#### n' form {summary['format_frac']:.2f}; {summary['wall_time_s']:.0f} s)")
    return summary
