"""Direct Preference Optimization (Rafailov et al. 2023) and its variants: the RL-free
alternative to reward model + PPO, trained on the same comparisons against a frozen
reference (the SFT model). Chosen and rejected go through the model in one forward pass.
"""

from __future__ import annotations

import torch

from rlhf.config.dpo import DPOConfig
from rlhf.data import collate_pairs
from rlhf.losses import dpo_loss, hinge_loss, ipo_loss
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.models.lora import AdapterFreeReference, add_lora
from rlhf.models.policy_value import disable_dropout
from rlhf.progress import phase_bar
from rlhf.rollout.logprobs import sequence_logprobs
from rlhf.trainers.datasets import load_train_eval_pairs, to_device, with_model_limits
from rlhf.trainers.saving import finish_run, save_adapter_and_merge
from rlhf.trainers.setup import check_output_dir, make_accelerator, seed_everything
from rlhf.trainers.sharding import gathered
from rlhf.trainers.supervised import EXAMPLES, SupervisedRun, mean_over_examples

CONFIG_CLASS = DPOConfig


def preference_loss(config: DPOConfig, policy_logps, ref_logps):
    """The selected variant on (chosen, rejected) log-probs of policy and reference."""
    (pc, pr), (rc, rr) = policy_logps, ref_logps
    if config.loss_type == "ipo":
        return ipo_loss(pc, pr, rc, rr, config.beta)
    if config.loss_type == "hinge":
        return hinge_loss(pc, pr, rc, rr, config.beta)
    return dpo_loss(pc, pr, rc, rr, config.beta, label_smoothing=config.label_smoothing)


def pair_logprobs(model, batch: dict, length_normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed (or, for IPO, length-averaged) response log-probs of the chosen and rejected rows: (B,), (B,)."""
    response_mask = batch["response_mask"]  # (2B, T)
    first_response_col = int(response_mask.float().argmax(-1).min())
    logps = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], response_mask,
                              keep_last=response_mask.shape[1] - first_response_col)  # (2B,)
    if length_normalize:
        logps = logps / response_mask.sum(-1).clamp(min=1)
    return logps.chunk(2)


@torch.no_grad()
def precompute_reference_logprobs(reference, pairs: list[dict], pad_id: int, batch_size: int, device,
                                  length_normalize: bool, progress: str = "") -> None:
    """Store the reference's log-probs in every pair, so the reference can leave memory;
    ``progress``: a description to show a progress bar under, empty for none."""
    for start in phase_bar(range(0, len(pairs), batch_size), progress, f"{len(pairs)} pairs"):
        chunk = pairs[start:start + batch_size]
        batch = to_device(collate_pairs(chunk, pad_id), device)
        chosen, rejected = pair_logprobs(reference, batch, length_normalize)
        for pair, c, r in zip(chunk, chosen.tolist(), rejected.tolist()):
            pair["ref_chosen_logp"], pair["ref_rejected_logp"] = c, r


@torch.no_grad()
def evaluate(loss_on, model, pairs: list[dict], batch_size: int, accelerator, progress: str = ""
             ) -> dict[str, float]:
    """Held-out loss, implicit-reward accuracy and margin, averaged over pairs (every process
    scores its share; a short last batch weighs what its pairs weigh). ``progress``: a description
    to show a progress bar under (main process), empty for none."""
    model.eval()
    mine = pairs[accelerator.process_index::accelerator.num_processes]
    entries = []
    for start in phase_bar(range(0, len(mine), batch_size), progress, f"{len(pairs)} pairs",
                           bool(progress) and accelerator.is_main_process):
        chunk = mine[start:start + batch_size]
        loss, stats = loss_on(chunk)
        entries.append({"eval/loss": loss.item(), "eval/accuracy": float(stats["rewards/accuracy"]),
                        "eval/margin": float(stats["rewards/margin"]), EXAMPLES: float(len(chunk))})
    model.train()
    return mean_over_examples(entries, accelerator, keys=["eval/loss", "eval/accuracy", "eval/margin"])


def run(config: DPOConfig) -> dict:
    check_output_dir(config)  # before anything loads; the folder is written once all has loaded
    accelerator = make_accelerator(config)
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.model_name_or_path, trust_remote_code=config.trust_remote_code)
    model = load_causal_lm(config.model_name_or_path, tokenizer, trust_remote_code=config.trust_remote_code)
    if config.use_peft:
        model = add_lora(model, config)
        reference = AdapterFreeReference(model)  # the starting policy, without a second copy
    else:
        reference = load_causal_lm(config.ref_model_path or config.model_name_or_path, tokenizer,
                                   trust_remote_code=config.trust_remote_code).to(accelerator.device).eval()
        reference.requires_grad_(False)
    disable_dropout(model)
    pad_id, length_normalize = tokenizer.pad_token_id, config.loss_type == "ipo"

    # 1. Data: comparisons -> token ids; optionally the reference's log-probs once, up front.
    data_config = with_model_limits(config, model)  # max_length 0: the model's position limit
    max_length = data_config.max_length
    train_pairs, eval_pairs, data_info = load_train_eval_pairs(data_config, tokenizer)
    if config.precompute_ref_log_probs:
        for subset in (train_pairs, eval_pairs):
            precompute_reference_logprobs(reference, subset, pad_id, config.per_device_train_batch_size,
                                          accelerator.device, length_normalize,
                                          progress="" if config.disable_tqdm or not accelerator.is_main_process
                                          else "reference log-probs")
        reference = None
    lengths = [len(x["prompt_ids"]) + max(len(x["chosen_ids"]), len(x["rejected_ids"])) for x in train_pairs]
    run_ = SupervisedRun.start(config, accelerator, model, lengths, "dpo", postfix_keys=("loss/dpo", "rewards/accuracy"))
    model = run_.model

    def loss_on(examples: list[dict]):
        batch = to_device(collate_pairs(examples, pad_id), accelerator.device)
        policy_logps = pair_logprobs(model, batch, length_normalize)
        if reference is None:
            ref_logps = tuple(torch.tensor([x[k] for x in examples], device=accelerator.device)
                              for k in ("ref_chosen_logp", "ref_rejected_logp"))
        else:
            with torch.no_grad():
                ref_logps = pair_logprobs(reference, batch, length_normalize)
        loss, stats = preference_loss(config, policy_logps, ref_logps)
        return loss, {"rewards/chosen": stats["chosen_rewards"], "rewards/rejected": stats["rejected_rewards"],
                      "rewards/accuracy": stats["accuracy"], "rewards/margin": stats["margin"],
                      "logps/chosen": policy_logps[0].detach().mean(), "logps/rejected": policy_logps[1].detach().mean()}

    # 2. Train.
    step = run_.train(lambda indices: loss_on([train_pairs[i] for i in indices]), "dpo").step

    # 3. Held-out implicit-reward accuracy; save the policy.
    summary = {"stage": "dpo", "steps": step, "train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
               "max_length": max_length, **data_info}
    if eval_pairs:
        with gathered(accelerator):  # FSDP2: processes may hold different numbers of eval batches
            eval_metrics = evaluate(loss_on, model, eval_pairs, config.per_device_train_batch_size, accelerator,
                                    progress="" if config.disable_tqdm else "dpo eval")
        run_.logger.log(step, eval_metrics)
        summary.update(eval_metrics)
    if config.use_peft:  # output_dir/adapter, then the merged model as output_dir/model
        model = save_adapter_and_merge(model, tokenizer, config.output_dir, accelerator)
    return finish_run(model, tokenizer, summary, config, accelerator, run_.logger, "dpo",
                      training_info={"prompt_format": data_info["prompt_format"]})
