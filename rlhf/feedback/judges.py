"""AI judges: a model picks the better of two responses under a principle of a constitution.

One interface for every judge: ``judge(queries)`` returns, for each ``Query`` (a principle, a
prompt and two responses in the order shown), the probability that the response shown FIRST is
the better one, or None when the judge's answer could not be read. Around it:

- ``judge_pairs`` asks every pair in both orders and combines them (``combine_orders``): the two
  probabilities are averaged (Lee et al. 2023, RLAIF, arXiv:2309.00267, sec. 2.1), and a pair
  whose verdict flips with the order is position-biased and gives no label. A judge that always
  picks the first slot flips on every pair: fully biased, no labels.
- ``copeland_ranking`` ranks K responses by their pairwise wins (Copeland's method), so a judge
  that only compares two is a ``Labeler`` (``JudgeLabeler``) that ranks K, like the simulated
  people, and every consumer of rankings takes AI labels unchanged.
- ``LocalJudge``: any causal LM in a local folder, prompted through its chat template (or the
  default template); its preference is read from the next-token log-probabilities of the two
  answer labels ("A", "B"), normalised over the two. ``rlhf.feedback.judge_http.HTTPJudge`` asks
  an OpenAI-compatible endpoint; ``JudgeCache`` makes a re-run or a resumed run repay nothing.
- Chain-of-thought (off by default; Lee et al. sec. 2.1.1): the judge first writes a short
  reasoning, and its verdict is read after "Answer:" appended to that reasoning.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

import torch

from rlhf.data.templates import hh_to_messages, render_prompt, response_text
from rlhf.feedback.constitution import Constitution, Principle

LABELS = ("A", "B")
COT_INSTRUCTION = ('First explain in a few sentences which response is better and why. '
                   'Then end with a final line "Answer: A" or "Answer: B".')
ANSWER_CUE = "\nAnswer:"  # appended to a local judge's reasoning; the label is read right after it
_OWN_ANSWER = re.compile(r"(?:final\s+)?answer\s*:", re.I)


@dataclass(frozen=True)
class Query:
    """Which of two responses to ``prompt``, shown in this order, is better under ``principle``?"""

    principle: Principle
    prompt: str
    first: str
    second: str


class Judge(Protocol):
    """Anything that answers queries; ``name`` is recorded with its labels (``ai:<name>``)."""

    name: str

    def judge(self, queries: Sequence[Query]) -> list[float | None]:
        """P(the response shown first is better) per query; None where the answer was unreadable."""
        ...


# ---------------------------------------------------------------------------------------------
# The arithmetic of a verdict: two orders, position bias, Copeland ranking, agreement.


@dataclass(frozen=True)
class PairVerdict:
    """Both orders of one pair (a, b). ``p_a``: P(a better) averaged over the two orders (None if
    either answer was unreadable); ``label``: 0 for a, 1 for b, None when the orders disagree
    (position bias), tie, or an answer was unreadable."""

    p_a: float | None
    label: int | None
    flipped: bool  # both answers readable and the verdict changed with the order
    unreadable: bool


def combine_orders(p_first_ab: float | None, p_first_ba: float | None, keep_flipped: bool = False) -> PairVerdict:
    """Combine a pair asked as (a, b) and as (b, a).

    ``p_first_ab`` = P(slot 1 better) when a is in slot 1, so P(a) = p_first_ab; ``p_first_ba`` =
    P(slot 1 better) when b is in slot 1, so P(a) = 1 - p_first_ba. p_a is their mean. The label
    stands only if both orders pick the same response; a judge that prefers slot 1 in both
    orders picks a, then b: flipped, no label. With ``keep_flipped`` a flipped pair is labelled
    by the side of 0.5 its mean p_a falls on (Lee et al.'s soft averaging; a judge that always
    answers slot 1 with the same probability still gets p_a = 0.5 exactly, no label)."""
    if p_first_ab is None or p_first_ba is None:
        return PairVerdict(None, None, False, True)
    p_a_1, p_a_2 = p_first_ab, 1.0 - p_first_ba
    p_a = 0.5 * (p_a_1 + p_a_2)
    if p_a_1 == 0.5 or p_a_2 == 0.5:  # a tie in either order: no verdict to keep or to flip
        return PairVerdict(p_a, None, False, False)
    if (p_a_1 > 0.5) != (p_a_2 > 0.5):
        label = (0 if p_a > 0.5 else 1) if keep_flipped and p_a != 0.5 else None
        return PairVerdict(p_a, label, True, False)
    return PairVerdict(p_a, 0 if p_a_1 > 0.5 else 1, False, False)


def copeland_ranking(k: int, verdicts: dict[tuple[int, int], PairVerdict]) -> list[int]:
    """Indices 0..k-1 best first by Copeland's method: a labelled pair gives its winner 1 point,
    a pair without a label 0.5 to each. Ties are broken by the summed P(win) (a Borda count over
    probabilities; an unreadable pair counts 0.5 each), then by index. ``verdicts`` maps (i, j)
    with i < j to the verdict of i (as a) against j (as b)."""
    wins = [0.0] * k
    mass = [0.0] * k
    for (i, j), verdict in verdicts.items():
        if verdict.label is None:
            wins[i] += 0.5
            wins[j] += 0.5
        else:
            wins[i if verdict.label == 0 else j] += 1.0
        p_i = 0.5 if verdict.p_a is None else verdict.p_a
        mass[i] += p_i
        mass[j] += 1.0 - p_i
    return sorted(range(k), key=lambda i: (-wins[i], -mass[i], i))


def proportion_stderr(successes: int, n: int) -> tuple[float, float]:
    """(p, its binomial standard error sqrt(p(1-p)/n)); (nan, nan) when n is 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    return p, math.sqrt(p * (1.0 - p) / n)


