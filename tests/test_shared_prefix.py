"""A prompt shared by several rows runs once (rlhf/models/shared_prefix.py): the outputs and the
gradients must be those of the ordinary forward, for left-padded prompts in any row order, on a
GPT-2 (learned positions) and a Llama (rotary positions), with LoRA, and for the reward model."""

import pytest
import torch

from rlhf.models.shared_prefix import prefix_groups, shared_prefix_forward
from rlhf.rollout.logprobs import response_logits

P, R, V = 6, 5, 40


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=V, n_positions=64,
                                      resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=0, eos_token_id=0))


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                        num_attention_heads=4, num_key_value_heads=2, vocab_size=V,
                                        max_position_embeddings=64, bos_token_id=0, eos_token_id=0, pad_token_id=1))


def grouped_batch(order=None):
    """3 prompts x 4 responses: prompts left-padded (one by 2, one by 0, one by 3 tokens), responses
    right-padded at various lengths; rows in ``order`` (default: groups contiguous)."""
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(2, V, (3, P), generator=g)
    prompt_mask = torch.ones(3, P, dtype=torch.long)
    for row, pad in ((0, 2), (2, 3)):
        prompts[row, :pad], prompt_mask[row, :pad] = 1, 0
    ids = torch.cat([prompts.repeat_interleave(4, 0), torch.randint(2, V, (12, R), generator=g)], dim=1)
    mask = torch.cat([prompt_mask.repeat_interleave(4, 0), torch.ones(12, R, dtype=torch.long)], dim=1)
    for row, length in ((1, 2), (5, 1), (6, 4), (11, 3)):  # shorter responses, padded after
        ids[row, P + length:], mask[row, P + length:] = 1, 0
    order = torch.arange(12) if order is None else order
    return ids[order], mask[order]


def loss_of(logits, ids, mask):
    """A loss with its own weight on every logit, so that every gradient path counts."""
    weights = torch.randn(ids.shape[0], R, V, generator=torch.Generator().manual_seed(5))
    return (logits * weights * mask[:, P:, None]).sum()


def input_shapes(model) -> list:
    """The (rows, columns) of every pass through the model's transformer, recorded as they run."""
    shapes = []
    model.transformer.register_forward_pre_hook(
        lambda m, args, kwargs: shapes.append(tuple((args[0] if args else kwargs["input_ids"]).shape)),
        with_kwargs=True)
    return shapes


def full_logits(model, ids, mask):
    from rlhf.models.positions import position_ids_from_mask

    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                 use_cache=False).logits[:, P - 1:-1]


def test_groups_find_each_rows_prompt_in_any_order():
    ids, mask = grouped_batch(torch.randperm(12, generator=torch.Generator().manual_seed(3)))
    first, index = prefix_groups(gpt2(), ids, mask, P)
    assert first.shape == (3,) and index.shape == (12,)
    assert torch.equal(ids[first[index], :P], ids[:, :P])  # each row's group starts with its prompt
    assert torch.equal(index[first], torch.arange(3))


def test_no_groups_when_rows_mostly_distinct_or_model_cannot_share():
    ids, mask = grouped_batch()
    assert prefix_groups(gpt2(), ids[::4], mask[::4], P) is None  # 3 distinct prompts in 3 rows
    assert prefix_groups(gpt2(), ids[:5], mask[:5], P) is not None  # 2 distinct in 5 rows
    assert prefix_groups(gpt2(), ids, mask, 0) is None
    model = gpt2()
    (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    assert prefix_groups(model, ids, mask, P) is None  # checkpointing drops the cache in training
    # wrappers whose forward communicates (a process sharing and another not would hang), or compiles
    for wrapper in ("DistributedDataParallel", "FullyShardedDataParallel", "FSDPGPT2LMHeadModel", "DeepSpeedEngine",
                    "OptimizedModule"):
        assert prefix_groups(type(wrapper, (torch.nn.Module,), {})(), ids, mask, P) is None


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_response_logits_and_gradients_match_the_full_forward(build):
    ids, mask = grouped_batch(torch.randperm(12, generator=torch.Generator().manual_seed(4)))
    results = []
    for shared in (False, True):
        model = build().train()
        if shared:
            logits = response_logits(model, ids, mask, P, temperature=0.7)
        else:
            logits = full_logits(model, ids, mask) / 0.7
        loss_of(logits, ids, mask).backward()
        results.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full, full_grads), (shared, shared_grads) = results
    real = mask[:, P:].bool()
    torch.testing.assert_close(shared[real], full[real], atol=1e-5, rtol=1e-5)
    for name, grad in full_grads.items():
        torch.testing.assert_close(shared_grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_the_prefix_runs_once_per_distinct_prompt():
    model = gpt2().eval()
    widths = input_shapes(model)
    ids, mask = grouped_batch()
    with torch.no_grad():
        response_logits(model, ids, mask, P)
    assert widths == [(3, P - 1), (12, R)]


def test_lora_model_matches():
    from peft import LoraConfig, get_peft_model

    ids, mask = grouped_batch()
    model = get_peft_model(gpt2(), LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))
    with torch.no_grad():
        torch.testing.assert_close(response_logits(model, ids, mask, P)[mask[:, P:].bool()],
                                   full_logits(model, ids, mask)[mask[:, P:].bool()], atol=1e-5, rtol=1e-5)


