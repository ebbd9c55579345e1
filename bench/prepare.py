"""Build the benchmark's assets once: tokenizers, randomly initialised models and data files.

Run in our venv (it uses `tokenizers`, `transformers` and our data loaders, so that the HH-RLHF
prompts are split exactly as `rlhf rm`/`rlhf dpo` split them). Both libraries then read the
same folders and JSONL files. Everything lands in bench/.assets/ (git-ignored).

    python bench/prepare.py [--force]

What it builds, per model (a: 6x384, vocab 1024; b: 4x512, vocab 50257):
- a byte-level BPE tokenizer trained on the HH-RLHF text, with exactly `vocab_size` ids
  (<|endoftext|> = 0, <|pad|> = 1; a corpus too small for 50257 merges is filled with ids that
  no text can produce);
- `policy/`: GPT2LMHeadModel, seed 0, dropout 0, whose end-of-text and pad logits are pinned at
  about -50 so that sampling never stops early (see `pin_special_logits`);
- `reward/`: GPT2ForSequenceClassification (1 label) on the same backbone, fresh head (seed 0):
  the PPO reward model and the starting point of the value model, for both libraries;
- fixed-length synthetic data built from words that are one token each, so a prompt of 32 words
  is exactly 32 tokens: `sft.jsonl` (32 + 95 words + eos = 128), `pairs.jsonl`, `prompts.jsonl`;
- `hh_pairs.jsonl`: HH-RLHF harmless-base test comparisons as explicit {prompt, chosen, rejected},
  keeping the pairs that fit in 512 tokens without truncation (so neither library truncates or
  drops anything), and `hh_batch_order.json`: the batches our trainers take, which the TRL worker
  replays with a sequential sampler so both libraries train on the same batches.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload as W  # noqa: E402

HH_FILE = Path("/work/shared/data/hh-rlhf/harmless-base-test.jsonl.gz")
N_SYNTH = 512  # examples per synthetic file: enough for 32 updates of batch 16
PIN_LOGIT = 50.0  # end-of-text and pad logits sit near -PIN_LOGIT: never sampled, never learned away


def hh_texts() -> list[str]:
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["chosen"] for r in rows] + [r["rejected"] for r in rows]


def build_tokenizer(vocab_size: int, texts: list[str], out: Path):
    """Byte-level BPE with exactly ``vocab_size`` ids, saved as a PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[W.EOS, W.PAD], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    if tok.get_vocab_size() < vocab_size:
        # Too little text for that many merges: fill the vocabulary with ids that have no merge
        # leading to them (so no text encodes to them), spelled in the byte alphabet so they decode.
        spec = json.loads(tok.to_str())
        vocab = spec["model"]["vocab"]
        filler = 0
        while len(vocab) < vocab_size:
            token = "ĀĀĀ" + str(filler)
            filler += 1
            if token not in vocab:
                vocab[token] = len(vocab)
        tok = Tokenizer.from_str(json.dumps(spec))
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    assert tok.token_to_id(W.EOS) == 0 and tok.token_to_id(W.PAD) == 1
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=W.EOS, pad_token=W.PAD, bos_token=W.EOS,
                                   model_max_length=W.N_POSITIONS)
    assert len(fast) == vocab_size, len(fast)
    fast.save_pretrained(out)
    return fast


def single_token_words(tokenizer) -> list[str]:
    """Words (" abc") that encode to exactly one token: sequences of them have a known length."""
    words = []
    for token in tokenizer.get_vocab():
        word = tokenizer.convert_tokens_to_string([token])
        if len(word) >= 3 and word[0] == " " and word[1:].isascii() and word[1:].isalpha():
            if tokenizer(word, add_special_tokens=False)["input_ids"] == [tokenizer.convert_tokens_to_ids(token)]:
                words.append(word)
    return sorted(words)


def pin_special_logits(model, ids: list[int]) -> None:
    """Make ``ids`` (end-of-text, pad) unsampleable: one hidden unit after the final layer norm is a
    constant PIN_LOGIT (weight 0, bias PIN_LOGIT) and only those tokens' (tied) embedding rows read
    it, with -1. Their logits sit near -PIN_LOGIT whatever the input, so every response runs to
    max_new_tokens in both libraries, with no option needed; the gradient through an
    exp(-50)-probability token is nil, so training does not undo it."""
    import torch

    k = model.config.n_embd - 1
    with torch.no_grad():
        model.transformer.ln_f.weight[k] = 0.0
        model.transformer.ln_f.bias[k] = PIN_LOGIT
        wte = model.transformer.wte.weight
        wte[:, k] = 0.0
        for i in ids:
            wte[i, k] = -1.0