@dataclass
class JudgeStats:
    """Counts over all the pairs a judge was asked, for its report."""

    pairs: int = 0
    labelled: int = 0
    flipped: int = 0
    unreadable: int = 0
    first_slot_answers: int = 0  # single-order answers that picked slot 1
    answers: int = 0  # readable single-order answers
    dropped_records: int = 0  # rankings without a single labelled pair

    def add(self, verdict: PairVerdict, p_first_ab: float | None, p_first_ba: float | None) -> None:
        self.pairs += 1
        self.labelled += verdict.label is not None
        self.flipped += verdict.flipped
        self.unreadable += verdict.unreadable
        for p in (p_first_ab, p_first_ba):
            if p is not None:
                self.answers += 1
                self.first_slot_answers += p > 0.5

    def summary(self) -> dict[str, float]:
        """Position bias = flipped / pairs answered in both orders (Lee et al.'s measure)."""
        both = self.pairs - self.unreadable
        bias, bias_se = proportion_stderr(self.flipped, both)
        first, _ = proportion_stderr(self.first_slot_answers, self.answers)
        return {"pairs": self.pairs, "labelled": self.labelled, "unreadable": self.unreadable,
                "position_bias": bias, "position_bias_stderr": bias_se, "first_slot_rate": first,
                "dropped_records": self.dropped_records}


# ---------------------------------------------------------------------------------------------
# Asking a judge: both orders of every pair, in one batch.


def pair_queries(principle: Principle, prompt: str, a: str, b: str) -> tuple[Query, Query]:
    """The pair (a, b) asked in both orders."""
    return Query(principle, prompt, a, b), Query(principle, prompt, b, a)


def judge_pairs(judge: Judge, pairs: Sequence[tuple[Principle, str, str, str]],
                stats: JudgeStats | None = None, keep_flipped: bool = False) -> list[PairVerdict]:
    """Verdicts for (principle, prompt, a, b) pairs, each asked in both orders in one call."""
    queries = [q for principle, prompt, a, b in pairs for q in pair_queries(principle, prompt, a, b)]
    answers = judge.judge(queries) if queries else []
    verdicts = []
    for n in range(len(pairs)):
        p_ab, p_ba = answers[2 * n], answers[2 * n + 1]
        verdict = combine_orders(p_ab, p_ba, keep_flipped)
        if stats is not None:
            stats.add(verdict, p_ab, p_ba)
        verdicts.append(verdict)
    return verdicts