def test_reward_model_score_matches():
    from transformers import GPT2Config, GPT2ForSequenceClassification

    from rlhf.models.scalar_model import ScalarModel

    torch.manual_seed(0)
    model = ScalarModel(GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=V,
                                                                 num_labels=1, pad_token_id=1))).eval()
    ids, mask = grouped_batch(torch.randperm(12, generator=torch.Generator().manual_seed(6)))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, shared_prefix_length=P), model(ids, mask), atol=1e-5, rtol=1e-5)
        mask_empty = mask.clone()
        mask_empty[0, P:] = 0  # a row with no token after the prefix: the full forward reads it
        torch.testing.assert_close(model(ids, mask_empty, shared_prefix_length=P), model(ids, mask_empty))


def test_a_model_that_ignores_the_cache_is_caught_and_marked():
    from rlhf.models.shared_prefix import PrefixNotShared

    model = gpt2().eval()
    ids, mask = grouped_batch()
    forward = model.forward

    def forgetful(*args, **kwargs):  # drops the cache it is given, as a model without cache support would
        kwargs.pop("cache", None)
        kwargs.pop("past_key_values", None)
        return forward(*args, **kwargs)

    model.forward = forgetful
    groups = prefix_groups(model, ids, mask, P)
    with torch.no_grad(), pytest.raises(PrefixNotShared, match="cannot run a shared prefix once"), \
            pytest.warns(UserWarning, match="runs every row in full"):
        shared_prefix_forward(model, ids, mask, P, groups)
    assert prefix_groups(model, ids, mask, P) is None
    with torch.no_grad():  # and response_logits falls back to the full forward
        torch.testing.assert_close(response_logits(model, ids, mask, P)[mask[:, P:].bool()],
                                   full_logits(model, ids, mask)[mask[:, P:].bool()], atol=1e-5, rtol=1e-5)


def test_generation_prefills_each_distinct_prompt_once_and_samples_the_same(monkeypatch):
    from rlhf.rollout import generation
    from rlhf.rollout.generation import SamplingParams, generate

    model = gpt2().eval()
    ids, mask = grouped_batch(torch.randperm(12, generator=torch.Generator().manual_seed(7)))
    prompts, prompt_mask = ids[:, :P], mask[:, :P]
    params = SamplingParams(max_new_tokens=6, temperature=0.8)
    widths = input_shapes(model)
    runs = []
    for shared in (True, False):
        if not shared:
            monkeypatch.setattr(generation, "shared_prompt_cache", lambda *args: {})
        torch.manual_seed(0)
        runs.append(generate(model, prompts, prompt_mask, params, eos_token_id=0, pad_token_id=1, record_logprobs=True))
    assert widths[:2] == [(3, P - 1), (12, 1)]  # the prefill of 3 distinct prompts, then each row's last prompt token
    assert torch.equal(runs[0].query_responses, runs[1].query_responses)
    torch.testing.assert_close(runs[0].logprobs, runs[1].logprobs, atol=1e-5, rtol=1e-5)


def test_the_adapter_free_reference_shares_its_prompts():
    from peft import LoraConfig, get_peft_model

    from rlhf.models.lora import AdapterFreeReference

    ids, mask = grouped_batch()
    base = gpt2().eval()
    expected = full_logits(base, ids, mask)
    reference = AdapterFreeReference(get_peft_model(base, LoraConfig(r=4, target_modules=["c_attn"],
                                                                     init_lora_weights=False)))
    shared = response_logits(reference, ids, mask, P)
    real = mask[:, P:].bool()
    torch.testing.assert_close(shared[real], expected[real], atol=1e-5, rtol=1e-5)
