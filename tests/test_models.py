"""Model plumbing: reward read at the last real token under any padding; local-only loading."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from rlhf.models.loading import ModelPathError, load_tokenizer
from rlhf.models.scalar_model import ScalarModel, last_token_index, position_ids_from_mask
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
    from rlhf.rollout.rewards import score_responses

    tokenizer = load_tokenizer(tiny_model_dir)
    model = ScalarModel.from_pretrained(tiny_model_dir, tokenizer).eval()
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
    ours_rm = ScalarModel.from_pretrained(tiny_model_dir, tokenizer).eval()
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
