"""Tokenization (separate prompt/response encoding, eos, masks, truncation policy) and
batching (padding values, the 2B-row pair batch, left-padded prompts, length grouping).

The tokenizer is a tiny byte-level BPE built here, so these tests do not depend on the
embedded model."""

import json
import random

import pytest
import torch

from rlhf.data import (IGNORE_INDEX, Comparison, DataError, Demonstration, PromptRecord, Source, collate_pairs,
                       collate_prompts, collate_sft, length_grouped_batches, load_demonstrations,
                       tokenize_comparisons, tokenize_demonstrations, tokenize_prompts, truncate_pair)
from rlhf.losses import pairwise_rm_loss

SRC = Source("mem.jsonl", 7)


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["\n\nHuman: hello there, how are you?\n\nAssistant: I am fine, thank you.",
                             "the quick brown fox jumps over the lazy dog"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|pad|>")


def encode(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --- chat template ------------------------------------------------------------------------------

def test_tokenizer_chat_template_is_used_when_present(tokenizer, tmp_path):
    chat = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|endoftext|>",
                               pad_token="<|pad|>")
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                             {"role": "assistant", "content": "Yo"}]}) + "\n")
    templated = load_demonstrations(path, tokenizer=chat)[0]
    assert (templated.prompt, templated.completion) == ("<|user|>Hi\n<|assistant|>", "Yo")
    default = load_demonstrations(path, tokenizer=tokenizer)[0]  # no chat template -> HH default
    assert (default.prompt, default.completion) == ("\n\nHuman: Hi\n\nAssistant:", " Yo")


# --- tokenization -------------------------------------------------------------------------------

def test_demonstration_prompt_and_completion_encoded_separately_with_eos(tokenizer):
    demo = Demonstration("\n\nHuman: hello\n\nAssistant:", " I am fine.", SRC)
    (example,) = tokenize_demonstrations([demo], tokenizer, max_length=128)
    prompt_ids, completion_ids = encode(tokenizer, demo.prompt), encode(tokenizer, demo.completion)
    eos = tokenizer.eos_token_id
    assert example["input_ids"] == prompt_ids + completion_ids + [eos]
    assert example["labels"] == [IGNORE_INDEX] * len(prompt_ids) + completion_ids + [eos]
    assert example["source"] == SRC
    (full,) = tokenize_demonstrations([demo], tokenizer, max_length=128, completion_only_loss=False)
    assert full["labels"] == full["input_ids"]


def test_comparison_tokens_share_prompt_and_end_with_eos(tokenizer):
    c = Comparison("\n\nHuman: hi\n\nAssistant:", " fine", " the lazy dog", margin=1.5, labeler="ann", source=SRC,
                   weight=0.25)
    (example,) = tokenize_comparisons([c], tokenizer, max_length=64)
    eos = tokenizer.eos_token_id
    assert example["prompt_ids"] == encode(tokenizer, c.prompt)
    assert example["chosen_ids"] == encode(tokenizer, " fine") + [eos]
    assert example["rejected_ids"] == encode(tokenizer, " the lazy dog") + [eos]
    assert (example["margin"], example["labeler"], example["weight"], example["source"]) == (1.5, "ann", 0.25, SRC)


def test_truncation_policy_numbers():
    prompt = list(range(100))
    assert truncate_pair(prompt, 10, 200) == (prompt, 10)  # fits: untouched
    kept, n = truncate_pair(prompt, 10, 50)  # prompt cut from the left, response whole
    assert kept == prompt[-40:] and n == 10
    kept, n = truncate_pair(prompt, 90, 40)  # response too long: prompt keeps 40 // 4, response cut
    assert kept == prompt[-10:] and n == 30
    kept, n = truncate_pair([1, 2], 90, 40)  # a short prompt is kept whole
    assert kept == [1, 2] and n == 38


