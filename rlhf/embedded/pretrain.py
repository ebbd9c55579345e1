"""Rebuild the embedded base model: tokenizer, then a small GPT-2 pretrained from scratch on CPU.

    python -m rlhf.embedded.pretrain            # ~15 minutes on 2 CPU cores, deterministic

Steps: (1) generate the corpus (rlhf.embedded.corpus), (2) train a byte-level BPE tokenizer
and save it at once (other code needs only the tokenizer), (3) pack the corpus into blocks
and train GPT2LMHeadModel with AdamW and a cosine schedule, (4) save the model (safetensors),
``training_info.json`` and a README, (5) measure the gold reward of the base model on the
test prompts. Everything is drawn from ``--seed``, so the same command rebuilds the same files
on the same software stack.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from rlhf.atomic_io import write_json_atomic
from rlhf.embedded import EMBEDDED_BASE_MODEL
from rlhf.embedded.corpus import pretraining_documents
from rlhf.embedded.gold import gold_components
from rlhf.embedded.task import Instruction, format_prompt, instructions
from rlhf.rollout.generation import SamplingParams, sample_responses

EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass
class PretrainArgs:
    out: str = EMBEDDED_BASE_MODEL
    """Folder to write the tokenizer and model into (save_pretrained layout)."""
    seed: int = 0
    """Seed of the corpus, the initial weights and the batch order."""
    num_docs: int = 120_000
    """Corpus documents (about 39 tokens each, 4.7M tokens); the run sees about 0.6 of an epoch,
    so every batch is fresh text."""
    vocab_size: int = 2048
    """Upper bound for the BPE vocabulary; the closed world needs fewer merges than that."""
    n_layer: int = 4
    n_embd: int = 256
    n_head: int = 4
    n_positions: int = 256
    """Context length of the model; training blocks have this length, so every position is trained."""
    steps: int = 700
    """Optimizer steps; each sees batch_size x n_positions tokens."""
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    """The cosine schedule decays to learning_rate x min_lr_ratio."""
    weight_decay: float = 0.1
    threads: int = 2
    log_every: int = 25
    tokenizer_only: bool = False
    """Stop after saving the tokenizer."""
    eval_max_new_tokens: int = 48


# ---- Tokenizer ----------------------------------------------------------------------------------

def train_tokenizer(docs: list[str], vocab_size: int, max_length: int):
    """A byte-level BPE tokenizer (GPT-2 style, no BOS added) with ``<|endoftext|>`` as eos/bos
    and a distinct ``<|pad|>``, so that padding can be masked without hiding the stop token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD,
                                   unk_token=None, model_max_length=max_length)


# ---- Data ------------------------------------------------------------------------------------------