def build_models(name: str, tokenizer, out: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    shape = W.MODELS[name]
    config = GPT2Config(
        vocab_size=shape["vocab_size"], n_positions=W.N_POSITIONS, n_embd=shape["n_embd"], n_layer=shape["n_layer"],
        n_head=shape["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(W.SEED)
    policy = GPT2LMHeadModel(config)
    pin_special_logits(policy, [tokenizer.eos_token_id, tokenizer.pad_token_id])
    policy.generation_config.eos_token_id = tokenizer.eos_token_id
    policy.generation_config.pad_token_id = tokenizer.pad_token_id
    policy.save_pretrained(out / "policy", safe_serialization=True)
    tokenizer.save_pretrained(out / "policy")
    # Both libraries warn when PPO/RM start from a model that did not come out of SFT; this one stands in for it.
    (out / "policy" / "rlhf_training.json").write_text(json.dumps({"stage": "sft", "base_model": "random init"}))

    torch.manual_seed(W.SEED)
    reward = GPT2ForSequenceClassification.from_pretrained(out / "policy", num_labels=1)
    reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(out / "reward", safe_serialization=True)
    tokenizer.save_pretrained(out / "reward")
    (out / "reward" / "rlhf_training.json").write_text(json.dumps({"stage": "rm", "base_model": "random init"}))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def build_synthetic(words: list[str], tokenizer, out: Path) -> None:
    rng = random.Random(W.SEED)
    response_words = W.SYNTH_LENGTH - W.SYNTH_PROMPT - 1  # + eos

    def text(n: int) -> str:
        return "".join(rng.choice(words) for _ in range(n))

    sft, pairs, prompts = [], [], []
    for _ in range(N_SYNTH):
        prompt = text(W.SYNTH_PROMPT)
        sft.append({"prompt": prompt, "completion": text(response_words)})
        pairs.append({"prompt": prompt, "chosen": text(response_words), "rejected": text(response_words)})
        prompts.append({"prompt": text(W.PPO_PROMPT)})
    # Every sequence has its intended length, whether encoded in parts (ours) or joined (TRL).
    for row in sft[:50]:
        assert len(tokenizer(row["prompt"])["input_ids"]) == W.SYNTH_PROMPT
        joined = tokenizer(row["prompt"] + row["completion"] + W.EOS)["input_ids"]
        assert len(joined) == W.SYNTH_LENGTH, len(joined)
    write_jsonl(out / "sft.jsonl", sft)
    write_jsonl(out / "pairs.jsonl", pairs)
    write_jsonl(out / "prompts.jsonl", prompts)


def build_hh(tokenizer, out: Path) -> dict:
    """HH-RLHF pairs that fit in HH_MAX_LENGTH, split as our loader splits them, and our batch order."""
    from rlhf.data import length_grouped_batches, load_comparisons, tokenize_comparisons

    comparisons = load_comparisons(HH_FILE, tokenizer=tokenizer, skip_bad_records=True)
    kept, lengths, tokenized_rows = [], [], []
    dropped = {"too_long": 0, "blank": 0, "boundary_merge": 0}
    for c in comparisons:
        if not c.chosen.strip() or not c.rejected.strip():
            dropped["blank"] += 1  # an explicit {prompt, chosen, rejected} record may not have a blank reply
            continue
        tokenized = tokenize_comparisons([c], tokenizer, max_length=10**6)[0]
        n = len(tokenized["prompt_ids"]) + max(len(tokenized["chosen_ids"]), len(tokenized["rejected_ids"]))
        if n > W.HH_MAX_LENGTH:
            dropped["too_long"] += 1
            continue
        # TRL encodes prompt + response as one string; keep pairs where that gives the same tokens.
        for side in ("chosen", "rejected"):
            joined = tokenizer(c.prompt + getattr(c, side) + W.EOS)["input_ids"]
            if joined != tokenized["prompt_ids"] + tokenized[f"{side}_ids"]:
                break
        else:
            kept.append({"prompt": c.prompt, "chosen": c.chosen, "rejected": c.rejected})
            lengths.append(n)
            tokenized_rows.append(tokenized)
            continue
        dropped["boundary_merge"] += 1
    write_jsonl(out / "hh_pairs.jsonl", kept)
    # Our rm/dpo trainers batch with length_grouped_batches(lengths, batch, seed=config.seed + epoch).
    batches = length_grouped_batches(lengths, W.HH_BATCH, seed=W.SEED)
    widths = [max(lengths[i] for i in b) for b in batches]
    # (prompt, chosen, rejected) token counts of every row, eos included: the FLOP count reads them.
    rows = [[[len(t["prompt_ids"]), len(t["chosen_ids"]), len(t["rejected_ids"])] for t in (tokenized_rows[i] for i in b)]
            for b in batches]
    (out / "hh_batch_order.json").write_text(json.dumps({"batches": batches, "widths": widths, "rows": rows}))
    return {"pairs": len(kept), "dropped": dropped, "mean_length": sum(lengths) / len(lengths),
            "first_widths": widths[:12]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rebuild even if the assets exist")
    parser.add_argument("--models", default="a,b")
    args = parser.parse_args()
    texts = hh_texts()
    info = {}
    for name in args.models.split(","):
        out = W.ASSETS / f"model_{name}"
        if (out / "done.json").exists() and not args.force:
            info[name] = json.loads((out / "done.json").read_text())
            continue
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        tokenizer = build_tokenizer(W.MODELS[name]["vocab_size"], texts, out / "tokenizer")
        words = single_token_words(tokenizer)
        build_models(name, tokenizer, out)
        build_synthetic(words, tokenizer, out)
        hh = build_hh(tokenizer, out)
        info[name] = {"vocab_size": len(tokenizer), "single_token_words": len(words), "hh": hh}
        (out / "done.json").write_text(json.dumps(info[name], indent=2))
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