def test_truncation_on_keeps_prompt_end_and_may_drop_eos(tokenizer):
    prompt = "\n\nHuman: " + "the quick brown fox " * 20 + "\n\nAssistant:"
    demo = Demonstration(prompt, " the lazy dog" * 30, SRC)
    prompt_ids, completion_ids = encode(tokenizer, demo.prompt), encode(tokenizer, demo.completion)
    (example,) = tokenize_demonstrations([demo], tokenizer, max_length=40)
    assert len(example["input_ids"]) == 40
    assert example["input_ids"][:10] == prompt_ids[-10:]  # the prompt's END survives, 40 // 4 tokens
    assert example["input_ids"][10:] == completion_ids[:30]
    assert tokenizer.eos_token_id not in example["input_ids"]
    assert example["labels"][:10] == [IGNORE_INDEX] * 10

    short = Demonstration(prompt, " fine", SRC)  # only the prompt needs cutting; eos kept
    (example,) = tokenize_demonstrations([short], tokenizer, max_length=40)
    assert len(example["input_ids"]) == 40 and example["input_ids"][-1] == tokenizer.eos_token_id


def test_truncation_off_is_a_data_error_naming_file_line_field(tokenizer):
    demo = Demonstration("\n\nHuman: hello", " the quick brown fox" * 10, SRC)
    n = len(encode(tokenizer, demo.prompt)) + len(encode(tokenizer, demo.completion)) + 1
    with pytest.raises(DataError, match=rf"mem\.jsonl, line 7, field 'completion': sequence of {n} tokens "
                                        r"exceeds max_length 16"):
        tokenize_demonstrations([demo], tokenizer, max_length=16, truncation=False)
    c = Comparison("\n\nHuman: hello", " ok", " the quick brown fox" * 10, source=SRC)
    with pytest.raises(DataError, match=r"line 7, field 'rejected': sequence of \d+ tokens exceeds max_length 16"):
        tokenize_comparisons([c], tokenizer, max_length=16, truncation=False)
    p = PromptRecord("the quick brown fox " * 10, SRC)
    with pytest.raises(DataError, match=r"line 7, field 'prompt': sequence of \d+ tokens exceeds max_length 8"):
        tokenize_prompts([p], tokenizer, max_prompt_length=8, truncation=False)


def test_truncation_off_with_skip_drops_long_records(tokenizer):
    demos = [Demonstration("hi", " ok", Source("f", 1)), Demonstration("hi", " the lazy dog" * 20, Source("f", 2))]
    examples = tokenize_demonstrations(demos, tokenizer, max_length=16, truncation=False, skip_bad_records=True)
    assert [e["source"].line for e in examples] == [1]
    assert [e.line for e in examples.skipped] == [2]


def test_comparison_truncation_shares_one_prompt_cut(tokenizer):
    c = Comparison("the quick brown fox " * 20, " ok", " the lazy dog" * 3, source=SRC)
    (example,) = tokenize_comparisons([c], tokenizer, max_length=24)
    for side in ("chosen_ids", "rejected_ids"):
        assert len(example["prompt_ids"]) + len(example[side]) <= 24
        assert example[side][-1] == tokenizer.eos_token_id
    assert len(example["prompt_ids"]) + len(example["rejected_ids"]) == 24


def test_prompts_cut_from_left(tokenizer):
    p = PromptRecord("the quick brown fox " * 10 + "\n\nAssistant:", SRC)
    (example,) = tokenize_prompts([p], tokenizer, max_prompt_length=8)
    assert example["input_ids"] == encode(tokenizer, p.prompt)[-8:]
    assert tokenizer.eos_token_id not in example["input_ids"]


# --- collation ----------------------------------------------------------------------------------

def test_collate_sft_right_pads_with_ignored_labels():
    batch = collate_sft([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}],
                        pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["input_ids"].dtype == torch.long


PAIRS = [
    {"prompt_ids": [10, 11], "chosen_ids": [20, 0], "rejected_ids": [30, 31, 0], "margin": 2.0, "labeler": "a"},
    {"prompt_ids": [12], "chosen_ids": [21, 22, 23, 0], "rejected_ids": [0], "margin": None, "labeler": "b"},
]


def test_collate_pairs_stacks_chosen_then_rejected():
    batch = collate_pairs(PAIRS, pad_token_id=1, labeler_weights={"a": 0.5})
    assert batch["input_ids"].shape == (4, 5)  # (2B, T)
    assert batch["input_ids"].tolist() == [[10, 11, 20, 0, 1], [12, 21, 22, 23, 0],
                                           [10, 11, 30, 31, 0], [12, 0, 1, 1, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1] * 5, [1] * 5, [1, 1, 0, 0, 0]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]]
    assert batch["margin"].tolist() == [2.0, 0.0]
    assert batch["weights"].tolist() == [0.5, 1.0]
    assert "weights" not in collate_pairs(PAIRS, pad_token_id=1)


