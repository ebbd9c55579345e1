"""Model plumbing: reward read at the last real token under any padding; local-only loading."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf.models.loading import ModelPathError, load_tokenizer
from rlhf.models.positions import position_ids_from_mask
from rlhf.models.scalar_model import ScalarModel, last_token_index
from rlhf.rollout.generation import response_mask_from_ids
from rlhf.rollout.prompts import PromptSampler

EOS, PAD = 1, 0


def test_last_token_index_left_and_right_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 3, 0]
    assert last_token_index(left).tolist() == [3, 3, 3]
    assert position_ids_from_mask(left).tolist() == [[0, 0, 1, 2], [0, 1, 2, 3], [0, 0, 0, 0]]


def _tiny_scalar_model(pad_token_id):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=16, n_layer=2, n_embd=16, n_head=2, n_positions=32, num_labels=1,
                        pad_token_id=pad_token_id, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    return ScalarModel(GPT2ForSequenceClassification(config)).eval()


@pytest.mark.parametrize("pad_id", [PAD, EOS], ids=["pad!=eos", "pad==eos"])
def test_reward_same_for_left_and_right_padding(pad_id):
    model = _tiny_scalar_model(pad_id)
    rows = [[5, 6, 7, EOS], [8, 9, EOS]]  # both end with end-of-text, which the reward must read
    right = torch.tensor([rows[0], rows[1] + [pad_id]])
    right_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    left = torch.tensor([rows[0], [pad_id] + rows[1]])
    left_mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1]])
    with torch.no_grad():
        alone = torch.stack([model(torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long))[0] for r in rows])
        r_right, r_left = model(right, right_mask), model(left, left_mask)
    torch.testing.assert_close(r_right, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r_left, alone, rtol=1e-5, atol=1e-5)
    # and it really is the last token that is read: changing it changes the reward
    changed = right.clone()
    changed[0, 3] = 4
    with torch.no_grad():
        assert not torch.allclose(model(changed, right_mask)[0], r_right[0])


def test_response_mask_stops_after_first_eos():
    responses = torch.tensor([[5, EOS, 7, 7], [5, 6, 7, 8], [EOS, 3, EOS, 2]])
    mask, ended = response_mask_from_ids(responses, EOS)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert ended.tolist() == [True, False, True]


def test_prompt_sampler_covers_each_pass_and_resumes():
    sampler = PromptSampler(10, 4, seed=0)
    first_pass = sampler.next_batch() + sampler.next_batch() + sampler.next_batch()[:2]
    assert sorted(first_pass) == list(range(10))
    state = sampler.state_dict()
    expected = [sampler.next_batch() for _ in range(3)]
    resumed = PromptSampler(10, 4, seed=0)
    resumed.load_state_dict(state)
    assert [resumed.next_batch() for _ in range(3)] == expected
    other_rank = PromptSampler(10, 4, seed=0, rank=1)
    assert other_rank.next_batch() != PromptSampler(10, 4, seed=0).next_batch()


def test_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelPathError, match="never downloads from the Hugging Face Hub"):
        load_tokenizer(tmp_path / "nope")


def test_score_responses_batched_equals_one_by_one(tiny_model_dir):
    from rlhf.rewards.scorers import score_responses

    tokenizer = load_tokenizer(tiny_model_dir)
    model = ScalarModel.from_pretrained(tiny_model_dir, tokenizer, allow_new_head=True).eval()
    prompts = ["\n\nHuman: what is one plus two?\n\nAssistant:", "\n\nHuman: a cat?\n\nAssistant:"]
    responses = [" three", " yes the cat is a good cat"]
    batched = score_responses(model, tokenizer, prompts, responses, batch_size=2, ended=[True, False])
    alone = torch.cat([score_responses(model, tokenizer, [p], [r], ended=[e])
                       for p, r, e in zip(prompts, responses, [True, False])])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(batched, score_responses(model, tokenizer, prompts, responses, ended=[True, True]))


def test_loaded_models_use_the_fused_tanh_gelu_with_the_same_outputs(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.activations import GELUTanh, NewGELUActivation

    from rlhf.models.loading import load_causal_lm

    tokenizer = load_tokenizer(tiny_model_dir)
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones_like(ids)
    plain_lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ours_lm = load_causal_lm(tiny_model_dir, tokenizer).eval()
    plain_rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    ours_rm = ScalarModel.from_pretrained(tiny_model_dir, tokenizer, allow_new_head=True).eval()
    ours_rm.head.load_state_dict(plain_rm.score.state_dict())  # the fresh heads start at random
    for plain, ours in ((plain_lm, ours_lm), (plain_rm, ours_rm)):
        assert any(isinstance(m, NewGELUActivation) for m in plain.modules())  # GPT-2's config says gelu_new
        assert not any(isinstance(m, NewGELUActivation) for m in ours.modules())
        assert any(isinstance(m, GELUTanh) for m in ours.modules())
    with torch.no_grad():
        torch.testing.assert_close(ours_lm(input_ids=ids, attention_mask=mask).logits,
                                   plain_lm(input_ids=ids, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
        plain_hidden = plain_rm.transformer(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
        torch.testing.assert_close(ours_rm(ids, mask), plain_rm.score(plain_hidden).squeeze(-1), rtol=1e-5, atol=1e-5)
    assert ours_lm.config.activation_function == "gelu_new"  # saved checkpoints stay standard


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 0.9)], ids=["full", "top-k+top-p"])
def test_sampler_records_the_forward_pass_logprobs(tiny_model_dir, top_k, top_p):
    """PPO's pi_old comes from the sampler: it must equal what a forward pass computes, at the
    sampling temperature and over the full distribution (warpers only change what is drawn)."""
    from rlhf.data import collate_prompts
    from rlhf.models.loading import load_causal_lm
    from rlhf.rollout.generation import SamplingParams, generate
    from rlhf.rollout.logprobs import response_logprobs

    tokenizer = load_tokenizer(tiny_model_dir, padding_side="left")
    model = load_causal_lm(tiny_model_dir, tokenizer).eval()
    prompts = ["\n\nHuman: what is one plus two?\n\nAssistant:", "\n\nHuman: a cat?\n\nAssistant:"] * 3
    batch = collate_prompts([{"input_ids": tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts],
                            tokenizer.pad_token_id)
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_k=top_k, top_p=top_p)
    torch.manual_seed(0)
    rollout = generate(model, batch["input_ids"], batch["attention_mask"], params, tokenizer.eos_token_id,
                       tokenizer.pad_token_id, record_logprobs=True)
    forward = response_logprobs(model, rollout.query_responses, rollout.attention_mask, rollout.prompt_length, 0.7)
    mask = rollout.response_mask.bool()
    assert rollout.logprobs.shape == rollout.responses.shape and mask.sum() > 12
    torch.testing.assert_close(rollout.logprobs[mask], forward[mask], rtol=0, atol=1e-4)
    assert (rollout.logprobs[~mask] == 0).all()
    assert (forward[mask] != forward[mask].mean()).any()  # not a constant that would match anything
    with_min = SamplingParams(max_new_tokens=12, temperature=0.7, min_new_tokens=4)  # eos masked first: no record
    assert generate(model, batch["input_ids"], batch["attention_mask"], with_min, tokenizer.eos_token_id,
                    tokenizer.pad_token_id, record_logprobs=True).logprobs is None


def test_dpo_logprobs_projected_at_marked_positions_only_equal_full_logits(tiny_model_dir):
    """sequence_logprobs applies the LM head to the marked positions alone; values and gradients
    must equal the full-logits computation, and a model whose logits are not head(hidden)
    (here: scaled after the head, like Gemma's soft-capping) must fall back to full logits."""
    from rlhf.models.loading import load_causal_lm
    from rlhf.rollout import logprobs as L

    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_causal_lm(tiny_model_dir, tokenizer)
    torch.manual_seed(0)
    ids = torch.randint(3, 250, (5, 14))
    attention = torch.ones_like(ids)
    attention[0, :4] = 0  # left padding
    marked = torch.zeros_like(ids)
    marked[:, 8:] = 1
    marked[2, 11:] = 0  # right padding after a short response
    marked[4, 5:] = 1  # an earlier response start
    selected = L.sequence_logprobs(model, ids, attention, marked)
    selected.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    full = L._sequence_logprobs_full(model, ids, attention, marked, keep_last=None)
    full.sum().backward()
    torch.testing.assert_close(selected, full, rtol=1e-5, atol=1e-4)
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-4, atol=1e-5)
    by_hand = torch.log_softmax(model(input_ids=ids, attention_mask=attention,
                                      position_ids=position_ids_from_mask(attention)).logits[2, 7:10], -1)
    assert full[2].item() == pytest.approx(by_hand.gather(-1, ids[2, 8:11, None]).sum().item(), abs=1e-4)

    class ScaledLogits(torch.nn.Module):  # logits = 2 * head(hidden): the head alone would be wrong
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def get_output_embeddings(self):
            return self.inner.get_output_embeddings()

        def forward(self, **kwargs):
            output = self.inner(**kwargs)
            output.logits = output.logits * 2
            return output

    scaled = ScaledLogits(model)
    with torch.no_grad():
        expected = L._sequence_logprobs_full(scaled, ids, attention, marked, keep_last=None)
        torch.testing.assert_close(L.sequence_logprobs(scaled, ids, attention, marked), expected)
        assert getattr(scaled, L._UNPROJECTABLE)  # and it is remembered
        assert not torch.allclose(expected, full.detach(), atol=1e-2)