def rank_with_judge(judge: Judge, constitution: Constitution, items: Sequence[tuple[str, Sequence[str]]],
                    rngs: Sequence[random.Random], stats: JudgeStats | None = None,
                    keep_flipped: bool = False) -> list[list[int] | None]:
    """A ranking (best first) of each (prompt, responses) item from all its pairs, or None when
    no pair got a label (the judge contributes nothing there). One principle is drawn per
    comparison from the item's own ``rng``, so a re-run asks the same questions."""
    pairs, owners = [], []
    for n, ((prompt, responses), rng) in enumerate(zip(items, rngs)):
        for i in range(len(responses)):
            for j in range(i + 1, len(responses)):
                pairs.append((constitution.draw(rng), prompt, responses[i], responses[j]))
                owners.append((n, i, j))
    verdicts = judge_pairs(judge, pairs, stats, keep_flipped)
    per_item: list[dict[tuple[int, int], PairVerdict]] = [{} for _ in items]
    for (n, i, j), verdict in zip(owners, verdicts):
        per_item[n][(i, j)] = verdict
    rankings = []
    for (_, responses), item_verdicts in zip(items, per_item):
        if not any(v.label is not None for v in item_verdicts.values()):
            rankings.append(None)
            if stats is not None:
                stats.dropped_records += 1
        else:
            rankings.append(copeland_ranking(len(responses), item_verdicts))
    return rankings


def judge_rankings(judge: Judge, constitution: Constitution, records: Sequence[dict], seed: int,
                   stats: JudgeStats | None = None, keep_flipped: bool = False, first_index: int = 0) -> list[dict]:
    """Rankings-file records ``{"prompt", "responses", "ranking", "labeler": "ai:<judge>"}`` for
    ``{"prompt", "responses"}`` records, all pairs asked in one batch. Record n draws its
    principles from ``Random(f"ai-label-{seed}-{first_index + n}")``: a re-run (or a resumed one, from a
    later ``first_index``) asks the same questions, so a cache answers them. Records where no
    pair got a label are left out (``stats.dropped_records``)."""
    rngs = [random.Random(f"ai-label-{seed}-{first_index + n}") for n in range(len(records))]
    items = [(r["prompt"], list(r["responses"])) for r in records]
    rankings = rank_with_judge(judge, constitution, items, rngs, stats, keep_flipped)
    return [{"prompt": r["prompt"], "responses": list(r["responses"]), "ranking": ranking,
             "labeler": f"ai:{judge.name}"} for r, ranking in zip(records, rankings) if ranking is not None]


@dataclass
class JudgeLabeler:
    """A judge as a ``rlhf.feedback.Labeler``: ranks K responses by pairwise comparisons under
    principles drawn from ``constitution`` (with the ``rng`` the caller passes). Where no pair
    gets a label (every one position-biased or unreadable), the ranking falls back to the order
    given, and ``stats.dropped_records`` counts it."""

    judge: Judge
    constitution: Constitution
    stats: JudgeStats = field(default_factory=JudgeStats)
    keep_flipped: bool = False

    @property
    def name(self) -> str:
        return f"ai:{self.judge.name}"

    def rank(self, prompt: str, responses: Sequence[str], ended: Sequence[bool], rng: random.Random) -> list[int]:
        ranking = rank_with_judge(self.judge, self.constitution, [(prompt, list(responses))], [rng], self.stats,
                                  self.keep_flipped)[0]
        return list(range(len(responses))) if ranking is None else ranking


# ---------------------------------------------------------------------------------------------
# The text a judge reads.


def conversation_text(prompt: str) -> str:
    """The prompt as the judge reads it: an HH-style dialogue as "User:"/"Assistant:" lines,
    anything else as written."""
    messages = hh_to_messages(prompt)
    if messages is None:
        return prompt.strip()
    if len(messages) == 1:
        return messages[0]["content"].strip()
    return "\n".join(f"{'User' if m['role'] == 'user' else 'Assistant'}: {m['content'].strip()}" for m in messages)


