"""Best-of-n: its KL to the policy against the analytic log n - (n - 1) / n, and the command end to end."""

import hashlib
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from conftest import write_jsonl

TESTS = Path(__file__).parent
PROMPT = "\n\nHuman: what is one plus two?\n\nAssistant:"


def token_score(token: int) -> float:
    """A score per token id with no ties (sha256 of the id), so the reward ranks every one-token response."""
    return int(hashlib.sha256(str(token).encode()).hexdigest()[:12], 16) / 16 ** 12


def token_reward(rollout, prompts, responses, raw_prompts=None, fields=None):
    """A reward scorer (as the sampler calls one) of the first response token's id. Ids, not
    texts: several byte tokens decode to the same replacement character."""
    return torch.tensor([token_score(t) for t in rollout.responses[:, 0].tolist()])


def first_token_distribution(tiny_model_dir):
    """The policy's exact distribution over one-token responses: {token id: probability}.
    End-of-text is excluded, as sampling with min_new_tokens = 1 excludes it."""
    from rlhf.models.loading import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir, tokenizer).eval()
    ids = torch.tensor([tokenizer(PROMPT, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0, -1]  # (V,)
    logits[tokenizer.eos_token_id] = -float("inf")
    probs = logits.double().softmax(-1).tolist()
    return tokenizer, model, {t: prob for t, prob in enumerate(probs) if t != tokenizer.eos_token_id}


def exact_best_of_n(p: dict[int, float], n: int) -> dict[int, float]:
    """q(y) = F(y)^n - F(y-)^n with tokens ordered by reward: the best of n i.i.d. draws."""
    q, below = {}, 0.0
    for token in sorted(p, key=token_score):
        q[token] = (below + p[token]) ** n - below ** n
        below += p[token]
    return q


@pytest.mark.parametrize("n", [4, 16])
def test_best_of_n_kl_matches_the_analytic_formula(tiny_model_dir, n):
    from rlhf.data import tokenize_prompts
    from rlhf.data.formats import PromptRecord
    from rlhf.evaluation.best_of_n import sample_best_of_n
    from rlhf.evaluation.compare import best_of_n_kl
    from rlhf.rollout.generation import SamplingParams

    tokenizer, model, p = first_token_distribution(tiny_model_dir)
    assert max(p.values()) < 0.05  # many small atoms: the continuous formula should be close
    q = exact_best_of_n(p, n)
    exact_kl = sum(qi * math.log(qi / p[t]) for t, qi in q.items() if qi > 0)
    analytic = best_of_n_kl(n)  # n = 4: log 4 - 3/4 = 0.636; n = 16: log 16 - 15/16 = 1.835
    assert exact_kl <= analytic + 1e-9  # an upper bound for a discrete distribution
    assert exact_kl == pytest.approx(analytic, abs=0.05)

    # Monte Carlo: the sampler's own picks. Their mean log q/p estimates KL(q || p) without the
    # plug-in bias of a histogram; a sampler keeping a random or the worst sample gives KL < 0.
    prompts = tokenize_prompts([PromptRecord(PROMPT)] * 1500, tokenizer, max_prompt_length=64)
    chosen = sample_best_of_n(model, tokenizer, prompts, n, token_reward,
                              SamplingParams(max_new_tokens=1, min_new_tokens=1), seed=0, batch_size=256)
    token_of = {token_score(t): t for t in p}
    picks = [token_of[min(token_of, key=lambda s: abs(s - c["score"]))] for c in chosen]  # float32 scores
    mc_kl = sum(math.log(q[t] / p[t]) for t in picks) / len(picks)
    assert mc_kl == pytest.approx(analytic, abs=0.1)
    # ... and the picks follow q: total variation between their histogram and q is small
    counts = Counter(picks)
    tv = 0.5 * sum(abs(counts.get(t, 0) / len(picks) - qi) for t, qi in q.items())
    assert tv < 0.2


def rlhf(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    return subprocess.run([sys.executable, "-m", "rlhf", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_best_of_n_cli_writes_chosen_responses_and_demonstrations(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": PROMPT}, {"prompt": "\n\nHuman: list two.\n\nAssistant:"}])
    out, demos = tmp_path / "out" / "chosen.jsonl", tmp_path / "out" / "sft.jsonl"
    args = ["best-of-n", "--model_name_or_path", tiny_model_dir, "--reward_function", "reward_functions:ended_then_target_char",
            "--prompts_file", prompts, "--n", 64, "--max_new_tokens", 40, "--output_file", out,
            "--demonstrations_file", demos, "--disable_tqdm", "true"]
    result = rlhf(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "log n - (n-1)/n = 3.175 nats" in result.stdout  # log 64 - 63/64 = 4.158883 - 0.984375 = 3.174508
    chosen = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["prompt"] for c in chosen] == [PROMPT, "\n\nHuman: list two.\n\nAssistant:"]
    for c in chosen:  # the kept response is the best of the 64: at least their mean, and scored as the function says
        assert c["score"] >= c["mean_score"]
        assert c["score"] == pytest.approx(c["ended"] + c["response"].count("e") / max(1, len(c["response"])), abs=1e-6)
        assert c["ended"]  # 1 in 8 samples of 40 tokens ends: one of 64 almost surely does
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["kl_to_policy"] == pytest.approx(math.log(64) - 63 / 64)
    from rlhf.data import load_demonstrations

    loaded = load_demonstrations(demos)  # the SFT format
    assert len(loaded) == summary["demonstrations"] == 2
    assert [d.completion for d in loaded] == [c["response"] for c in chosen]
    # an existing output is refused in one line without --overwrite
    again = rlhf(*args, cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.strip() == f"rlhf best-of-n: error: {out} exists: pass --overwrite true to replace it, or choose another file"
