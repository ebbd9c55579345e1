"""The token sampler of generation (rlhf.rollout.generation.InverseCDFSampler and its warpers):
it must draw from softmax(logits / T) cut by top-k / top-p, never a token of zero probability."""

import pytest
import torch

from rlhf.rollout.generation import InverseCDFSampler, SamplingParams, sampling_processors


def draw(processors, scores, n):
    """n draws of each row's token, as n copies of the rows in one batch: (n, B)."""
    out = scores.repeat(n, 1)  # (n B, V)
    for processor in processors:
        out = processor(None, out)
    assert (out == 0).sum(-1).eq(1).all() and torch.isinf(out).sum(-1).eq(out.shape[1] - 1).all()
    return out.argmax(-1).view(n, scores.shape[0])


def frequencies(draws, V):
    return torch.stack([torch.bincount(column, minlength=V) for column in draws.T]).double() / draws.shape[0]


def test_draws_follow_the_tempered_distribution():
    torch.manual_seed(0)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 3.0, -2.0]])
    n = 20000
    got = frequencies(draw(sampling_processors(SamplingParams(temperature=0.7)), logits, n), 5)
    expected = torch.softmax(logits.double() / 0.7, -1)
    # each frequency within 4.5 standard errors of its probability
    assert ((got - expected).abs() <= 4.5 * (expected * (1 - expected) / n).sqrt() + 1e-12).all(), (got, expected)


def test_top_k_and_top_p_cut_the_tail_and_renormalise():
    torch.manual_seed(1)
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.06, 0.04]]))
    n = 20000
    top_k = frequencies(draw(sampling_processors(SamplingParams(top_k=2)), logits, n), 5)[0]
    assert top_k[2:].sum() == 0
    assert abs(top_k[0] - 0.4 / 0.7) < 4.5 * (0.57 * 0.43 / n) ** 0.5
    top_p = frequencies(draw(sampling_processors(SamplingParams(top_p=0.85)), logits, n), 5)[0]
    assert top_p[3:].sum() == 0  # 0.4 + 0.3 + 0.2 >= 0.85: the last two are cut
    assert abs(top_p[2] - 0.2 / 0.9) < 4.5 * (0.22 * 0.78 / n) ** 0.5


def test_a_uniform_number_rounding_up_to_the_total_never_draws_a_cut_token(monkeypatch):
    scores = torch.tensor([[0.0, 1.0, float("-inf"), float("-inf")]])
    monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.full((1, 1), 1.0, dtype=torch.float64))
    assert InverseCDFSampler()(None, scores).argmax(-1).item() == 1


def test_non_finite_scores_are_an_error():
    with pytest.raises(ValueError, match="inf or NaN"):
        InverseCDFSampler()(None, torch.tensor([[0.0, float("nan")]]))


def test_generate_samples_and_records_the_same_distribution(tiny_model_dir):
    """End to end through transformers' generate: the recorded log-probs are those of a forward pass,
    and a seeded run repeats itself."""
    from rlhf.models.loading import load_tokenizer
    from rlhf.rollout.generation import generate
    from rlhf.rollout.logprobs import response_logprobs
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompts = torch.randint(2, 200, (6, 5))
    mask = torch.ones_like(prompts)
    params = SamplingParams(max_new_tokens=8, temperature=0.7, top_k=50)
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(generate(model, prompts, mask, params, tokenizer.eos_token_id, tokenizer.pad_token_id,
                             record_logprobs=True))
    assert torch.equal(runs[0].query_responses, runs[1].query_responses)
    rollout = runs[0]
    with torch.no_grad():
        forward = response_logprobs(model, rollout.query_responses, rollout.attention_mask, rollout.prompt_length, 0.7)
    torch.testing.assert_close(rollout.logprobs, forward * rollout.response_mask, atol=1e-5, rtol=1e-5)