def comparison_text(query: Query, chain_of_thought: bool = False) -> str:
    """The judge's question (one user message): the principle's comparison question, the
    request, the two responses labelled A and B, and the answer format (a single letter, or,
    with ``chain_of_thought``, reasons first and a final line "Answer: A" or "Answer: B")."""
    return (f"{query.principle.comparison_question}\n\n"
            f"Request:\n{conversation_text(query.prompt)}\n\n"
            f"Response A:\n{query.first.strip()}\n\n"
            f"Response B:\n{query.second.strip()}\n\n"
            + (COT_INSTRUCTION if chain_of_thought else "Answer with a single letter, A or B."))


def reasoning_before_answer(text: str) -> str:
    """A judge's generated reasoning, cut before the first "Answer:" it wrote itself: the
    verdict is read at the cue the judge appends (``ANSWER_CUE``), one fixed place, not wherever
    (or whether) the model wrote its own."""
    found = _OWN_ANSWER.search(text)
    return (text[:found.start()] if found else text).strip()


# ---------------------------------------------------------------------------------------------
# A local judge: a causal LM read at the answer's first token.


def label_token_ids(tokenizer, rendered: str, labels: Sequence[str] = LABELS,
                    written: Sequence[str] | None = None) -> tuple[list[int], list[int]]:
    """(shared, ids): how the answer labels continue ``rendered`` (a prompt ending in the
    assistant's cue). Each label is written as a reply would be (``response_text``: " A" after
    the default template's "Assistant:", "A" after a chat template's cue), or as ``written``
    gives it (" A" after a reasoning's "Answer:"), and tokenised together
    with the prompt, so a merge across the boundary is seen. ``shared`` are the tokens every
    label starts with (a byte-level BPE writes " A" as a space token, then "A"): the judge
    appends them to the prompt and reads the first token where the labels differ, ``ids``."""
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    continuations = []
    for label, text in zip(labels, written or [response_text(label, tokenizer) for label in labels]):
        joined = tokenizer(rendered + text, add_special_tokens=False)["input_ids"]
        if joined[:len(prompt_ids)] != prompt_ids or len(joined) == len(prompt_ids):
            raise ValueError(f"answer label {label!r} merges with the end of the prompt for this tokenizer")
        continuations.append(joined[len(prompt_ids):])
    shared = 0
    while all(len(c) > shared + 1 for c in continuations) and len({c[shared] for c in continuations}) == 1:
        shared += 1
    ids = [c[shared] for c in continuations]
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer labels {list(labels)} start with the same token {ids[0]} for this tokenizer")
    return continuations[0][:shared], ids


@torch.no_grad()
def next_token_logprobs(model, encoded: Sequence[list[int]], token_ids: Sequence[int], pad_token_id: int,
                        batch_size: int = 8) -> torch.Tensor:
    """log p(token | prompt) for each encoded prompt and each of ``token_ids``: (N, len(token_ids)).
    Prompts are sorted by length and left-padded in batches (positions count real tokens only,
    so a padded row reads what it reads alone); only the last position's logits are computed."""
    from rlhf.models.positions import position_ids_from_mask

    order = sorted(range(len(encoded)), key=lambda n: len(encoded[n]))
    out = torch.empty(len(encoded), len(token_ids))
    device = next(model.parameters()).device
    wanted = torch.tensor(list(token_ids), device=device)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(encoded[n]) for n in rows)
        ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        for r, n in enumerate(rows):
            ids[r, width - len(encoded[n]):] = torch.tensor(encoded[n])
            mask[r, width - len(encoded[n]):] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                       logits_to_keep=1).logits[:, -1, :]  # (B, V)
        out[rows] = torch.log_softmax(logits.float(), dim=-1)[:, wanted].cpu()  # (B, 2)
    return out