def test_collate_pairs_weight_is_record_weight_times_labeler_weight():
    # record weights 0.25 (a) and None (b, = 1); labeler weights a = 0.5, b = 0.8:
    # 0.25 x 0.5 = 0.125, 1 x 0.8 = 0.8. Without labeler weights: 0.25 x 1, 1 x 1.
    pairs = [{**PAIRS[0], "weight": 0.25}, {**PAIRS[1], "weight": None}]
    weighted = collate_pairs(pairs, pad_token_id=1, labeler_weights={"a": 0.5, "b": 0.8})
    assert weighted["weights"].tolist() == [0.125, pytest.approx(0.8)]
    assert collate_pairs(pairs, pad_token_id=1)["weights"].tolist() == [0.25, 1.0]
    zero = collate_pairs([{**PAIRS[0], "weight": 0.0}, {**PAIRS[1], "weight": 0.0}], pad_token_id=1)
    assert zero["weights"].tolist() == [0.0, 0.0]
    # A zero-weight batch gives loss 0 (not 0/0), so such a batch is a no-op step.
    loss, _ = pairwise_rm_loss(torch.tensor([0.3, -1.0]), torch.tensor([0.1, 2.0]), weights=zero["weights"])
    assert loss.item() == 0.0


def test_pairs_without_a_record_weight_train_exactly_as_before():
    # No "weight" and no labeler weights: no "weights" in the batch, so the loss is the plain
    # mean of -log sigmoid(r_c - r_r), bit for bit the unweighted path.
    batch = collate_pairs([{**p, "weight": None} for p in PAIRS], pad_token_id=1)
    assert "weights" not in batch and batch.keys() == collate_pairs(PAIRS, pad_token_id=1).keys()
    chosen, rejected = torch.tensor([0.3, -1.0]), torch.tensor([0.1, 2.0])
    loss, _ = pairwise_rm_loss(chosen, rejected, weights=batch.get("weights"))
    # (-log sigmoid(0.2) - log sigmoid(-3)) / 2 = (0.598139 + 3.048587) / 2 = 1.823363
    assert loss.item() == pytest.approx(1.823363, abs=1e-6)
    assert torch.equal(loss, -torch.nn.functional.logsigmoid(chosen - rejected).mean())


def test_collate_pairs_left_padding_ends_every_row_in_the_last_column():
    batch = collate_pairs(PAIRS, pad_token_id=1, padding_side="left")
    assert batch["input_ids"][:, -1].tolist() == [0, 0, 0, 0]  # every row ends with its eos
    assert batch["input_ids"][3].tolist() == [1, 1, 1, 12, 0]
    assert batch["response_mask"][3].tolist() == [0, 0, 0, 0, 1]


def test_collate_prompts_left_pads():
    batch = collate_prompts([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}], pad_token_id=1)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [1, 1, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


# --- length grouping ----------------------------------------------------------------------------

def padding(batches, lengths):
    return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)


def test_length_grouped_batches_cover_each_index_once_and_cut_padding():
    rng = random.Random(0)
    lengths = [rng.randint(5, 500) for _ in range(1003)]
    batches = length_grouped_batches(lengths, batch_size=8, seed=1, mega_batch_mult=10)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1003))
    assert all(len(b) <= 8 for b in batches)
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # longest batch first
    order = list(range(1003))
    random.Random(1).shuffle(order)
    random_batches = [order[k:k + 8] for k in range(0, 1003, 8)]
    assert padding(batches, lengths) < 0.25 * padding(random_batches, lengths)


def test_length_grouped_batches_deterministic_per_seed():
    lengths = list(range(100))
    assert length_grouped_batches(lengths, 4, seed=3) == length_grouped_batches(lengths, 4, seed=3)
    assert length_grouped_batches(lengths, 4, seed=3, mega_batch_mult=2) != \
        length_grouped_batches(lengths, 4, seed=4, mega_batch_mult=2)
    unshuffled = length_grouped_batches([3, 1, 2, 5], 2, seed=0, shuffle=False)
    assert unshuffled == [[3, 0], [2, 1]]