def pack_documents(docs: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """Concatenate the documents, each followed by end-of-text, and cut into blocks. # (N, block_size)"""
    ids: list[int] = []
    for encoded in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids += encoded + [tokenizer.eos_token_id]
    n_blocks = len(ids) // block_size
    return torch.tensor(ids[: n_blocks * block_size]).view(n_blocks, block_size)


def learning_rate_at(step: int, args: PretrainArgs) -> float:
    """1) linear warm-up, 2) cosine decay to min_lr_ratio x peak."""
    if step < args.warmup_steps:
        return args.learning_rate * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, args.steps - args.warmup_steps)
    floor = args.learning_rate * args.min_lr_ratio
    return floor + 0.5 * (args.learning_rate - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


# ---- Model and training -----------------------------------------------------------------------------

def build_model(args: PretrainArgs, tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
        n_positions=args.n_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    return GPT2LMHeadModel(config)


def train(model, blocks: torch.Tensor, val_blocks: torch.Tensor, args: PretrainArgs) -> dict:
    """Plain next-token training on random packed blocks; returns the loss curve and timings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=args.learning_rate, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(args.seed)
    epochs = math.ceil(args.steps * args.batch_size / len(blocks))
    order = torch.cat([torch.randperm(len(blocks), generator=generator) for _ in range(epochs)])  # a new order each epoch
    curve, window, start = [], [], time.time()
    model.train()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, args)
        batch = blocks[order[step * args.batch_size:(step + 1) * args.batch_size]]  # (B, T)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss.item())
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            elapsed = time.time() - start
            tokens = (step + 1) * args.batch_size * args.n_positions
            point = {"step": step + 1, "loss": statistics.mean(window), "lr": group["lr"],
                     "tokens": tokens, "tokens_per_s": tokens / elapsed, "elapsed_s": elapsed}
            curve.append(point)
            window = []
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in point.items()}), flush=True)
    wall = time.time() - start
    return {"loss_curve": curve, "wall_time_s": wall, "final_loss": curve[-1]["loss"],
            "val_loss": evaluate_loss(model, val_blocks), "tokens_seen": args.steps * args.batch_size * args.n_positions}


@torch.no_grad()
def evaluate_loss(model, blocks: torch.Tensor, batch_size: int = 16) -> float:
    model.eval()
    losses = [model(input_ids=blocks[i:i + batch_size], labels=blocks[i:i + batch_size]).loss.item()
              for i in range(0, len(blocks), batch_size)]
    model.train()
    return statistics.mean(losses)


# ---- Measuring the base model with the gold reward --------------------------------------------------

def gold_report(model, tokenizer, instrs: list[Instruction], temperature: float, max_new_tokens: int = 48,
                seed: int = 0) -> dict:
    """Mean gold reward (overall, per kind, per component) of the model's answers to ``instrs``."""
    prompts = [format_prompt(i.text) for i in instrs]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature or 1.0, do_sample=temperature > 0)
    torch.manual_seed(seed)
    answers = list(zip(*sample_responses(model, tokenizer, prompts, params)))
    parts = [gold_components(p, r, e) for p, (r, e) in zip(prompts, answers)]
    by_kind: dict[str, list[float]] = {}
    for instr, part in zip(instrs, parts):
        by_kind.setdefault(instr.kind, []).append(part["gold"])
    return {
        "temperature": temperature,
        "gold": statistics.mean(p["gold"] for p in parts),
        "gold_by_kind": {k: statistics.mean(v) for k, v in by_kind.items()},
        "components": {k: statistics.mean(p[k] for p in parts) for k in parts[0] if k != "gold"},
        "samples": [{"prompt": i.text, "response": r, "ended": e} for i, (r, e) in list(zip(instrs, answers))[:8]],
    }


# ---- Saving ----------------------------------------------------------------------------------------------

README = """# Embedded base model

A {params_m:.2f}M-parameter GPT-2 (n_layer={n_layer}, n_embd={n_embd}, n_head={n_head}, n_positions={n_positions},
vocab {vocab}) pretrained from scratch on {tokens_m:.2f}M tokens of text from the embedded world
(rlhf.embedded.corpus): facts, and HH-style dialogues of mixed quality. It knows the format and
the world, but is not well behaved: that is what SFT and RLHF are for.

- final training loss {final_loss:.3f}, held-out loss {val_loss:.3f}
- wall time {wall_min:.1f} min on {threads} CPU threads
- mean gold reward on the {n_test} test prompts: {gold_greedy:.3f} (greedy), {gold_sampled:.3f} (temperature 1)

Tokenizer: byte-level BPE; `<|endoftext|>` is eos (and bos, never added automatically),
`<|pad|>` is padding. Details in training_info.json. Rebuild (deterministic given the seed):

    python -m rlhf.embedded.pretrain --seed {seed}
"""


def save_tokenizer(tokenizer, out: Path) -> None:
    """save_pretrained, naming the class PreTrainedTokenizerFast (transformers 5 writes
    "TokenizersBackend", which transformers 4 cannot load)."""
    tokenizer.save_pretrained(out)
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    write_json_atomic(config_path, config, indent=1)


def parse_args(argv: list[str] | None = None) -> PretrainArgs:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, default in asdict(PretrainArgs()).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true")
        else:
            parser.add_argument(flag, type=type(default), default=default)
    return PretrainArgs(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1) corpus, 2) tokenizer (saved at once)
    docs = pretraining_documents(args.num_docs, seed=args.seed)
    tokenizer = train_tokenizer(docs, args.vocab_size, args.n_positions)
    save_tokenizer(tokenizer, out)
    print(f"tokenizer: {len(tokenizer)} tokens, saved to {out}", flush=True)
    if args.tokenizer_only:
        return {}

    # 3) pack and train
    blocks = pack_documents(docs, tokenizer, args.n_positions)
    val_blocks = pack_documents(pretraining_documents(2000, seed=args.seed + 1000), tokenizer, args.n_positions)
    print(f"corpus: {len(docs)} documents, {blocks.numel()} tokens in {len(blocks)} blocks", flush=True)
    model = build_model(args, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params} parameters", flush=True)
    info = train(model, blocks, val_blocks, args)

    # 4) save
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)

    # 5) measure
    test = instructions("test")
    reports = {name: gold_report(model, tokenizer, test, temperature, args.eval_max_new_tokens, args.seed)
               for name, temperature in (("greedy", 0.0), ("temperature_1", 1.0))}
    info.update(parameters=params, vocab_size=len(tokenizer), corpus_tokens=blocks.numel(),
                args=asdict(args) | {"out": "rlhf/embedded/base_model"},
                gold_test=reports, command=f"python -m rlhf.embedded.pretrain --seed {args.seed}",
                torch_version=torch.__version__)
    write_json_atomic(out / "training_info.json", info, indent=1)
    (out / "README.md").write_text(README.format(
        params_m=params / 1e6, n_layer=args.n_layer, n_embd=args.n_embd, n_head=args.n_head,
        n_positions=args.n_positions, vocab=len(tokenizer), tokens_m=info["tokens_seen"] / 1e6,
        final_loss=info["final_loss"], val_loss=info["val_loss"], wall_min=info["wall_time_s"] / 60,
        threads=args.threads, n_test=len(test), gold_greedy=reports["greedy"]["gold"],
        gold_sampled=reports["temperature_1"]["gold"], seed=args.seed))
    print(json.dumps({k: v["gold"] for k, v in reports.items()}), flush=True)
    return info


if __name__ == "__main__":
    main()