class LocalJudge:
    """A causal LM from a local folder as a judge (Lee et al. 2023's RLAIF preference): the
    comparison is one user message rendered with the model's chat template (or the default
    template), and P(first better) = softmax over the log-probs of "A" and "B" as the next token.
    Runs on the CPU in batches; nothing is generated, so nothing is unreadable.

    With ``cot_max_new_tokens`` > 0 (chain-of-thought, off by default) the question asks for
    reasons first; the judge generates up to that many tokens greedily after the question, cuts
    any answer it wrote itself, appends "\nAnswer:" and reads " A" against " B" there.
    ``cache_id`` names the setting, so cached answers of one mode never answer the other."""

    def __init__(self, model_path: str, batch_size: int = 8, name: str | None = None, model=None, tokenizer=None,
                 cot_max_new_tokens: int = 0):
        from pathlib import Path

        self.name = name or Path(model_path).name
        self.model_path = model_path
        self.batch_size = batch_size
        self.cot_max_new_tokens = cot_max_new_tokens
        self.cache_id = f"{self.name}+cot{cot_max_new_tokens}" if cot_max_new_tokens else self.name
        self.reasonings: list[str] = []  # the last call's reasonings, in query order (chain-of-thought only)
        self._model, self._tokenizer = model, tokenizer
        self._labels: tuple[list[int], list[int]] | None = None  # (shared continuation, label ids)
        self.truncated = 0  # prompts cut from the left to fit the position limit

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from rlhf.models.loading import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_path, padding_side="left")
        return self._tokenizer

    @property
    def model(self):
        """Loaded on first use: a run whose every answer is cached never loads it."""
        if self._model is None:
            from rlhf.models.loading import load_causal_lm

            self._model = load_causal_lm(self.model_path, self.tokenizer).eval()
        return self._model

    def _fit(self, ids: list[int], room: int) -> list[int]:
        """``ids`` cut from the left to leave ``room`` tokens within the model's position limit
        (the end holds the responses and the answer cue, which the judge must see); counted."""
        from rlhf.models.loading import position_limit

        limit = position_limit(self.model.config)
        if limit is None or len(ids) + room <= limit:
            return ids
        self.truncated += 1
        return ids[len(ids) + room - limit:]

    def render(self, query: Query) -> str:
        content = comparison_text(query, chain_of_thought=self.cot_max_new_tokens > 0)
        return render_prompt([{"role": "user", "content": content}], self.tokenizer)

    def judge(self, queries: Sequence[Query]) -> list[float | None]:
        texts = [self.render(q) for q in queries]
        if not texts:
            return []
        written = None
        if self.cot_max_new_tokens:  # reason first, then read the label after the appended cue
            generated = self._generate_rendered(texts, self.cot_max_new_tokens)
            self.reasonings = [reasoning_before_answer(text) for text in generated]
            texts = [t + response_text(r, self.tokenizer) + ANSWER_CUE for t, r in zip(texts, self.reasonings)]
            written = [" " + label for label in LABELS]
        if self._labels is None:
            self._labels = label_token_ids(self.tokenizer, texts[0], written=written)
        shared, label_ids = self._labels
        encoded = [self._fit(self.tokenizer(t, add_special_tokens=False)["input_ids"] + shared, 0) for t in texts]
        logprobs = next_token_logprobs(self.model, encoded, label_ids, self.tokenizer.pad_token_id,
                                       self.batch_size)  # (N, 2)
        return torch.softmax(logprobs, dim=-1)[:, 0].tolist()  # normalised over the two labels

    def generate(self, messages_list: Iterable[list[dict[str, str]]], max_new_tokens: int = 96) -> list[str]:
        """Greedy replies to conversations (for critique and revision)."""
        return self._generate_rendered([render_prompt(m, self.tokenizer) for m in messages_list], max_new_tokens)

    def _generate_rendered(self, rendered: Sequence[str], max_new_tokens: int) -> list[str]:
        """Greedy continuations of already-rendered prompts (each cut to leave room for them)."""
        from rlhf.rollout.generation import SamplingParams, sample_responses

        prompts = []
        for text in rendered:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            prompts.append(self.tokenizer.decode(self._fit(ids, max_new_tokens)))
        texts, _ = sample_responses(self.model, self.tokenizer, prompts,
                                    SamplingParams(max_new_tokens=max_new_tokens, do_sample=False),
                                    batch_size=self.batch_size)
        return [t.replace(self.tokenizer.pad_token or "", "").strip() for t in texts]
