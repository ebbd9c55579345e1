"""Stage 2: the reward model (InstructGPT section 3.5, "RM").

A backbone initialised from the SFT model with a scalar head read at the last real token,
trained on pairwise comparisons with the Bradley-Terry loss -log sigma(r_chosen - r_rejected).
Chosen and rejected responses of a batch go through the backbone in one forward pass.
"""

from __future__ import annotations

import warnings

import torch

from rlhf.config.reward import RewardConfig
from rlhf.data import collate_pairs
from rlhf.losses import pairwise_rm_loss
from rlhf.models.loading import load_tokenizer, training_stage_of
from rlhf.models.lora import add_lora_to_scalar_model
from rlhf.models.scalar_model import REWARD_STATS_FILE, ScalarModel
from rlhf.rewards.evaluation import reward_margins, reward_statistics, summarize_margins
from rlhf.trainers.datasets import load_train_eval_pairs, to_device, with_model_limits
from rlhf.trainers.saving import finish_run, save_adapter_and_merge
from rlhf.trainers.setup import check_output_dir, make_accelerator, seed_everything
from rlhf.trainers.sharding import gathered
from rlhf.trainers.supervised import SupervisedRun

CONFIG_CLASS = RewardConfig
# InstructGPT and the seed's advice: a reward model much larger than its data over-fits.
MIN_PAIRS_FOR_LARGE_MODEL, LARGE_MODEL_PARAMS = 5000, 100_000_000


def run(config: RewardConfig) -> dict:
    check_output_dir(config)  # before anything loads; the folder is written once all has loaded
    accelerator = make_accelerator(config)
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    # Normally a causal LM (the SFT model): its new score head is what this stage trains.
    model = ScalarModel.from_pretrained(config.model_name_or_path, tokenizer, trust_remote_code=config.trust_remote_code,
                                        allow_new_head=True)
    if config.use_peft:  # adapters on the backbone; the scalar head is trained in full
        model = add_lora_to_scalar_model(model, config)

    # 1. Data: comparisons (rankings expand to K(K-1)/2 pairs) -> token ids. A pair's loss weight
    #    is its record's "weight" (each pair of a ranking inherits it) x --labeler_weights, each 1 if absent.
    data_config = with_model_limits(config, model)  # max_length 0: the model's position limit
    max_length = data_config.max_length
    train_pairs, eval_pairs, data_info = load_train_eval_pairs(data_config, tokenizer)
    _warn_common_mistakes(config, model, len(train_pairs), accelerator)
    weights_by_labeler = config.parsed_labeler_weights()
    pad_id = tokenizer.pad_token_id
    lengths = [len(x["prompt_ids"]) + max(len(x["chosen_ids"]), len(x["rejected_ids"])) for x in train_pairs]
    run_ = SupervisedRun.start(config, accelerator, model, lengths, "rm",
                               postfix_keys=("loss/rm", "rm/accuracy", "eval/accuracy"))
    model = run_.model

    # 2. Train: one forward pass over [chosen; rejected], Bradley-Terry on the reward difference.
    def compute_loss(batch_indices: list[int]):
        batch = to_device(collate_pairs([train_pairs[i] for i in batch_indices], pad_id,
                                        labeler_weights=weights_by_labeler or None), accelerator.device)
        rewards = model(batch["input_ids"], batch["attention_mask"])  # (2B,)
        chosen_rewards, rejected_rewards = rewards.chunk(2)  # (B,), (B,)
        loss, stats = pairwise_rm_loss(chosen_rewards, rejected_rewards,
                                       margin=batch["margin"] if config.use_margin else None,
                                       center_coef=config.center_rewards_coefficient, weights=batch.get("weights"))
        return loss, {"rm/accuracy": stats["accuracy"], "rm/margin": stats["margin"]}

    step = run_.train(compute_loss, "rm").step

    # 3. Held-out accuracy, margin and calibration; reward statistics for PPO's normalisation.
    summary = {"stage": "rm", "steps": step, "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
               "max_length": max_length, **data_info}
    with gathered(accelerator):  # FSDP2: processes may hold different numbers of batches
        if eval_pairs:
            margins = reward_margins(model, eval_pairs, pad_id, config.per_device_train_batch_size, accelerator,
                                     progress="" if config.disable_tqdm else "rm eval")
            eval_metrics, calibration = summarize_margins(margins, config.calibration_bins)
            run_.logger.log(step, eval_metrics)
            summary.update(eval_metrics)
            summary["calibration"] = calibration
        stats = reward_statistics(model, stats_sample(train_pairs, config.stats_max_pairs, config.seed), pad_id,
                                  config.per_device_train_batch_size, accelerator,
                                  progress="" if config.disable_tqdm else "reward statistics")
    summary["reward_mean"], summary["reward_std"] = stats["mean"], stats["std"]
    if config.use_peft:  # output_dir/adapter (with the head), then the merged model as output_dir/model
        model = save_adapter_and_merge(model, tokenizer, config.output_dir, accelerator)
    return finish_run(model, tokenizer, summary, config, accelerator, run_.logger, "rm",
                      extra_files={REWARD_STATS_FILE: stats},
                      training_info={"prompt_format": data_info["prompt_format"]})


def stats_sample(pairs: list[dict], size: int, seed: int) -> list[dict]:
    """A seeded random sample of ``size`` training pairs (all of them if fewer): the reward's
    mean and std need a few hundred, and files are often sorted (by source, by length)."""
    if len(pairs) <= size:
        return pairs
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:size]
    return [pairs[i] for i in sorted(order.tolist())]


def _warn_common_mistakes(config: RewardConfig, model, num_pairs: int, accelerator) -> None:
    if not accelerator.is_main_process:
        return
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > LARGE_MODEL_PARAMS and num_pairs < MIN_PAIRS_FOR_LARGE_MODEL:
        warnings.warn(f"{num_pairs} comparisons for a reward model of {n_params / 1e6:.0f}M parameters: below "
                      f"{MIN_PAIRS_FOR_LARGE_MODEL} pairs a model over 100M parameters tends to over-fit; collect "
                      "more comparisons or use a smaller backbone", stacklevel=2)
    if training_stage_of(config.model_name_or_path) != "sft":
        warnings.warn(f"{config.model_name_or_path} is not an `rlhf sft` checkpoint: InstructGPT initialises the "
                      "reward model from the SFT model, which has seen the task's responses (ignore this if the "
                      "model was fine-tuned elsewhere)", stacklevel=2)
