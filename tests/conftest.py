"""Shared fixtures: a tiny tokenizer and tiny random models saved as local folders, and small data files."""

import json
import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(2)

WORDS = ("the a cat dog apple pear red blue yes no sorry can not help what is plus one two three four five "
         "list write about good bad").split()


def train_byte_bpe(texts, special_tokens=("<|endoftext|>", "<|pad|>"), vocab_size=300):
    """A byte-level BPE trained on ``texts``, with end-of-text as eos/bos and <|pad|> as padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|pad|>")


def build_test_tokenizer():
    rng = random.Random(0)
    texts = ["\n\nHuman: what is one plus two?\n\nAssistant: three"] * 5
    texts += [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(300)]
    return train_byte_bpe(texts)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A 2-layer GPT-2 with random weights and a 300-token BPE, saved like any local checkpoint."""
    from rlhf.models.tiny import build_tiny_model_for_tokenizer

    path = tmp_path_factory.mktemp("tiny_lm")
    tokenizer = build_test_tokenizer()
    tokenizer.save_pretrained(path)
    build_tiny_model_for_tokenizer(tokenizer, n_layer=2, n_embd=32, n_head=2, seed=0).save_pretrained(path)
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def arithmetic_prompt(a, b):
    return f"\n\nHuman: what is {a} plus {b}?\n\nAssistant:"


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory):
    """Demonstrations, comparisons and prompts of a toy task; all demonstrations have the same
    token length so batch-size invariance can be checked exactly."""
    root = tmp_path_factory.mktemp("toy_data")
    rng = random.Random(0)
    pairs = [(rng.randint(1, 4), rng.randint(1, 4)) for _ in range(128)]
    demos = write_jsonl(root / "demos.jsonl", [{"prompt": arithmetic_prompt(a, b), "completion": " yes"} for a, b in pairs])
    comparisons = write_jsonl(root / "pairs.jsonl", [
        {"prompt": arithmetic_prompt(a, b), "chosen": " yes good", "rejected": " no bad", "labeler": f"l{i % 2}"}
        for i, (a, b) in enumerate(pairs)])
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": arithmetic_prompt(a, b)} for a, b in pairs[:32]])
    return {"demos": demos, "pairs": comparisons, "prompts": prompts, "root": root}


@pytest.fixture(scope="session")
def tiny_demo_model_dir(tmp_path_factory):
    """A tiny random model with the embedded tokenizer: the demo's data, fast."""
    from rlhf.embedded import EMBEDDED_BASE_MODEL
    from rlhf.models.loading import load_tokenizer
    from rlhf.models.tiny import build_tiny_model_for_tokenizer

    path = tmp_path_factory.mktemp("tiny_embedded")
    tokenizer = load_tokenizer(EMBEDDED_BASE_MODEL)
    tokenizer.save_pretrained(path)
    build_tiny_model_for_tokenizer(tokenizer, n_layer=2, n_embd=32, n_head=2, seed=0).save_pretrained(path)
    return path
