"""Stage 1: supervised fine-tuning (InstructGPT section 3.5, "SFT").

Next-token cross-entropy on the response tokens of labeler demonstrations. The result is
PPO's starting policy and its frozen reference.
"""

from __future__ import annotations

import math

import torch

from rlhf.config.sft import SFTConfig
from rlhf.data import collate_sft, load_demonstrations, tokenize_demonstrations
from rlhf.losses import sft_loss
from rlhf.models.loading import load_model_and_tokenizer
from rlhf.models.lora import add_lora
from rlhf.progress import phase_bar
from rlhf.trainers.datasets import load_train_eval, to_device, with_model_limits
from rlhf.trainers.saving import finish_run, save_adapter_and_merge
from rlhf.trainers.setup import check_output_dir, make_accelerator, seed_everything
from rlhf.trainers.sharding import gathered
from rlhf.trainers.supervised import SupervisedRun

CONFIG_CLASS = SFTConfig


def run(config: SFTConfig) -> dict:
    check_output_dir(config)  # before anything loads; the folder is written once all has loaded
    accelerator = make_accelerator(config)
    seed_everything(config.seed)
    model, tokenizer = load_model_and_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    if config.use_peft:  # train low-rank adapters on the frozen model (docs/lora.md)
        model = add_lora(model, config)

    # 1. Data: demonstrations -> token ids with the prompt masked out of the labels.
    data_config = with_model_limits(config, model)  # max_length 0: the model's position limit
    max_length = data_config.max_length
    train_examples, eval_examples, data_info = _load_examples(data_config, tokenizer)
    pad_id = tokenizer.pad_token_id

    # 2. Batches, optimizer, schedule, checkpoints; accelerate wraps model and optimizer.
    run_ = SupervisedRun.start(config, accelerator, model, [len(x["input_ids"]) for x in train_examples], "sft",
                               postfix_keys=("loss/sft", "eval/loss"))
    model, logger = run_.model, run_.logger

    def held_out_metrics(when: str) -> dict[str, float]:
        with gathered(accelerator):  # FSDP2: processes may hold different numbers of eval batches
            return evaluate(model, eval_examples, pad_id, config.per_device_train_batch_size, accelerator,
                            progress="" if config.disable_tqdm else f"sft eval {when}")

    if run_.saved is None and eval_examples:
        logger.log(0, held_out_metrics("before training"))
        logger.restart_clock()  # the evaluation is not part of step 1's time

    # 3. Train: next-token loss on the response tokens, epochs x batches.
    def compute_loss(batch_indices: list[int]):
        batch = to_device(collate_sft([train_examples[i] for i in batch_indices], pad_id), accelerator.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sft_loss(logits, batch["labels"]), {}

    def evaluate_every(step: int):
        if eval_examples and config.eval_steps > 0 and step % config.eval_steps == 0:
            return held_out_metrics(f"at step {step}")
        return None

    state = run_.train(compute_loss, "sft", after_step=evaluate_every)

    # 4. Evaluate on held-out demonstrations and save the policy (save_pretrained, safetensors).
    summary = {"stage": "sft", "steps": state.step, "train_examples": len(train_examples),
               "max_length": max_length, **data_info}
    if eval_examples:
        eval_metrics = held_out_metrics("after training")
        logger.log(state.step, eval_metrics)
        summary.update(eval_metrics)
        summary["eval/loss_before"] = logger.history[0]["eval/loss"] if logger.history else None
    if config.use_peft:  # output_dir/adapter, then the merged model as output_dir/model
        model = save_adapter_and_merge(model, tokenizer, config.output_dir, accelerator)
    return finish_run(model, tokenizer, summary, config, accelerator, logger, "sft",
                      training_info={"prompt_format": data_info["prompt_format"]})


def _load_examples(config: SFTConfig, tokenizer) -> tuple[list[dict], list[dict], dict]:
    """Train and held-out examples, and the data's summary (format, truncations): see load_train_eval."""

    def load(path: str) -> list:
        return load_demonstrations(path, tokenizer=tokenizer, skip_bad_records=config.skip_bad_records,
                                   prompt_field=config.prompt_field, completion_field=config.completion_field,
                                   apply_chat_template=config.apply_chat_template)

    def tokenize(demos: list) -> list:
        return tokenize_demonstrations(demos, tokenizer, max_length=config.max_length, truncation=config.truncation,
                                       completion_only_loss=config.completion_only_loss,
                                       skip_bad_records=config.skip_bad_records)

    return load_train_eval(config, tokenizer, load, tokenize, "examples")


@torch.no_grad()
def evaluate(model, examples: list[dict], pad_id: int, batch_size: int, accelerator, progress: str = ""
             ) -> dict[str, float]:
    """Token-weighted held-out loss and perplexity over every process's share of ``examples``;
    ``progress``: a description to show a progress bar under (main process), empty for none."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=accelerator.device)  # (sum of token losses, token count)
    starts = range(accelerator.process_index * batch_size, len(examples), batch_size * accelerator.num_processes)
    for start in phase_bar(starts, progress, f"{len(examples)} examples",
                           bool(progress) and accelerator.is_main_process):
        batch = to_device(collate_sft(examples[start:start + batch_size], pad_id), accelerator.device)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        n_tokens = (batch["labels"][:, 1:] != -100).sum()
        total += torch.stack([sft_loss(logits, batch["labels"]) * n_tokens, n_tokens.float()])
    total = accelerator.reduce(total, "sum")
    model.train(was_training)
    loss = (total[0] / total[1].clamp(min=1)).item()
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0))}
