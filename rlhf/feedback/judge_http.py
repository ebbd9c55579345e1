"""A judge behind an OpenAI-compatible chat-completions endpoint, and the cache every judge shares.

``HTTPJudge`` posts one chat-completions request per query (``POST {url}/chat/completions``)
with a concurrency limit, a timeout, and retries with exponential backoff on a timeout, a
connection error, 429 or a 5xx. The preference is read from the first token's top
log-probabilities when the endpoint returns them (normalised over "A" and "B", as the local
judge does), else parsed from the answer's text; an answer that says neither is counted
(``unreadable``) and gives no label, never a crash. The API key comes from the environment
variable named by the caller and lives only in the request header: it is never an option value,
so it never reaches a saved config, a log or the cache. With chain-of-thought (off by default)
the endpoint is asked to reason and end with a line "Answer: A" or "Answer: B"; the preference is
read from that final label's token log-probabilities when returned, else from the line's text.

``JudgeCache`` wraps any judge with an append-only JSON-lines file keyed by (judge, principle,
prompt, the two responses in the order shown): a re-run or a run resumed after a kill asks only
what was not answered yet.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from rlhf.errors import UserError
from rlhf.feedback.judges import LABELS, Query, comparison_text

_FINAL_ANSWER = re.compile(r"answer\s*:\s*\**\s*\(?\s*([AB])\b", re.I)


class JudgeRequestError(UserError, RuntimeError):
    """The endpoint could not be reached or kept failing after every retry."""


def parse_answer(text: str) -> float | None:
    """P(first better) from an answer's text: 1.0 for A, 0.0 for B, None when it names neither
    or both (e.g. "A or B"). Reads a bare letter first ("B", "(A).") then "Response A"/"Answer: B"."""
    stripped = text.strip().strip("*.()[]' \"")
    if stripped.upper() in LABELS:
        return 1.0 if stripped.upper() == "A" else 0.0
    found = {m.group(1).upper() for m in re.finditer(r"\b(?:response|answer)\s*(?:is\s*)?:?\s*\(?([AB])\b", text, re.I)}
    if len(found) == 1:
        return 1.0 if found == {"A"} else 0.0
    return None


def logprob_preference(top_logprobs: Sequence[dict]) -> float | None:
    """P(first better) = softmax over the log-probs of "A" and "B" among the first token's top
    log-probabilities ([{"token", "logprob"}, ...]); None when neither label is among them. A
    label missing from the list counts as -inf (its probability is below every listed one)."""
    best = {label: -math.inf for label in LABELS}
    for entry in top_logprobs:
        token = str(entry.get("token", "")).strip().upper()
        if token in best and entry.get("logprob") is not None:
            best[token] = max(best[token], float(entry["logprob"]))
    a, b = best["A"], best["B"]
    if a == -math.inf and b == -math.inf:
        return None
    if b == -math.inf:
        return 1.0
    if a == -math.inf:
        return 0.0
    return 1.0 / (1.0 + math.exp(b - a))


def final_answer_preference(text: str, tokens: Sequence[dict] | None = None) -> float | None:
    """P(first better) from a reasoned answer (chain-of-thought): its LAST "Answer: A/B". When
    the endpoint returned per-token log-probabilities (``tokens``: [{"token", "top_logprobs"}]),
    the token holding that final letter is found by its character offset in the tokens' joined
    text and read as ``logprob_preference`` reads a first token; else (or if that token is not the
    bare letter) the letter itself: 1.0 for A, 0.0 for B. No final answer: None (unreadable)."""
    if tokens:
        joined = "".join(str(entry.get("token", "")) for entry in tokens)
        found = list(_FINAL_ANSWER.finditer(joined))
        if found:
            at, offset = found[-1].start(1), 0
            for entry in tokens:
                token = str(entry.get("token", ""))
                if offset <= at < offset + len(token):
                    if token.strip().upper() in LABELS:
                        p = logprob_preference(entry.get("top_logprobs") or [])
                        if p is not None:
                            return p
                    break
                offset += len(token)
    found = list(_FINAL_ANSWER.finditer(text))
    if not found:
        return None
    return 1.0 if found[-1].group(1).upper() == "A" else 0.0


class HTTPJudge:
    """An OpenAI-compatible chat-completions endpoint as a judge (``name``: the model name).
    ``cot_max_new_tokens`` > 0 turns chain-of-thought on: reasons first, with that many tokens."""

    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 30.0,
                 max_retries: int = 3, backoff: float = 1.0, concurrency: int = 4, max_tokens: int = 8,
                 cot_max_new_tokens: int = 0):
        import httpx

        self.url = url.rstrip("/")
        self.endpoint = self.url if self.url.endswith("/chat/completions") else self.url + "/chat/completions"
        self.name = model
        self.model = model
        self.max_retries, self.backoff, self.concurrency, self.max_tokens = max_retries, backoff, concurrency, max_tokens
        self.cot_max_new_tokens = cot_max_new_tokens
        self.cache_id = f"{model}+cot{cot_max_new_tokens}" if cot_max_new_tokens else model
        key = os.environ.get(api_key_env, "") if api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self.unreadable = 0
        self.requests = 0

    def judge(self, queries: Sequence[Query]) -> list[float | None]:
        cot = self.cot_max_new_tokens > 0
        messages = [[{"role": "user", "content": comparison_text(q, chain_of_thought=cot)}] for q in queries]
        answers = self._map(lambda m: self._preference(m), messages)
        self.unreadable += sum(a is None for a in answers)
        return answers

    def generate(self, messages_list: Sequence[list[dict[str, str]]], max_new_tokens: int = 256) -> list[str]:
        """The endpoint's replies to conversations (for critique and revision)."""
        return self._map(lambda m: self._content(self._post(m, max_new_tokens, logprobs=False)), list(messages_list))

    def _map(self, function, items: list) -> list:
        if self.concurrency <= 1 or len(items) <= 1:
            return [function(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(function, items))

    def _preference(self, messages: list[dict]) -> float | None:
        body = self._post(messages, self.cot_max_new_tokens or self.max_tokens, logprobs=True)
        try:
            content = (body["choices"][0].get("logprobs") or {}).get("content") or []
            top = content[0].get("top_logprobs") or [] if content else []
        except (KeyError, IndexError, TypeError, AttributeError):
            return None
        if self.cot_max_new_tokens:  # the verdict is the reasoning's final line, not its first token
            return final_answer_preference(self._content(body), content)
        from_logprobs = logprob_preference(top) if top else None
        return from_logprobs if from_logprobs is not None else parse_answer(self._content(body))

    @staticmethod
    def _content(body) -> str:
        try:
            return str(body["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            return ""

    def _post(self, messages: list[dict], max_tokens: int, logprobs: bool):
        """One request, retried with backoff (backoff * 2^attempt seconds) on a timeout, a
        connection error, 429 or 5xx; a body that is not JSON is returned as {} (unreadable)."""
        import httpx

        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if logprobs:
            payload.update(logprobs=True, top_logprobs=5)
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests += 1
            try:
                response = self._client.post(self.endpoint, json=payload)
            except httpx.TimeoutException:
                last = "timed out"
                continue
            except httpx.TransportError as err:
                last = f"connection failed ({type(err).__name__})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise JudgeRequestError(f"judge endpoint {self.endpoint} answered HTTP {response.status_code}: "
                                        f"{response.text[:200]}")
            try:
                return response.json()
            except ValueError:
                return {}
        raise JudgeRequestError(f"judge endpoint {self.endpoint}: {last} after {self.max_retries + 1} attempts; "
                                "answers so far are in the cache, so a re-run resumes where this one stopped")


def cache_key(judge_name: str, query: Query) -> str:
    """The cache key of one query: a hash of (judge, principle, prompt, first, second); ``judge_name``
    is the judge's ``cache_id`` where it has one (its name plus its chain-of-thought setting)."""
    parts = [judge_name, query.principle.name, query.principle.comparison_question, query.prompt, query.first,
             query.second]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()


class JudgeCache:
    """Any judge with its answers remembered in ``path`` (JSON lines: {"key", "p_first"}), so a
    query asked before is never asked again, across runs. Appended after every batch and
    flushed, so a killed run loses at most the batch it was in; a torn last line is ignored."""

    def __init__(self, judge, path: str | Path, batch_size: int = 64):
        self.inner = judge
        self.name = judge.name
        self.key_name = getattr(judge, "cache_id", judge.name)  # the judge and its setting (chain-of-thought)
        self.path = Path(path)
        self.batch_size = batch_size
        self.answers: dict[str, float | None] = {}
        self.hits = 0
        self.misses = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self.answers[entry["key"]] = entry["p_first"]
                except (ValueError, KeyError, TypeError):
                    continue

    def judge(self, queries: Sequence[Query]) -> list[float | None]:
        keys = [cache_key(self.key_name, q) for q in queries]
        todo = list(dict.fromkeys(k for k in keys if k not in self.answers))
        self.hits += len(keys) - sum(k in todo for k in keys)
        self.misses += len(todo)
        by_key = {k: q for k, q in zip(keys, queries)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            answers = self.inner.judge([by_key[k] for k in chunk])
            with open(self.path, "a", encoding="utf-8") as handle:
                for key, answer in zip(chunk, answers):
                    self.answers[key] = answer
                    handle.write(json.dumps({"key": key, "p_first": answer}) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        return [self.answers[k] for k in keys]

    def generate(self, *args, **kwargs):
        return self.inner.generate(*args, **kwargs)
